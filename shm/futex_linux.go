//go:build linux

package shm

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Futex operations. Deliberately without FUTEX_PRIVATE_FLAG (128): private
// futexes are keyed by the address space and never cross processes.
const (
	futexWait = 0 // FUTEX_WAIT
	futexWake = 1 // FUTEX_WAKE
)

// FutexWait blocks while *addr == val, for at most timeout. addr must be a
// 4-byte aligned word, normally inside a Segment's mapping (it also works on
// ordinary memory, within one process).
//
// It returns nil when woken or when *addr != val on entry (EAGAIN); an
// interrupted sleep (EINTR) resumes for the rest of the timeout. Spurious
// wake-ups are still possible, so callers re-check their condition. It
// returns ErrTimeout when the timeout expires, and other failures (EFAULT,
// EINVAL) wrapped with context.
//
// A timeout <= 0 does not sleep: FutexWait returns nil if *addr != val and
// ErrTimeout otherwise (a poll).
//
// The wait is a blocking system call made with unix.Syscall6 (not
// RawSyscall), so the Go scheduler hands the P to another thread while this
// goroutine sleeps; it still ties up one OS thread for the duration.
func FutexWait(addr *uint32, val uint32, timeout time.Duration) error {
	if addr == nil {
		return fmt.Errorf("shm: futex wait: %w", unix.EFAULT)
	}
	if timeout <= 0 {
		if atomic.LoadUint32(addr) != val {
			return nil
		}
		return ErrTimeout
	}
	deadline := time.Now().Add(timeout)
	for {
		ts := unix.NsecToTimespec(int64(timeout))
		_, _, errno := unix.Syscall6(unix.SYS_FUTEX,
			uintptr(unsafe.Pointer(addr)), futexWait, uintptr(val),
			uintptr(unsafe.Pointer(&ts)), 0, 0)
		switch errno {
		case 0, unix.EAGAIN:
			return nil
		case unix.ETIMEDOUT:
			return ErrTimeout
		case unix.EINTR:
			// A signal (most often the Go runtime's preemption SIGURG)
			// interrupted the sleep. Go back to sleep for what is left
			// of the timeout, unless the word changed meanwhile.
			if atomic.LoadUint32(addr) != val {
				return nil
			}
			if timeout = time.Until(deadline); timeout <= 0 {
				return ErrTimeout
			}
			continue
		}
		return fmt.Errorf("shm: futex wait: %w", errno)
	}
}

// FutexWake wakes up to n waiters blocked in FutexWait on addr, in this or
// any other process mapping the same memory, and returns how many it woke.
// n <= 0 wakes nobody; n above MaxInt32 means all.
func FutexWake(addr *uint32, n int) (int, error) {
	if addr == nil {
		return 0, fmt.Errorf("shm: futex wake: %w", unix.EFAULT)
	}
	if n <= 0 {
		return 0, nil
	}
	n = min(n, math.MaxInt32)
	r, _, errno := unix.Syscall6(unix.SYS_FUTEX,
		uintptr(unsafe.Pointer(addr)), futexWake, uintptr(n), 0, 0, 0)
	if errno != 0 {
		return 0, fmt.Errorf("shm: futex wake: %w", errno)
	}
	return int(r), nil
}
