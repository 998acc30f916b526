package probe

import (
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
)

// shared is the process's Probe, for Bench and Shared.
var shared = &sharedProbe{
	start: func() (*Probe, error) { return Start(os.Getpid()) },
	warn:  os.Stderr,
}

// sharedProbe is a Probe started on first use, with a count of the
// benchmarks that watch each PID besides the process's own.
type sharedProbe struct {
	start func() (*Probe, error)
	warn  io.Writer // where the one line on what is missing goes

	once sync.Once
	p    *Probe
	err  error

	mu   sync.Mutex // guards refs
	refs map[int]int
}

// Shared returns the process's probe: started on first use, watching this
// process, and never closed (the kernel frees it when the process exits).
// The first call that fails, or starts a probe that misses some metrics,
// prints one line to stderr that says why; later calls return the same
// probe or error. Bench uses it; Add and Remove on it must not touch PIDs
// that Bench watches.
func Shared() (*Probe, error) { return shared.get() }

// Bench counts what this process and the processes pids do from now until
// stop is called, and stop reports it on b with Report. Call it right
// before b's loop and stop right after:
//
//	stop := probe.Bench(b, child.Process.Pid)
//	for b.Loop() { ... }
//	stop()
//
// Bench may be called in every benchmark and sub-benchmark, any number of
// times: the probe is attached once per process (Shared), and each pid is
// watched while some Bench call that named it has not been stopped, so
// that a child that exits stops being watched before its PID is reused.
// Without the probe (no root, no CAP_BPF, not Linux) Bench does nothing
// but print, once per process, the line that says why, and the benchmark
// runs without these metrics. stop may be called more than once.
func Bench(b *testing.B, pids ...int) (stop func()) {
	b.Helper()
	return shared.bench(b, pids)
}

func (s *sharedProbe) get() (*Probe, error) {
	s.once.Do(func() {
		s.p, s.err = s.start()
		switch {
		case s.err != nil:
			fmt.Fprintf(s.warn, "%v; benchmarks run without the eBPF metrics (syscalls/op, ctxsw/op, ...)\n", s.err)
		case s.p.Missing() != nil:
			fmt.Fprintf(s.warn, "probe: some eBPF metrics are missing: %v\n", s.p.Missing())
		}
	})
	return s.p, s.err
}

func (s *sharedProbe) bench(b *testing.B, pids []int) func() {
	b.Helper()
	p, err := s.get()
	if err != nil {
		return func() {}
	}
	watched := s.watch(b, p, pids)
	before := p.Snapshot()
	var once sync.Once
	return func() {
		once.Do(func() {
			after := p.Snapshot()
			s.unwatch(b, p, watched)
			Report(b, before, after)
		})
	}
}

// watch adds pids to the set, and returns those it counted.
func (s *sharedProbe) watch(b *testing.B, p *Probe, pids []int) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs == nil {
		s.refs = map[int]int{}
	}
	var counted []int
	self := os.Getpid()
	for _, pid := range pids {
		if pid == self {
			continue // always watched
		}
		if s.refs[pid] == 0 {
			if err := p.Add(pid); err != nil {
				b.Logf("probe: not counting pid %d: %v", pid, err)
				continue
			}
		}
		s.refs[pid]++
		counted = append(counted, pid)
	}
	return counted
}

// unwatch undoes watch.
func (s *sharedProbe) unwatch(b *testing.B, p *Probe, pids []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pid := range pids {
		if s.refs[pid]--; s.refs[pid] > 0 {
			continue
		}
		delete(s.refs, pid)
		if err := p.Remove(pid); err != nil {
			b.Logf("probe: %v", err)
		}
	}
}
