// Package probe counts, with eBPF, what a set of processes — a benchmark
// and its children (host and plugin) — asks of the kernel while the
// benchmark runs, so that the benchmark can report where its time goes as
// per-op metrics beside ns/op:
//
//   - syscalls by kind: futex, read/write, sendmsg/recvmsg, epoll, poll,
//     sched_yield (Counts.Syscalls and the fields after it);
//   - context switches away from the set's threads, and among them the
//     involuntary ones (preemptions), so that a spinner that loses its CPU
//     shows up;
//   - wake-to-run latency: from a thread's wake-up to its running, as a
//     log2 histogram (Hist).
//
// A benchmark gets them with Bench, which attaches the probe once per
// process and reports through b.ReportMetric the metrics syscalls/op,
// futex/op, rw/op, sendrecv/op, epoll/op, poll/op, yield/op, ctxsw/op,
// preempt/op and, when some wake-up was timed, wake-p50-µs and wake-p99-µs:
//
//	stop := probe.Bench(b, plugin.Pid) // this process is always watched
//	for b.Loop() { ... }
//	stop()
//
// Start, Add, Remove, Snapshot and Report are the parts it is made of.
//
// # Probes
//
// Four raw tracepoints, whose programs are assembled at run time with
// cilium/ebpf's asm package: no clang, no generated code, no tracefs.
// Only the set's processes are counted, by TGID (every thread of a
// watched process counts), in a hash map the programs look up.
//
//   - raw_syscalls:sys_enter counts each syscall, and the counter of its
//     kind through an array map from syscall number to kind, filled from
//     golang.org/x/sys/unix's numbers for the architecture (amd64 and arm64
//     have every kind; other architectures count what they have).
//   - sched:sched_switch counts a switch away from a watched task, and a
//     preemption when the task stays runnable: the raw argument preempt is
//     set, or prev_state is TASK_RUNNING. That is the kernel's own rule for
//     nonvoluntary_ctxt_switches, under which a sched_yield that gives the
//     CPU away is involuntary too.
//   - sched:sched_wakeup and sched:sched_wakeup_new note when a thread of a
//     watched process was woken (bpf_ktime_get_ns), by TID, in an LRU hash.
//     When sched_switch switches to a thread with a noted time, it adds now
//     minus that time to the histogram and forgets the time. A thread
//     woken before it left its CPU never switches in; its time is
//     forgotten when it next switches out. Wakeups counts the wake-ups
//     timed, not all wake-ups.
//
// The raw arguments of sched_wakeup and sched_switch are task_struct
// pointers; the offsets of task_struct's pid and tgid, and where
// prev_state is among sched_switch's arguments (5.18 on), come from the
// kernel's BTF (/sys/kernel/btf/vmlinux), read once per process. Without
// BTF there are no wake-ups, and preemptions count only those in kernel
// mode; Probe.Missing says so. kprobes, fentry and uprobes are not used.
//
// Counters are per-CPU, summed by Snapshot; Counts.Sub gives what happened
// between two snapshots, and Hist.Quantile reads a quantile off the
// histogram as the geometric midpoint of its bucket.
//
// # Privileges
//
// Loading the programs needs root, or CAP_BPF and CAP_PERFMON. Without
// them Start fails with an error wrapping ErrUnavailable that says which,
// and Bench prints that error, once per process, to stderr and lets the
// benchmark run without these metrics. Off Linux, Start always fails so.
// On kernels that account BPF memory to the memory cgroup (5.11+)
// RLIMIT_MEMLOCK does not matter; on older ones Start raises it if it may.
package probe
