package main

import (
	"bytes"
	"fmt"
	"math"
	"strings"
)

// Units as benchfmt tidies them, and the harness's own metrics.
const (
	uTime     = "sec/op"
	uRate     = "B/s"
	uAllocs   = "allocs/op"
	uBytes    = "B/op"
	uCalls    = "calls/s"
	uP50      = "p50-µs"
	uP99      = "p99-µs"
	uSyscalls = "syscalls/op"
	uFutex    = "futex/op"
	uCtxsw    = "ctxsw/op"
)

// renderPage writes the results page in Markdown.
func renderPage(res *results, meta runMeta, charts []string) []byte {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# ringwire comparison: results of one run\n\n")
	p("- **When:** %s\n", meta.When.UTC().Format("2006-01-02 15:04 MST"))
	machine := meta.Machine
	if res.cpu != "" {
		machine = res.cpu + " (as the run reported it); report made on: " + machine
	}
	p("- **Machine:** %s\n", machine)
	p("- **Command:** `%s`\n", meta.Command)
	p("- **Raw output:** [%s](%s)\n", meta.Source, meta.Source)
	p("- Every figure is the median of the run's rounds. Time per call is the full round trip host → plugin process → host;\n")
	p("  request and reply are both the payload size. p50/p99 are sampled (one call in 8 is timed).\n\n")
	p("Written by `bench/cmd/report`; see [docs/benchmarks.md](../benchmarks.md) for the analysis.\n\n")

	for _, c := range charts {
		p("![%s](%s)\n\n", strings.TrimSuffix(c, ".svg"), c)
	}

	if t := targetsTable(res); t != "" {
		p("## Targets (sequential 10 B over shared memory)\n\n%s\n", t)
	}
	if t := beatenList(res); t != "" {
		p("## Where another contender beats ringwire\n\n%s\n", t)
	}

	p("## One caller (mode=seq)\n\n")
	for _, size := range res.sizes {
		rows := res.select_("seq", size)
		if len(rows) == 0 {
			continue
		}
		p("### %s\n\n", size)
		p("| contender | time/call | MB/s | allocs/op | B/op | p50 | p99 | syscalls/op | futex/op | ctxsw/op |\n")
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, r := range rows {
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.contender(),
				cell(r, uTime, fmtSec), cell(r, uRate, fmtMBs), cell(r, uAllocs, fmtNum), cell(r, uBytes, fmtNum),
				cell(r, uP50, fmtMicros), cell(r, uP99, fmtMicros),
				cell(r, uSyscalls, fmtNum), cell(r, uFutex, fmtNum), cell(r, uCtxsw, fmtNum))
		}
		p("\n")
	}

	p("## Load shapes\n\n")
	p("callers8: 8 goroutines on one connection; plugins4: 4 plugin processes, one caller each (calls/s in all).\n")
	p("busy1/busy2: one caller while another process keeps 1 or 2 CPUs busy (time per call, p99).\n\n")
	for _, size := range res.sizes {
		var any bool
		for _, m := range []string{"callers8", "plugins4", "busy1", "busy2"} {
			any = any || len(res.select_(m, size)) > 0
		}
		if !any {
			continue
		}
		p("### %s\n\n", size)
		p("| contender | callers8 calls/s | plugins4 calls/s | busy1 time/call | busy1 p99 | busy2 time/call | busy2 p99 | callers8 ctxsw/op | busy1 ctxsw/op |\n")
		p("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, c := range res.contenders {
			impl, form, _ := strings.Cut(c, "/")
			get := func(mode string) *row { return res.get(key{impl, form, mode, size}) }
			c8, p4, b1, b2 := get("callers8"), get("plugins4"), get("busy1"), get("busy2")
			if c8 == nil && p4 == nil && b1 == nil && b2 == nil {
				continue
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c,
				cell(c8, uCalls, fmtCalls), cell(p4, uCalls, fmtCalls),
				cell(b1, uTime, fmtSec), cell(b1, uP99, fmtMicros),
				cell(b2, uTime, fmtSec), cell(b2, uP99, fmtMicros),
				cell(c8, uCtxsw, fmtNum), cell(b1, uCtxsw, fmtNum))
		}
		p("\n")
	}
	return b.Bytes()
}

// select_ returns the rows of mode and size in contender order.
func (r *results) select_(mode, size string) []*row {
	var out []*row
	for _, c := range r.contenders {
		impl, form, _ := strings.Cut(c, "/")
		if x := r.get(key{impl, form, mode, size}); x != nil {
			out = append(out, x)
		}
	}
	return out
}

// cell formats the median of unit in r, or "—".
func cell(r *row, unit string, f func(float64) string) string {
	if r == nil {
		return "—"
	}
	v, ok := r.median(unit)
	if !ok {
		return "—"
	}
	return f(v)
}

func fmtSec(s float64) string {
	switch {
	case s >= 1e-3:
		return fmt.Sprintf("%.2f ms", s*1e3)
	case s >= 1e-4:
		return fmt.Sprintf("%.0f µs", s*1e6)
	case s >= 1e-5:
		return fmt.Sprintf("%.1f µs", s*1e6)
	case s >= 1e-6:
		return fmt.Sprintf("%.2f µs", s*1e6)
	}
	return fmt.Sprintf("%.0f ns", s*1e9)
}

func fmtMicros(us float64) string { return fmtSec(us / 1e6) }

func fmtMBs(bps float64) string { return fmt.Sprintf("%.4g", bps/1e6) }

func fmtCalls(c float64) string {
	if c >= 1e6 {
		return fmt.Sprintf("%.2f M", c/1e6)
	}
	return fmt.Sprintf("%.1f k", c/1e3)
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// targetsTable compares sequential 10 B over shared memory with the
// baselines, against the suite's targets.
func targetsTable(res *results) string {
	type target struct {
		rw, other key
		want      float64
	}
	var ts []target
	for _, form := range []string{"call", "into", "view"} {
		base := "into"
		if form == "call" {
			base = "call"
		}
		rw := key{"ringwire-shm", form, "seq", "10B"}
		ts = append(ts,
			target{rw, key{"rawunix", base, "seq", "10B"}, 20},
			target{rw, key{"shmipc-default", "", "seq", "10B"}, 50},
			target{rw, key{"shmipc-tuned", "", "seq", "10B"}, 50},
			target{rw, key{"goplugin-grpc", "call", "seq", "10B"}, 150})
	}
	var b strings.Builder
	for _, t := range ts {
		rw := res.get(t.rw)
		other := res.findForm(t.other)
		if rw == nil || other == nil {
			continue
		}
		a, ok1 := rw.median(uTime)
		o, ok2 := other.median(uTime)
		if !ok1 || !ok2 || a == 0 {
			continue
		}
		if b.Len() == 0 {
			b.WriteString("| ringwire | against | ringwire | other | ratio | target | |\n|---|---|---:|---:|---:|---:|---|\n")
		}
		verdict := "met"
		if o/a < t.want {
			verdict = "**missed**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.1f× | ≥ %.0f× | %s |\n", rw.contender(), other.contender(),
			fmtSec(a), fmtSec(o), o/a, t.want, verdict)
	}
	return b.String()
}

// findForm returns the row of k, or, when k.Form is empty, the impl's first
// form with results.
func (r *results) findForm(k key) *row {
	if k.Form != "" {
		return r.get(k)
	}
	for _, form := range []string{"into", "call", "view"} {
		k.Form = form
		if x := r.get(k); x != nil {
			return x
		}
	}
	return nil
}

// beatenList lists every benchmark where a contender of another impl does
// better than ringwire's best transport in a matching form: lower time per
// call (seq, busy) or more calls/s (callers8, plugins4). An allocating
// contender (form call) is compared with ringwire's call form; a
// zero-allocation one with ringwire's into form and with its view form.
func beatenList(res *results) string {
	var b strings.Builder
	for _, r := range res.rows {
		if strings.HasPrefix(r.Impl, "ringwire") {
			continue
		}
		forms := []string{"into", "view"}
		if r.Form == "call" {
			forms = []string{"call"}
		}
		v, ok := score(r)
		if !ok {
			continue
		}
		for _, form := range forms {
			// The best ringwire row of this form, mode and size.
			var best *row
			var bestV float64
			for _, x := range res.rows {
				if !strings.HasPrefix(x.Impl, "ringwire") || x.Mode != r.Mode || x.Size != r.Size || x.Form != form {
					continue
				}
				if xv, ok := score(x); ok && (best == nil || xv > bestV) {
					best, bestV = x, xv
				}
			}
			if best == nil || v <= bestV {
				continue
			}
			fmt.Fprintf(&b, "- mode=%s size=%s: **%s** (%s) beats ringwire's best `%s`, %s (%s): %.2f×\n",
				r.Mode, r.Size, r.contender(), describe(r), form, best.contender(), describe(best), v/bestV)
		}
	}
	return b.String()
}

// score is higher for better: calls/s for the parallel modes, 1/time else.
func score(r *row) (float64, bool) {
	if r.Mode == "callers8" || r.Mode == "plugins4" {
		return r.median(uCalls)
	}
	t, ok := r.median(uTime)
	if !ok || t == 0 {
		return 0, false
	}
	return 1 / t, true
}

func describe(r *row) string {
	if r.Mode == "callers8" || r.Mode == "plugins4" {
		return cell(r, uCalls, fmtCalls) + " calls/s"
	}
	return cell(r, uTime, fmtSec)
}
