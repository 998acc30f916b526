package bench

import (
	"testing"

	"github.com/ringwire/ringwire/bench/probe"
)

// probeRun is one benchmark's window of the eBPF probes' counts, for this
// process and the contender's children (probe.Bench: one probe per process,
// or one line on stderr saying why there is none).
type probeRun struct{ stop func() }

// beginProbe starts counting for this process and pids.
func beginProbe(b *testing.B, pids []int) *probeRun {
	return &probeRun{stop: probe.Bench(b, pids...)}
}

// end reports the counts per op since beginProbe.
func (r *probeRun) end(*testing.B) { r.stop() }
