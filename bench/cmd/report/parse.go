package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"golang.org/x/perf/benchfmt"
)

// key identifies one benchmark of the suite.
type key struct {
	Impl, Form, Mode, Size string
}

// contender is impl/form, the unit of the tables and the charts' lines.
func (k key) contender() string { return k.Impl + "/" + k.Form }

// row is the results of one benchmark: per unit, the values of every round.
type row struct {
	key
	values map[string][]float64
}

// median of the rounds' values in unit, and whether there were any.
func (r *row) median(unit string) (float64, bool) {
	v := slices.Clone(r.values[unit])
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

// results are the parsed rows in first-seen order, and the run's cpu line.
type results struct {
	rows  []*row
	index map[key]*row
	cpu   string
	// command and date: the ringwire-report-* lines of a run made by
	// this command.
	command, date string
	// order lists the contenders, impls and sizes in first-seen order.
	contenders, impls, sizes []string
}

func (r *results) get(k key) *row { return r.index[k] }

// parse reads `go test -bench` output of BenchmarkEcho.
func parse(in io.Reader) (*results, error) {
	res := &results{index: map[key]*row{}}
	rd := benchfmt.NewReader(in, "input")
	for rd.Scan() {
		rec, ok := rd.Result().(*benchfmt.Result)
		if !ok {
			continue // syntax errors and unit metadata
		}
		if res.command == "" {
			res.command = rec.GetConfig("ringwire-report-command")
			res.date = rec.GetConfig("ringwire-report-date")
		}
		if res.cpu == "" {
			res.cpu = strings.Join(strings.Fields(rec.GetConfig("cpu")), " ")
		}
		k, ok := parseName(rec.Name)
		if !ok {
			continue
		}
		r := res.index[k]
		if r == nil {
			r = &row{key: k, values: map[string][]float64{}}
			res.index[k] = r
			res.rows = append(res.rows, r)
			for _, p := range []struct {
				list *[]string
				v    string
			}{{&res.contenders, k.contender()}, {&res.impls, k.Impl}, {&res.sizes, k.Size}} {
				if !slices.Contains(*p.list, p.v) {
					*p.list = append(*p.list, p.v)
				}
			}
		}
		for _, v := range rec.Values {
			r.values[v.Unit] = append(r.values[v.Unit], v.Value)
		}
	}
	if err := rd.Err(); err != nil {
		return nil, fmt.Errorf("reading the benchmark output: %w", err)
	}
	return res, nil
}

// parseName splits Echo/impl=X/form=Y/mode=M/size=S[-procs].
func parseName(n benchfmt.Name) (key, bool) {
	base, parts := n.Parts()
	if string(base) != "Echo" {
		return key{}, false
	}
	var k key
	for _, p := range parts {
		name, val, ok := strings.Cut(strings.TrimPrefix(string(p), "/"), "=")
		if !ok {
			continue // the -GOMAXPROCS suffix
		}
		switch name {
		case "impl":
			k.Impl = val
		case "form":
			k.Form = val
		case "mode":
			k.Mode = val
		case "size":
			k.Size = val
		}
	}
	return k, k.Impl != "" && k.Form != "" && k.Mode != "" && k.Size != ""
}
