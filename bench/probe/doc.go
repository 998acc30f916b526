// Package probe counts, with eBPF, what a set of processes asks of the
// kernel while a benchmark runs — syscalls entered, futex calls and context
// switches — so a benchmark can report where its time goes as per-op
// metrics. It needs root or CAP_BPF; without them Start fails with
// ErrUnavailable and the benchmark runs without these metrics:
//
//	p, err := probe.Start(os.Getpid(), childPid)
//	if err != nil {
//		b.Log(err) // one line: why there are no eBPF metrics
//	} else {
//		defer p.Close()
//	}
//	var before probe.Counts
//	if p != nil {
//		before = p.Snapshot()
//	}
//	for b.Loop() { ... }
//	if p != nil {
//		probe.Report(b, before, p.Snapshot())
//	}
//
// The probes are raw tracepoints (sys_enter, sched_switch) whose programs
// are assembled at run time, so building and testing need no clang.
package probe
