package probe

import (
	"errors"
	"math"
	"testing"
	"time"
)

// ErrUnavailable is wrapped by every error from Start: the kernel, the
// privileges or the attach points needed for the probes are missing. The
// rest of the error says which.
var ErrUnavailable = errors.New("probe: eBPF counters unavailable")

// Counts are the running totals for the watched processes since Start.
// Syscalls counts every system call; Futex, ReadWrite, SendRecv, Epoll,
// Poll and SchedYield count the calls of a kind among them (see the fields).
type Counts struct {
	Syscalls    uint64 // syscalls entered (raw_syscalls:sys_enter)
	Futex       uint64 // of which futex(2)
	FutexWake   uint64 // of which FUTEX_WAKE, private or not (amd64 and arm64 only)
	ReadWrite   uint64 // of which read, write, readv, writev, pread64, pwrite64, preadv(2), pwritev(2)
	SendRecv    uint64 // of which sendmsg, recvmsg, sendto, recvfrom, sendmmsg, recvmmsg
	Epoll       uint64 // of which epoll_wait, epoll_pwait, epoll_pwait2, epoll_ctl
	Poll        uint64 // of which poll, ppoll, select, pselect6
	SchedYield  uint64 // of which sched_yield
	CtxSwitches uint64 // sched_switch away from a watched task
	Preemptions uint64 // of which the task was still runnable: preempted, or yielding
	Wakeups     uint64 // wake-ups of watched threads timed until they ran: WakeHist.Total()
	WakeHist    Hist   // wake-to-run latency of those wake-ups
}

// Sub returns c - before, field by field.
func (c Counts) Sub(before Counts) Counts {
	return Counts{
		Syscalls:    c.Syscalls - before.Syscalls,
		Futex:       c.Futex - before.Futex,
		FutexWake:   c.FutexWake - before.FutexWake,
		ReadWrite:   c.ReadWrite - before.ReadWrite,
		SendRecv:    c.SendRecv - before.SendRecv,
		Epoll:       c.Epoll - before.Epoll,
		Poll:        c.Poll - before.Poll,
		SchedYield:  c.SchedYield - before.SchedYield,
		CtxSwitches: c.CtxSwitches - before.CtxSwitches,
		Preemptions: c.Preemptions - before.Preemptions,
		Wakeups:     c.Wakeups - before.Wakeups,
		WakeHist:    c.WakeHist.Sub(before.WakeHist),
	}
}

// HistBuckets is the number of buckets of a Hist.
const HistBuckets = 32

// Hist is a log2 histogram of durations: bucket 0 counts those under 2ns,
// bucket i (0 < i < HistBuckets-1) those in [2^i, 2^(i+1)) ns, and the last
// bucket all from 2^31 ns (about 2.1 s) up.
type Hist [HistBuckets]uint64

// Total returns the number of durations counted.
func (h Hist) Total() uint64 {
	var n uint64
	for _, v := range h {
		n += v
	}
	return n
}

// Sub returns h - before, bucket by bucket.
func (h Hist) Sub(before Hist) Hist {
	for i := range h {
		h[i] -= before[i]
	}
	return h
}

// Quantile returns the q-quantile (0 ≤ q ≤ 1) of the durations counted,
// or 0 if there are none: the geometric midpoint 2^i·√2 ns of the bucket i
// that holds the ⌈q·Total⌉-th smallest duration. The true quantile lies
// within a factor of √2 of it, except in the first bucket (under 2ns) and
// the last (2^31 ns and up, taken as [2^31, 2^32) ns).
func (h Hist) Quantile(q float64) time.Duration {
	total := h.Total()
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(math.Max(0, math.Min(1, q)) * float64(total)))
	rank = max(rank, 1)
	var seen uint64
	for i, v := range h {
		seen += v
		if seen >= rank {
			return time.Duration(math.Round(math.Ldexp(math.Sqrt2, i)))
		}
	}
	panic("unreachable: rank ≤ total")
}

// Report reports after - before per b.N operations as the metrics
// syscalls/op, futex/op, rw/op, sendrecv/op, epoll/op, poll/op, yield/op,
// ctxsw/op and preempt/op, always, and when some wake-up was timed, the
// median and 99th percentile of the wake-to-run latency in microseconds
// as wake-p50-µs and wake-p99-µs.
func Report(b *testing.B, before, after Counts) {
	if b.N <= 0 {
		return
	}
	d, n := after.Sub(before), float64(b.N)
	for _, m := range []struct {
		v    uint64
		unit string
	}{
		{d.Syscalls, "syscalls/op"},
		{d.Futex, "futex/op"},
		{d.ReadWrite, "rw/op"},
		{d.SendRecv, "sendrecv/op"},
		{d.Epoll, "epoll/op"},
		{d.Poll, "poll/op"},
		{d.SchedYield, "yield/op"},
		{d.CtxSwitches, "ctxsw/op"},
		{d.Preemptions, "preempt/op"},
	} {
		b.ReportMetric(float64(m.v)/n, m.unit)
	}
	if d.WakeHist.Total() > 0 {
		b.ReportMetric(micros(d.WakeHist.Quantile(0.50)), "wake-p50-µs")
		b.ReportMetric(micros(d.WakeHist.Quantile(0.99)), "wake-p99-µs")
	}
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
