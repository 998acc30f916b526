package main

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Two rounds of a small run, as the suite prints them.
const sample = `ringwire-report-command: cd bench && go run ./cmd/report -rounds 2
ringwire-report-date: 2026-12-02T10:00:00Z
goos: linux
goarch: amd64
pkg: github.com/ringwire/ringwire/bench
cpu: Test CPU
BenchmarkEcho/impl=ringwire-shm/form=into/mode=seq/size=10B-2         	 1000000	      1000 ns/op	  10.00 MB/s	 0.01 ctxsw/op	  1.0 p50-µs	  3.0 p99-µs	       0 B/op	       0 allocs/op
BenchmarkEcho/impl=ringwire-shm/form=into/mode=seq/size=1KiB-2        	 1000000	      2000 ns/op	 512.0 MB/s	       0 B/op	       0 allocs/op
BenchmarkEcho/impl=rawunix/form=into/mode=seq/size=10B-2              	   20000	     50000 ns/op	   0.20 MB/s	       0 B/op	       0 allocs/op
BenchmarkEcho/impl=rawunix/form=into/mode=seq/size=1KiB-2             	   20000	     40000 ns/op	  25.60 MB/s	       0 B/op	       0 allocs/op
BenchmarkEcho/impl=rawunix/form=into/mode=callers8/size=10B-2         	   20000	     10000 ns/op	 100000 calls/s	       0 B/op	       0 allocs/op
BenchmarkEcho/impl=ringwire-shm/form=into/mode=callers8/size=10B-2    	   20000	     20000 ns/op	  50000 calls/s	       0 B/op	       0 allocs/op
BenchmarkEcho/impl=ringwire-shm/form=into/mode=seq/size=10B-2         	 1000000	      3000 ns/op	  10.00 MB/s	       0 B/op	       0 allocs/op
BenchmarkEcho/impl=ringwire-shm/form=into/mode=seq/size=10B-2         	 1000000	      2000 ns/op	  10.00 MB/s	       0 B/op	       0 allocs/op
BenchmarkOther-2 	 1	 1 ns/op
PASS
`

func TestParse(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if res.command != "cd bench && go run ./cmd/report -rounds 2" || res.date != "2026-12-02T10:00:00Z" {
		t.Errorf("command %q date %q", res.command, res.date)
	}
	if res.cpu != "Test CPU" {
		t.Errorf("cpu %q", res.cpu)
	}
	if got := strings.Join(res.contenders, ","); got != "ringwire-shm/into,rawunix/into" {
		t.Errorf("contenders %s", got)
	}
	if got := strings.Join(res.sizes, ","); got != "10B,1KiB" {
		t.Errorf("sizes %s", got)
	}
	r := res.get(key{"ringwire-shm", "into", "seq", "10B"})
	if r == nil {
		t.Fatal("no ringwire-shm seq 10B row")
	}
	if v, ok := r.median(uTime); !ok || math.Abs(v-2000e-9) > 1e-15 { // median of 1000, 3000, 2000 ns
		t.Errorf("median time %v %v, want 2µs", v, ok)
	}
	if v, ok := r.median(uP99); !ok || v != 3 {
		t.Errorf("p99 %v %v", v, ok)
	}
	if _, ok := r.median("nosuch/op"); ok {
		t.Error("a unit never reported has a median")
	}
	if len(res.rows) != 6 {
		t.Errorf("%d rows, want 6 (BenchmarkOther is not the suite's)", len(res.rows))
	}
}

func TestPageAndCharts(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	charts, err := drawCharts(res, dir)
	if err != nil {
		t.Fatal(err)
	}
	// No contender of the peers chart besides ringwire-shm/into and
	// rawunix/into; both latency charts and the 10B load chart have lines.
	want := []string{"latency-peers.svg", "latency-transports.svg", "load-10B.svg"}
	if strings.Join(charts, ",") != strings.Join(want, ",") {
		t.Errorf("charts %v, want %v", charts, want)
	}
	for _, c := range charts {
		b, err := os.ReadFile(filepath.Join(dir, c))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte("<svg")) || !bytes.Contains(b, []byte("ringwire-shm/into")) {
			t.Errorf("%s is not an SVG naming its lines", c)
		}
	}
	page := string(renderPage(res, runMeta{When: time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC), Command: "cmd", Source: "raw.txt", Machine: "m"}, charts))
	for _, s := range []string{
		"2026-12-02", "Test CPU", "`cmd`", "(raw.txt)", "![latency-peers](latency-peers.svg)",
		"| ringwire-shm/into | rawunix/into | 2.00 µs | 50.0 µs | 25.0× | ≥ 20× | met |",
		// rawunix's callers8 outruns ringwire's: the page says so.
		"mode=callers8 size=10B: **rawunix/into** (100.0 k calls/s) beats ringwire's best `into`, ringwire-shm/into (50.0 k calls/s): 2.00×",
		"| ringwire-shm/into | 2.00 µs | 10 | 0 | 0 | 1.00 µs | 3.00 µs |",
	} {
		if !strings.Contains(page, s) {
			t.Errorf("page lacks %q:\n%s", s, page)
		}
	}
	if strings.Contains(page, "mode=seq size=10B: **rawunix") {
		t.Error("the page says rawunix beats ringwire where it does not")
	}
}

func TestSizeBytes(t *testing.T) {
	for s, want := range map[string]float64{"10B": 10, "1KiB": 1024, "64KiB": 65536, "1MiB": 1 << 20} {
		if got, ok := sizeBytes(s); !ok || got != want {
			t.Errorf("sizeBytes(%q) = %v %v", s, got, ok)
		}
	}
	if _, ok := sizeBytes("big"); ok {
		t.Error("sizeBytes(big) parsed")
	}
}
