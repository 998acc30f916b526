package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// The contenders drawn on each chart (those present in the run).
var (
	peersChart = []string{
		"ringwire-shm/view", "ringwire-shm/into", "ringwire-shm/call",
		"rawunix/into", "rawunix/call",
		"shmipc-tuned/into", "shmipc-tuned/call", "shmipc-default/into", "shmipc-default/call",
		"grpc-shm/call", "grpc-unix/call", "goplugin-grpc/call", "goplugin-netrpc/call",
	}
	transportsChart = []string{
		"ringwire-shm/into", "ringwire-unix/into", "ringwire-tcp/into", "ringwire-tcp-lz4/into",
		"ringwire-tcp-zstd/into", "ringwire-tcp-mtls/into", "rawunix/into", "rawtcp/into",
	}
	loadChart = []string{
		"ringwire-shm/into", "ringwire-shm/call", "ringwire-unix/into", "rawunix/into", "rawunix/call",
		"shmipc-tuned/into", "shmipc-tuned/call", "grpc-shm/call", "grpc-unix/call", "goplugin-grpc/call",
	}
	loadModes = []string{"callers8", "plugins4", "busy1", "busy2"}
)

// drawCharts writes the SVG charts into dir and returns their file names.
func drawCharts(res *results, dir string) ([]string, error) {
	var names []string
	add := func(name string, p *plot.Plot, err error) error {
		if err != nil || p == nil {
			return err
		}
		if err := p.Save(9*vg.Inch, 6*vg.Inch, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		names = append(names, name)
		return nil
	}
	p, err := latencyChart(res, "One caller: time per call against payload (log-log)", peersChart)
	if err := add("latency-peers.svg", p, err); err != nil {
		return nil, err
	}
	p, err = latencyChart(res, "ringwire's transports and the socket baselines, zero-allocation forms", transportsChart)
	if err := add("latency-transports.svg", p, err); err != nil {
		return nil, err
	}
	for _, size := range res.sizes {
		p, err := loadShapeChart(res, size)
		if err := add("load-"+size+".svg", p, err); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// sizeBytes parses the suite's size names (10B, 1KiB, 64KiB, 1MiB).
func sizeBytes(s string) (float64, bool) {
	mult := 1.0
	switch {
	case strings.HasSuffix(s, "MiB"):
		s, mult = strings.TrimSuffix(s, "MiB"), 1<<20
	case strings.HasSuffix(s, "KiB"):
		s, mult = strings.TrimSuffix(s, "KiB"), 1<<10
	default:
		s = strings.TrimSuffix(s, "B")
	}
	n, err := strconv.ParseFloat(s, 64)
	return n * mult, err == nil
}

// latencyChart: x payload bytes, y µs per call, both log scales; a line per
// contender of want that has mode=seq results.
func latencyChart(res *results, title string, want []string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "payload (bytes, each way)"
	p.Y.Label.Text = "µs per call (mean of a round, median of the rounds)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	return addLines(p, want, func(impl, form string) (xys plotter.XYs) {
		for _, size := range res.sizes {
			r := res.get(key{impl, form, "seq", size})
			x, ok := sizeBytes(size)
			if r == nil || !ok {
				continue
			}
			if t, ok := r.median(uTime); ok && t > 0 {
				xys = append(xys, plotter.XY{X: x, Y: t * 1e6})
			}
		}
		return xys
	})
}

// loadShapeChart: calls/s of each load shape at size (the busy modes: one
// caller, so 1/time per call), log scale, a line per contender.
func loadShapeChart(res *results, size string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Load shapes, " + size + " payload: calls/s in all (log scale)"
	p.Y.Label.Text = "calls/s (median of the rounds)"
	p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
	p.NominalX(loadModes...)
	p.Legend.Top, p.Legend.Left = true, false
	p.Add(plotter.NewGrid())
	return addLines(p, loadChart, func(impl, form string) (xys plotter.XYs) {
		for i, mode := range loadModes {
			r := res.get(key{impl, form, mode, size})
			if r == nil {
				continue
			}
			if v, ok := score(r); ok && v > 0 {
				xys = append(xys, plotter.XY{X: float64(i), Y: v})
			}
		}
		return xys
	})
}

// addLines adds a line to p for each contender of want that points gives
// points for, and returns p (nil when no contender has any).
func addLines(p *plot.Plot, want []string, points func(impl, form string) plotter.XYs) (*plot.Plot, error) {
	var lines []any
	for _, c := range want {
		impl, form, _ := strings.Cut(c, "/")
		if xys := points(impl, form); len(xys) > 0 {
			lines = append(lines, c, xys)
		}
	}
	if len(lines) == 0 {
		return nil, nil
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return nil, err
	}
	return p, nil
}
