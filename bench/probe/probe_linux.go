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

// From linux/futex.h, which golang.org/x/sys/unix does not carry.
const (
	futexWake    = 1
	futexCmdMask = ^(128 | 256) // ^(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
)

// Offsets of the counters in the per-CPU value; they mirror cpuCounts.
const (
	offSyscalls  = 0
	offFutex     = 8
	offFutexWake = 16
	offCtxsw     = 24
)

// cpuCounts is one CPU's slot of the counters map.
type cpuCounts struct {
	Syscalls, Futex, FutexWake, Ctxsw uint64
}

// Probe counts syscalls, futex calls and context switches of a set of
// processes (by TGID, so every thread of a watched process counts). Its
// methods may be called from any goroutine.
type Probe struct {
	watched  *ebpf.Map // TGID -> 1
	counters *ebpf.Map // per-CPU cpuCounts at key 0
	progs    []*ebpf.Program
	links    []link.Link

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
		Name: "rw_counters", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 32, MaxEntries: 1,
	})
	if err != nil {
		return fmt.Errorf("create counters map: %w", err)
	}
	for _, a := range []struct {
		tracepoint string
		insns      asm.Instructions
	}{
		{"sys_enter", p.sysEnterProg()},
		{"sched_switch", p.schedSwitchProg()},
	} {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name:         "rw_" + a.tracepoint,
			Type:         ebpf.RawTracepoint,
			License:      "GPL", // bpf_probe_read_kernel is GPL-only
			Instructions: a.insns,
		})
		if err != nil {
			return fmt.Errorf("load %s program: %w", a.tracepoint, err)
		}
		p.progs = append(p.progs, prog)
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: a.tracepoint, Program: prog})
		if err != nil {
			return fmt.Errorf("attach raw tracepoint %s: %w", a.tracepoint, err)
		}
		p.links = append(p.links, l)
	}
	return nil
}

// watchedCounters returns the prelude of both programs: it exits unless
// the current task's TGID is watched, and leaves the context in R6 and
// this CPU's counters in R7.
func (p *Probe) watchedCounters() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnGetCurrentPidTgid.Call(),
		asm.RSh.Imm(asm.R0, 32),
		asm.StoreMem(asm.RFP, -4, asm.R0, asm.Word),
		asm.LoadMapPtr(asm.R1, p.watched.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.StoreImm(asm.RFP, -8, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, p.counters.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.Mov.Reg(asm.R7, asm.R0),
	}
}

// increment adds one to the counter at off in R7. Atomic, because a
// program may be interrupted by another on the same CPU.
func increment(off int16) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R1, 1),
		asm.AddAtomic.Mem(asm.R7, asm.R1, asm.DWord, off),
	}
}

func exit() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	}
}

// sysEnterProg counts at raw_syscalls:sys_enter, whose raw arguments are
// (struct pt_regs *regs, long id).
func (p *Probe) sysEnterProg() asm.Instructions {
	insns := p.watchedCounters()
	insns = append(insns, increment(offSyscalls)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.R6, 8, asm.DWord), // id
		asm.JNE.Imm(asm.R2, int32(unix.SYS_FUTEX), "exit"),
	)
	insns = append(insns, increment(offFutex)...)
	if off, ok := regsArg1Offset(); ok {
		insns = append(insns,
			// futex's second argument, op, from the saved user registers.
			asm.LoadMem(asm.R3, asm.R6, 0, asm.DWord), // regs
			asm.Add.Imm(asm.R3, off),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, -16),
			asm.Mov.Imm(asm.R2, 8),
			asm.FnProbeReadKernel.Call(),
			asm.JNE.Imm(asm.R0, 0, "exit"),
			asm.LoadMem(asm.R1, asm.RFP, -16, asm.DWord),
			asm.And.Imm32(asm.R1, futexCmdMask), // op is an int
			asm.JNE.Imm32(asm.R1, futexWake, "exit"),
		)
		insns = append(insns, increment(offFutexWake)...)
	}
	return append(insns, exit()...)
}

// schedSwitchProg counts at sched_switch, where the current task is the
// one switched away from.
func (p *Probe) schedSwitchProg() asm.Instructions {
	insns := p.watchedCounters()
	insns = append(insns, increment(offCtxsw)...)
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
	if pid <= 0 || pid > 1<<22 {
		return fmt.Errorf("probe: bad pid %d", pid)
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
	var c Counts
	for _, v := range per {
		c.Syscalls += v.Syscalls
		c.Futex += v.Futex
		c.FutexWake += v.FutexWake
		c.CtxSwitches += v.Ctxsw
	}
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
	for _, m := range []*ebpf.Map{p.watched, p.counters} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}
