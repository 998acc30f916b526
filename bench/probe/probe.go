package probe

import (
	"errors"
	"testing"
)

// ErrUnavailable is wrapped by every error from Start: the kernel, the
// privileges or the attach points needed for the probes are missing. The
// rest of the error says which.
var ErrUnavailable = errors.New("probe: eBPF counters unavailable")

// Counts are the running totals for the watched processes since Start.
type Counts struct {
	Syscalls    uint64 // syscalls entered (raw_syscalls:sys_enter)
	Futex       uint64 // of which futex(2)
	FutexWake   uint64 // of which FUTEX_WAKE, private or not (amd64 and arm64 only)
	CtxSwitches uint64 // sched_switch away from a watched task
}

// Sub returns c - before, field by field.
func (c Counts) Sub(before Counts) Counts {
	return Counts{
		Syscalls:    c.Syscalls - before.Syscalls,
		Futex:       c.Futex - before.Futex,
		FutexWake:   c.FutexWake - before.FutexWake,
		CtxSwitches: c.CtxSwitches - before.CtxSwitches,
	}
}

// Report reports after - before per b.N operations as the metrics
// syscalls/op, futex/op and ctxsw/op.
func Report(b *testing.B, before, after Counts) {
	if b.N <= 0 {
		return
	}
	d, n := after.Sub(before), float64(b.N)
	b.ReportMetric(float64(d.Syscalls)/n, "syscalls/op")
	b.ReportMetric(float64(d.Futex)/n, "futex/op")
	b.ReportMetric(float64(d.CtxSwitches)/n, "ctxsw/op")
}
