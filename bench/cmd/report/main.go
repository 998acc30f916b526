// Command report runs the comparison suite (or reads the output of an
// earlier run) and writes a results page with tables and charts: latency
// against payload for the contenders, and calls/s under the load shapes.
//
//	cd bench && go run ./cmd/report                    # a short run, then the page
//	cd bench && go run ./cmd/report -in bench.txt      # the page of an existing run
//
// The run interleaves its rounds (-rounds runs of every selected benchmark,
// one after the other) so that every contender sees the same mix of load,
// and keeps the raw output beside the page. Every figure on the page is the
// median of the rounds.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

func main() {
	var (
		in        = flag.String("in", "", "read this benchmark output instead of running the suite")
		out       = flag.String("out", "../docs/bench", "directory of the results page, the charts and the raw output")
		sel       = flag.String("bench", ".", "the benchmarks to run (a -test.bench pattern under BenchmarkEcho)")
		rounds    = flag.Int("rounds", 3, "interleaved rounds (each benchmark once per round)")
		benchtime = flag.String("benchtime", "200ms", "-test.benchtime of each benchmark")
		timeout   = flag.Duration("timeout", 60*time.Minute, "bound on the whole run")
	)
	flag.Parse()
	if err := run(*in, *out, *sel, *rounds, *benchtime, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(in, out, sel string, rounds int, benchtime string, timeout time.Duration) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var (
		raw  []byte
		meta runMeta
		err  error
	)
	if in != "" {
		if raw, err = os.ReadFile(in); err != nil {
			return err
		}
		st, _ := os.Stat(in)
		meta = runMeta{When: st.ModTime(), Command: "go test -bench (a file given to go run ./cmd/report -in)", Source: in}
		if abs, err := filepath.Abs(in); err == nil {
			if dir, _ := filepath.Abs(out); filepath.Dir(abs) == dir {
				meta.Source = filepath.Base(in) // beside the page: a relative link
			}
		}
	} else {
		meta = runMeta{When: time.Now()}
		if raw, meta.Command, err = runSuite(sel, rounds, benchtime, timeout); err != nil {
			return err
		}
		name := "results-" + meta.When.UTC().Format("2006-01-02") + ".txt"
		meta.Source = name
		if err := os.WriteFile(filepath.Join(out, name), raw, 0o644); err != nil {
			return err
		}
	}
	meta.Machine = machine()
	res, err := parse(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	// A run made by this command says how and when in its first lines.
	if res.command != "" {
		meta.Command = res.command
	}
	if t, err := time.Parse(time.RFC3339, res.date); err == nil {
		meta.When = t
	}
	if len(res.rows) == 0 {
		return errors.New("no BenchmarkEcho results in the input")
	}
	charts, err := drawCharts(res, out)
	if err != nil {
		return err
	}
	page := renderPage(res, meta, charts)
	path := filepath.Join(out, "results.md")
	if err := os.WriteFile(path, page, 0o644); err != nil {
		return err
	}
	fmt.Println("report: wrote", path, "and", strings.Join(charts, ", "))
	return nil
}

// runSuite builds the bench test binary and runs the selection rounds times,
// interleaved; it returns the concatenated output and the command line.
func runSuite(sel string, rounds int, benchtime string, timeout time.Duration) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tmp, err := os.MkdirTemp("", "ringwire-report")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "bench.test")
	build := exec.CommandContext(ctx, "go", "test", "-c", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return nil, "", fmt.Errorf("building the suite: %w", err)
	}
	pattern := "^BenchmarkEcho$/" + sel
	if sel == "." {
		pattern = "^BenchmarkEcho$"
	}
	args := []string{"-test.run", "^$", "-test.bench", pattern, "-test.benchmem", "-test.count", "1",
		"-test.benchtime", benchtime, "-test.timeout", timeout.String()}
	command := fmt.Sprintf("cd bench && go run ./cmd/report -bench '%s' -rounds %d -benchtime %s", sel, rounds, benchtime)
	var all bytes.Buffer
	// Configuration lines (benchfmt's "key: value") that -in reads back.
	fmt.Fprintf(&all, "ringwire-report-command: %s\nringwire-report-date: %s\n", command, time.Now().UTC().Format(time.RFC3339))
	for i := range rounds {
		fmt.Fprintf(os.Stderr, "report: round %d of %d\n", i+1, rounds)
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = "."
		cmd.Stdout = io.MultiWriter(&all, os.Stderr)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, "", fmt.Errorf("round %d: %w", i+1, err)
		}
	}
	return all.Bytes(), command, nil
}

// runMeta says where a page's figures come from.
type runMeta struct {
	When    time.Time
	Command string
	Source  string // the raw output file
	Machine string
}

// machine describes this machine: CPU model and count, kernel, Go.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = "Linux " + strings.TrimSpace(string(b)) + ", "
	}
	return fmt.Sprintf("%s, %d vCPUs, %s%s %s/%s", cpu, runtime.NumCPU(), kernel, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
