package ring

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

func lslCPU() (v uint32, ok bool)

// cpuOK says lslCPU agrees with the kernel's getcpu: checked once, because a
// kernel without the per-CPU GDT entry would give a constant.
var cpuOK = checkCPU()

func checkCPU() bool {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	agreed := 0
	for range 8 {
		var cpu, node uint32
		if _, _, e := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), uintptr(unsafe.Pointer(&node)), 0); e != 0 {
			return false
		}
		v, ok := lslCPU()
		if !ok {
			return false
		}
		if v&0xfff == cpu {
			agreed++
		}
	}
	// A migration between the two reads can make one pair differ.
	return agreed >= 6
}

// cpuNow returns 1 + the number of the CPU this thread runs on, or 0 if it
// cannot tell. It costs about 20 ns (one LSL instruction, no system call).
func cpuNow() uint32 {
	if !cpuOK {
		return 0
	}
	v, ok := lslCPU()
	if !ok {
		return 0
	}
	return v&0xfff + 1
}

// osYield gives this thread's CPU to another runnable thread, if any
// (sched_yield). It goes through the runtime's system call path, so a yield
// that lasts lets the scheduler hand our P to another thread meanwhile.
func osYield() { _, _, _ = unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }

// moveOff moves this thread to another CPU it may run on: it takes the CPU
// it runs on out of its affinity for a moment, which makes the kernel
// migrate it at once, then restores the affinity (a widened mask does not
// move a running thread back). It reports false, having changed nothing,
// where there is no other CPU to go to or the kernel refuses (a seccomp
// filter, say); the caller then yields instead.
func moveOff() bool {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) != nil || set.Count() < 2 {
		return false
	}
	cpu := cpuNow()
	if cpu == 0 || !set.IsSet(int(cpu-1)) {
		return false
	}
	narrow := set
	narrow.Clear(int(cpu - 1))
	if unix.SchedSetaffinity(0, &narrow) != nil {
		return false
	}
	// The set was accepted a moment ago. Only a concurrent change of the
	// process's cpuset can make it fail now; the thread then keeps the
	// narrower mask, which costs it one CPU, never correctness.
	for range 3 {
		if unix.SchedSetaffinity(0, &set) == nil {
			break
		}
	}
	return true
}
