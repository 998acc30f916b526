package probe

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// maxWatched bounds the set of watched processes.
const maxWatched = 1024

// maxWaking bounds the woken threads of watched processes whose wake-up
// time is held until they run; the least recently woken give way.
const maxWaking = 4096

// From linux/futex.h, which golang.org/x/sys/unix does not carry.
const (
	futexWake    = 1
	futexCmdMask = ^(128 | 256) // ^(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
)

// The counters of one CPU are numSlots uint64s, the value of the per-CPU
// array at key 0. A syscall's kind (syscallKinds) is the slot of its
// counter, slotFutex to slotYield.
const (
	slotSyscalls = iota
	slotFutex
	slotReadWrite
	slotSendRecv
	slotEpoll
	slotPoll
	slotYield
	slotFutexWake
	slotCtxsw
	slotPreempt
	slotHist // HistBuckets slots
	numSlots = slotHist + HistBuckets
)

// cpuCounts is one CPU's slot of the counters map.
type cpuCounts [numSlots]uint64

// Probe counts syscalls, context switches and wake-up latencies of a set
// of processes (by TGID, so every thread of a watched process counts). Its
// methods may be called from any goroutine.
type Probe struct {
	watched  *ebpf.Map // TGID -> 1
	counters *ebpf.Map // per-CPU cpuCounts at key 0
	kinds    *ebpf.Map // syscall number -> slot of its kind, or 0
	waking   *ebpf.Map // TID of a woken watched thread -> when, in ns; nil if missing != nil
	progs    []*ebpf.Program
	links    []link.Link

	layout  kernelLayout
	missing error // what is not measured, and why

	mu     sync.Mutex // guards closed and last
	closed bool
	last   Counts // the counts at Close
}

// Start loads and attaches the probes and watches pids (more may be added
// with Add). Every error wraps ErrUnavailable.
func Start(pids ...int) (*Probe, error) {
	p, err := start()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	for _, pid := range pids {
		if err := p.Add(pid); err != nil {
			p.Close()
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	return p, nil
}

func start() (*Probe, error) {
	// A no-op on kernels that charge BPF memory to the cgroup (5.11+). It
	// fails without CAP_SYS_RESOURCE, and then creating the first map says
	// why more plainly.
	rlimit.RemoveMemlock()
	p := &Probe{}
	if err := p.load(); err != nil {
		p.release()
		return nil, err
	}
	return p, nil
}

// Missing returns nil if p measures everything Counts holds, or else an
// error that says what it does not measure and why: without the kernel's
// BTF there are no wake-ups, and without it or on kernels before 5.18
// Preemptions counts only switches in kernel preemption.
func (p *Probe) Missing() error { return p.missing }

// load creates the maps, loads the programs and attaches them; on error,
// release frees what it made.
func (p *Probe) load() (err error) {
	p.watched, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "rw_watched", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: maxWatched,
	})
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("create watched map (needs root, or CAP_BPF and CAP_PERFMON): %w", err)
		}
		return fmt.Errorf("create watched map: %w", err)
	}
	p.counters, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "rw_counters", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: numSlots * 8, MaxEntries: 1,
	})
	if err != nil {
		return fmt.Errorf("create counters map: %w", err)
	}
	var maxNr uint32
	for nr := range syscallKinds {
		maxNr = max(maxNr, nr)
	}
	p.kinds, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "rw_kinds", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: maxNr + 1,
	})
	if err != nil {
		return fmt.Errorf("create syscall kinds map: %w", err)
	}
	for nr, slot := range syscallKinds {
		if err := p.kinds.Put(nr, uint32(slot)); err != nil {
			return fmt.Errorf("fill syscall kinds map: %w", err)
		}
	}
	p.layout, p.missing = loadLayout()
	if p.missing == nil {
		p.waking, err = ebpf.NewMap(&ebpf.MapSpec{
			Name: "rw_waking", Type: ebpf.LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: maxWaking,
		})
		if err != nil {
			return fmt.Errorf("create waking map: %w", err)
		}
		if p.layout.prevStateArg < 0 {
			p.missing = errors.New("sched_switch has no prev_state (kernel before 5.18): preemptions in user mode are not counted")
		}
	} else {
		p.layout.prevStateArg = -1
		p.missing = fmt.Errorf("no wake-up latencies, and preemptions in user mode are not counted: %w", p.missing)
	}

	type attach struct {
		tracepoints []string
		insns       asm.Instructions
	}
	attachments := []attach{
		{[]string{"sys_enter"}, p.sysEnterProg()},
		{[]string{"sched_switch"}, p.schedSwitchProg()},
	}
	if p.waking != nil {
		attachments = append(attachments, attach{[]string{"sched_wakeup", "sched_wakeup_new"}, p.schedWakeupProg()})
	}
	for _, a := range attachments {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name:         "rw_" + a.tracepoints[0],
			Type:         ebpf.RawTracepoint,
			License:      "GPL", // bpf_probe_read_kernel is GPL-only
			Instructions: a.insns,
		})
		if err != nil {
			return fmt.Errorf("load %s program: %w", a.tracepoints[0], err)
		}
		p.progs = append(p.progs, prog)
		for _, tp := range a.tracepoints {
			l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: prog})
			if err != nil {
				return fmt.Errorf("attach raw tracepoint %s: %w", tp, err)
			}
			p.links = append(p.links, l)
		}
	}
	return nil
}

// Stack slots of the programs, below the frame pointer; none overlaps
// another.
const (
	fpTGID    = -4  // u32: a TGID, key of watched
	fpZero    = -8  // u32: 0, key of counters
	fpNr      = -12 // u32: a syscall number, key of kinds; or a TID, key of waking
	fpScratch = -24 // u32 or u64: what bpf_probe_read_kernel reads, or a time
)

// countersPtr returns instructions that exit unless there are counters for
// this CPU, and leave them in R7.
func (p *Probe) countersPtr() asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, fpZero, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, p.counters.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpZero),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.Mov.Reg(asm.R7, asm.R0),
	}
}

// lookupWatched returns instructions that jump to label unless the TGID in
// R0's upper half (as bpf_get_current_pid_tgid returns it) is watched.
func (p *Probe) lookupWatched(label string) asm.Instructions {
	return asm.Instructions{
		asm.RSh.Imm(asm.R0, 32),
		asm.StoreMem(asm.RFP, fpTGID, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, p.watched.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpTGID),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, label),
	}
}

// increment adds one to the counter in slot in R7. Atomic, because a
// program may be interrupted by another on the same CPU.
func increment(slot int16) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, 1),
		asm.AddAtomic.Mem(asm.R7, asm.R1, asm.DWord, slot*8),
	}
}

func exit() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	}
}

// probeRead returns instructions that read size bytes at R3 + off into the
// stack slot fpScratch, and exit if that fails.
func probeRead(off int32, size int32) asm.Instructions {
	return asm.Instructions{
		asm.Add.Imm(asm.R3, off),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, fpScratch),
		asm.Mov.Imm(asm.R2, size),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, "exit"),
	}
}

// sysEnterProg counts at raw_syscalls:sys_enter, whose raw arguments are
// (struct pt_regs *regs, long id).
func (p *Probe) sysEnterProg() asm.Instructions {
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	insns = append(insns, asm.FnGetCurrentPidTgid.Call())
	insns = append(insns, p.lookupWatched("exit")...)
	insns = append(insns, p.countersPtr()...)
	insns = append(insns, increment(slotSyscalls)...)
	insns = append(insns,
		// The counter of the call's kind, if it has one.
		asm.LoadMem(asm.R8, asm.R6, 8, asm.DWord),                 // id
		asm.JGE.Imm(asm.R8, int32(p.kinds.MaxEntries()), "futex"), // unsigned: a negative id is large
		asm.StoreMem(asm.RFP, fpNr, asm.R8, asm.Word),
		asm.LoadMapPtr(asm.R1, p.kinds.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpNr),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "futex"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.JEq.Imm(asm.R1, 0, "futex"),
		asm.JGT.Imm(asm.R1, slotYield, "futex"),
		asm.LSh.Imm(asm.R1, 3),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Reg(asm.R2, asm.R1),
		asm.Mov.Imm(asm.R3, 1),
		asm.AddAtomic.Mem(asm.R2, asm.R3, asm.DWord, 0),

		asm.JNE.Imm(asm.R8, int32(unix.SYS_FUTEX), "exit").WithSymbol("futex"),
	)
	if off, ok := regsArg1Offset(); ok {
		insns = append(insns, asm.LoadMem(asm.R3, asm.R6, 0, asm.DWord)) // regs
		// futex's second argument, op, from the saved user registers.
		insns = append(insns, probeRead(off, 8)...)
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, fpScratch, asm.DWord),
			asm.And.Imm32(asm.R1, futexCmdMask), // op is an int
			asm.JNE.Imm32(asm.R1, futexWake, "exit"),
		)
		insns = append(insns, increment(slotFutexWake)...)
	}
	return append(insns, exit()...)
}

// schedSwitchProg counts at sched_switch, whose raw arguments are (bool
// preempt, struct task_struct *prev, struct task_struct *next, unsigned
// int prev_state), the last since 5.18. The current task is prev.
//
// If prev is watched, it counts a context switch, and a preemption if prev
// is still runnable: preempt, or prev_state is TASK_RUNNING (0) — the
// kernel's own rule for nivcsw, under which a sched_yield that switches is
// involuntary too. Then it forgets prev's wake-up time, if any: that was a
// wake-up of a thread that had not yet left its CPU.
//
// If next has a wake-up time, it adds now minus that time to the histogram
// and forgets the time.
func (p *Probe) schedSwitchProg() asm.Instructions {
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	insns = append(insns, p.countersPtr()...)
	insns = append(insns,
		asm.FnGetCurrentPidTgid.Call(),
		asm.Mov.Reg(asm.R8, asm.R0),
	)
	insns = append(insns, p.lookupWatched("next")...)
	insns = append(insns, increment(slotCtxsw)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R6, 0, asm.DWord), // preempt
		asm.JNE.Imm(asm.R1, 0, "preempted"),
	)
	if arg := p.layout.prevStateArg; arg >= 0 {
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.R6, int16(8*arg), asm.DWord), // prev_state
			asm.JNE.Imm32(asm.R1, 0, "forget"),
		)
	} else {
		insns = append(insns, asm.Ja.Label("forget"))
	}
	preempted := increment(slotPreempt)
	preempted[0] = preempted[0].WithSymbol("preempted")
	insns = append(insns, preempted...)
	if p.waking == nil {
		insns = append(insns, asm.Ja.Label("exit").WithSymbol("forget"))
		insns = append(insns, asm.Ja.Label("exit").WithSymbol("next"))
		return append(insns, exit()...)
	}
	insns = append(insns,
		asm.StoreMem(asm.RFP, fpNr, asm.R8, asm.Word).WithSymbol("forget"), // prev's TID
		asm.LoadMapPtr(asm.R1, p.waking.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpNr),
		asm.FnMapDeleteElem.Call(),

		asm.LoadMem(asm.R3, asm.R6, 16, asm.DWord).WithSymbol("next"), // next
	)
	insns = append(insns, probeRead(p.layout.pidOff, 4)...)
	insns = append(insns,
		asm.LoadMapPtr(asm.R1, p.waking.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpScratch),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.LoadMem(asm.R8, asm.R0, 0, asm.DWord), // woken at
		asm.LoadMapPtr(asm.R1, p.waking.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpScratch),
		asm.FnMapDeleteElem.Call(),
		asm.FnKtimeGetNs.Call(),

		// R1 = now - woken at, or 0 if the clock went back.
		asm.Mov.Imm(asm.R1, 0),
		asm.JLT.Reg(asm.R0, asm.R8, "log2"),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.Sub.Reg(asm.R1, asm.R8),

		// R2 = the bucket of R1: ⌊log2 R1⌋ (0 for 0), at most HistBuckets-1.
		asm.Mov.Imm(asm.R2, HistBuckets-1).WithSymbol("log2"),
		asm.Mov.Reg(asm.R3, asm.R1),
		asm.RSh.Imm(asm.R3, 32),
		asm.JNE.Imm(asm.R3, 0, "bucket"),
		asm.Mov.Imm(asm.R2, 0),
	)
	shifts := []int32{16, 8, 4, 2, 1}
	step := func(i int) string {
		if i == len(shifts) {
			return "bucket"
		}
		return fmt.Sprintf("log2_%d", shifts[i])
	}
	for i, shift := range shifts {
		insns = append(insns,
			asm.JLT.Imm(asm.R1, 1<<shift, step(i+1)).WithSymbol(step(i)),
			asm.RSh.Imm(asm.R1, shift),
			asm.Add.Imm(asm.R2, shift),
		)
	}
	insns = append(insns,
		asm.And.Imm(asm.R2, HistBuckets-1).WithSymbol("bucket"),
		asm.LSh.Imm(asm.R2, 3),
		asm.Mov.Reg(asm.R3, asm.R7),
		asm.Add.Reg(asm.R3, asm.R2),
		asm.Mov.Imm(asm.R1, 1),
		asm.AddAtomic.Mem(asm.R3, asm.R1, asm.DWord, slotHist*8),
	)
	return append(insns, exit()...)
}

// schedWakeupProg runs at sched_wakeup and sched_wakeup_new, whose raw
// argument is (struct task_struct *p): if p belongs to a watched process,
// it notes when p was woken, by p's TID.
func (p *Probe) schedWakeupProg() asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R3, asm.R6, 0, asm.DWord), // p
	}
	insns = append(insns, probeRead(p.layout.tgidOff, 4)...)
	insns = append(insns,
		asm.LoadMapPtr(asm.R1, p.watched.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpScratch),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.LoadMem(asm.R3, asm.R6, 0, asm.DWord), // p
	)
	insns = append(insns, probeRead(p.layout.pidOff, 4)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, fpScratch, asm.Word),
		asm.StoreMem(asm.RFP, fpNr, asm.R1, asm.Word),
		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(asm.RFP, fpScratch, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, p.waking.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, fpNr),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, fpScratch),
		asm.Mov.Imm(asm.R4, 0), // BPF_ANY
		asm.FnMapUpdateElem.Call(),
	)
	return append(insns, exit()...)
}

// regsArg1Offset is the offset in struct pt_regs of a syscall's second
// argument, where this package knows it.
func regsArg1Offset() (int32, bool) {
	switch runtime.GOARCH {
	case "amd64":
		return 13 * 8, true // si: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si
	case "arm64":
		return 1 * 8, true // regs[1]
	}
	return 0, false
}

// Add watches the process pid (its TGID) from now on.
func (p *Probe) Add(pid int) error {
	if err := checkPID(pid); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("probe: add pid %d: %w", pid, os.ErrClosed)
	}
	if err := p.watched.Put(uint32(pid), uint32(1)); err != nil {
		return fmt.Errorf("probe: add pid %d: %w", pid, err)
	}
	return nil
}

// Remove stops watching the process pid; it is not an error if pid was
// not watched. Remove a child that has exited before its PID can be reused.
func (p *Probe) Remove(pid int) error {
	if err := checkPID(pid); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("probe: remove pid %d: %w", pid, os.ErrClosed)
	}
	if err := p.watched.Delete(uint32(pid)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("probe: remove pid %d: %w", pid, err)
	}
	return nil
}

func checkPID(pid int) error {
	if pid <= 0 || pid > 1<<22 {
		return fmt.Errorf("probe: bad pid %d", pid)
	}
	return nil
}

// Snapshot returns the counts since Start, summed over the CPUs; after
// Close, the counts at Close.
func (p *Probe) Snapshot() Counts {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return p.last
	}
	var per []cpuCounts
	if err := p.counters.Lookup(uint32(0), &per); err != nil {
		// Key 0 of an array always exists; this is a bug, not a state.
		panic(fmt.Sprintf("probe: read counters: %v", err))
	}
	var sum cpuCounts
	for _, v := range per {
		for i := range sum {
			sum[i] += v[i]
		}
	}
	c := Counts{
		Syscalls:    sum[slotSyscalls],
		Futex:       sum[slotFutex],
		FutexWake:   sum[slotFutexWake],
		ReadWrite:   sum[slotReadWrite],
		SendRecv:    sum[slotSendRecv],
		Epoll:       sum[slotEpoll],
		Poll:        sum[slotPoll],
		SchedYield:  sum[slotYield],
		CtxSwitches: sum[slotCtxsw],
		Preemptions: sum[slotPreempt],
	}
	copy(c.WakeHist[:], sum[slotHist:])
	c.Wakeups = c.WakeHist.Total()
	return c
}

// Close detaches the probes and frees their maps. It may be called more
// than once.
func (p *Probe) Close() error {
	last := p.Snapshot()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed, p.last = true, last
	return p.release()
}

func (p *Probe) release() error {
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	for _, prog := range p.progs {
		errs = append(errs, prog.Close())
	}
	for _, m := range []*ebpf.Map{p.watched, p.counters, p.kinds, p.waking} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}
