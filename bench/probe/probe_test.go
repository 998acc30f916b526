package probe

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestCountsSub(t *testing.T) {
	after := Counts{Syscalls: 10, Futex: 7, FutexWake: 3, ReadWrite: 9, SendRecv: 8, Epoll: 7, Poll: 6,
		SchedYield: 5, CtxSwitches: 5, Preemptions: 4, Wakeups: 3, WakeHist: Hist{1: 2, 31: 1}}
	before := Counts{Syscalls: 4, Futex: 2, FutexWake: 1, ReadWrite: 1, SendRecv: 2, Epoll: 3, Poll: 4,
		SchedYield: 5, CtxSwitches: 5, Preemptions: 1, Wakeups: 1, WakeHist: Hist{1: 1}}
	want := Counts{Syscalls: 6, Futex: 5, FutexWake: 2, ReadWrite: 8, SendRecv: 6, Epoll: 4, Poll: 2,
		SchedYield: 0, CtxSwitches: 0, Preemptions: 3, Wakeups: 2, WakeHist: Hist{1: 1, 31: 1}}
	if got := after.Sub(before); got != want {
		t.Errorf("Sub = %+v, want %+v", got, want)
	}
}

func TestHistQuantile(t *testing.T) {
	mid := func(i int) time.Duration { return time.Duration(math.Round(math.Ldexp(math.Sqrt2, i))) }
	var h Hist
	if got := h.Quantile(0.5); got != 0 {
		t.Errorf("empty: Quantile(0.5) = %v, want 0", got)
	}
	h[3], h[10], h[20] = 50, 49, 1 // [8,16)ns, [1024,2048)ns, [1048576, 2097152)ns
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{
		{0, mid(3)}, {0.5, mid(3)}, {0.51, mid(10)}, {0.99, mid(10)}, {0.995, mid(20)}, {1, mid(20)}, {2, mid(20)},
	} {
		if got := h.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if h.Total() != 100 {
		t.Errorf("Total = %d, want 100", h.Total())
	}
	if got, want := mid(10), 1448*time.Nanosecond; got != want {
		t.Errorf("midpoint of [1024, 2048)ns = %v, want %v", got, want)
	}
}

// withBenchtime sets -test.benchtime for testing.Benchmark until t ends.
func withBenchtime(t *testing.T, v string) {
	t.Helper()
	f := flag.Lookup("test.benchtime")
	if f == nil {
		t.Skip("no -test.benchtime flag")
	}
	old := f.Value.String()
	if err := f.Value.Set(v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Value.Set(old) })
}

var perOpMetrics = []string{
	"syscalls/op", "futex/op", "rw/op", "sendrecv/op", "epoll/op", "poll/op", "yield/op", "ctxsw/op", "preempt/op",
}

func TestReport(t *testing.T) {
	withBenchtime(t, "4x")
	after := Counts{Syscalls: 40, Futex: 4, ReadWrite: 8, SendRecv: 12, Epoll: 16, Poll: 20, SchedYield: 24,
		CtxSwitches: 28, Preemptions: 32}
	want := map[string]float64{
		"syscalls/op": 10, "futex/op": 1, "rw/op": 2, "sendrecv/op": 3, "epoll/op": 4, "poll/op": 5, "yield/op": 6,
		"ctxsw/op": 7, "preempt/op": 8,
	}
	r := testing.Benchmark(func(b *testing.B) { Report(b, Counts{}, after) })
	for _, m := range perOpMetrics {
		if r.Extra[m] != want[m] {
			t.Errorf("%s = %v, want %v", m, r.Extra[m], want[m])
		}
	}
	for _, m := range []string{"wake-p50-µs", "wake-p99-µs"} {
		if _, ok := r.Extra[m]; ok {
			t.Errorf("%s reported without wake-ups", m)
		}
	}

	after.WakeHist[10], after.WakeHist[20] = 99, 1
	r = testing.Benchmark(func(b *testing.B) { Report(b, Counts{}, after) })
	if got := r.Extra["wake-p50-µs"]; got != 1.448 {
		t.Errorf("wake-p50-µs = %v, want 1.448", got)
	}
	if got := r.Extra["wake-p99-µs"]; got != 1.448 {
		t.Errorf("wake-p99-µs = %v, want 1.448", got)
	}
	for m := range r.Extra {
		if strings.ContainsAny(m, " \t") {
			t.Errorf("metric %q has a space", m)
		}
	}
}

func TestBenchUnavailableSaysWhyOnce(t *testing.T) {
	withBenchtime(t, "2x")
	var warn bytes.Buffer
	s := &sharedProbe{
		start: func() (*Probe, error) { return nil, fmt.Errorf("%w: no CAP_BPF (test)", ErrUnavailable) },
		warn:  &warn,
	}
	calls := 0
	testing.Benchmark(func(b *testing.B) {
		for _, name := range []string{"a", "b", "c"} {
			b.Run(name, func(b *testing.B) {
				stop := s.bench(b, []int{12345})
				calls++
				for range b.N {
				}
				stop()
				stop()
			})
		}
	})
	r := testing.Benchmark(func(b *testing.B) {
		stop := s.bench(b, nil)
		calls++
		for range b.N {
		}
		stop()
	})
	if calls < 4 {
		t.Fatalf("Bench called %d times, want ≥ 4", calls)
	}
	if len(r.Extra) != 0 {
		t.Errorf("metrics without a probe: %v", r.Extra)
	}
	lines := strings.Split(strings.TrimSuffix(warn.String(), "\n"), "\n")
	t.Logf("%d Bench calls printed %q", calls, warn.String())
	if len(lines) != 1 || !strings.Contains(lines[0], "no CAP_BPF (test)") {
		t.Errorf("printed %q, want one line with the reason", warn.String())
	}
}
