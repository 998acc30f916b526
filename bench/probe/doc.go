// Package probe counts, with eBPF, what a set of processes asks of the
// kernel while a benchmark runs — syscalls entered, futex calls and context
// switches — so a benchmark can report where its time goes as per-op
// metrics (see Report). It needs root or CAP_BPF; without them Start fails
// with ErrUnavailable and the benchmark runs without these metrics.
package probe
