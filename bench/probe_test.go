package bench

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/ringwire/ringwire/bench/probe"
)

// The eBPF probes, attached once per process and shared by every benchmark:
// each one adds its children's PIDs and reports the difference of two
// snapshots. Without the privileges the benchmarks run without these
// metrics, and one line on stderr says why.
var (
	probeOnce sync.Once
	theProbe  *probe.Probe
)

func sharedProbe() *probe.Probe {
	probeOnce.Do(func() {
		p, err := probe.Start(os.Getpid())
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: no eBPF metrics:", err)
			return
		}
		theProbe = p
	})
	return theProbe
}

// probeRun is one benchmark's window of the probe's counts.
type probeRun struct {
	p      *probe.Probe
	before probe.Counts
}

// beginProbe starts counting for this process and pids.
func beginProbe(b *testing.B, pids []int) *probeRun {
	p := sharedProbe()
	if p == nil {
		return &probeRun{}
	}
	for _, pid := range pids {
		if err := p.Add(pid); err != nil {
			b.Logf("probe: watching %d: %v", pid, err)
		}
	}
	return &probeRun{p: p, before: p.Snapshot()}
}

// end reports the counts per op since beginProbe.
func (r *probeRun) end(b *testing.B) {
	if r.p != nil {
		probe.Report(b, r.before, r.p.Snapshot())
	}
}
