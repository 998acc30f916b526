package ring

import (
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// onOneCPU runs f on a thread pinned to the CPU it is on, and returns that
// CPU as cpuNow gives it (1 + its number).
func onOneCPU(t *testing.T, f func(cpu uint32)) {
	t.Helper()
	if cpuNow() == 0 {
		t.Skip("the CPU number cannot be read here (no per-CPU segment for the vDSO's getcpu): waiters never hand over")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	cpu := cpuNow()
	one.Set(int(cpu - 1))
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.SchedSetaffinity(0, &old) }()
	if got := cpuNow(); got != cpu {
		t.Fatalf("pinned to CPU %d, cpuNow says %d", cpu-1, got-1)
	}
	f(cpu)
}

// waitEmpty has c wait for a message that never comes, for d, spinning
// throughout (the spin window is longer than d), and returns its stats.
func waitEmpty(t *testing.T, c *Consumer, d time.Duration) Stats {
	t.Helper()
	before := c.Stats()
	c.SetDeadline(time.Now().Add(d))
	if _, err := c.Peek(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Peek on an empty ring: %v, want ErrTimeout", err)
	}
	s := c.Stats()
	s.Handoffs -= before.Handoffs
	s.Parks -= before.Parks
	return s
}

// A waiter hands its CPU over (with sched_yield where no other CPU is
// allowed, as here) when the peer's word names that CPU and does not move,
// and only then; it tells the peer its own CPU while it waits and takes it
// back when it stops.
func TestHandoffToPeerOnOurCPU(t *testing.T) {
	_, c, _ := pair(t, 4096, 0, &Options{Spin: time.Second, AdaptiveSpin: -1})
	var peer uint32
	c.w.peer = &peer
	onOneCPU(t, func(cpu uint32) {
		// The peer waits on our CPU and does not run: hand over, again
		// and again while the wait lasts.
		atomic.StoreUint32(&peer, cpu|7*cpuBeat)
		s := waitEmpty(t, c, 20*time.Millisecond)
		if s.Handoffs == 0 || s.Parks != 0 {
			t.Fatalf("peer stuck on our CPU: %d handoffs, %d parks in 20ms of spinning; want some and 0", s.Handoffs, s.Parks)
		}
		// Our own word: cleared of its CPU after the wait, beat advanced.
		if w := atomic.LoadUint32(c.g.dataCPU); w&cpuMask != 0 || w < cpuBeat {
			t.Fatalf("our CPU word after the wait is %#x: want no CPU and a beat", w)
		}
		// The peer on another CPU, or unknown: spin on, never hand over.
		for _, other := range []uint32{cpu%cpuMask + 1, 0} {
			atomic.StoreUint32(&peer, other|7*cpuBeat)
			if s := waitEmpty(t, c, 5*time.Millisecond); s.Handoffs != 0 {
				t.Fatalf("peer word %#x, we are on CPU %d: %d handoffs, want 0", other, cpu-1, s.Handoffs)
			}
		}
	})
}

// A yield that lasts (a third thread ran meanwhile) stops the handing over
// for yieldBackoff.
func TestHandoffBacksOffAfterLongYield(t *testing.T) {
	_, c, _ := pair(t, 4096, 0, &Options{Spin: time.Second, AdaptiveSpin: -1})
	var peer uint32
	c.w.peer = &peer
	onOneCPU(t, func(cpu uint32) {
		atomic.StoreUint32(&peer, cpu|7*cpuBeat)
		c.w.noYield = nanotime() + int64(time.Hour) // as after a long yield
		if s := waitEmpty(t, c, 5*time.Millisecond); s.Handoffs != 0 {
			t.Fatalf("backing off: %d handoffs, want 0", s.Handoffs)
		}
		c.w.noYield = 0
		if s := waitEmpty(t, c, 5*time.Millisecond); s.Handoffs == 0 {
			t.Fatal("back-off over: no handoff")
		}
	})
}

// moveOff takes the thread to another CPU and leaves its affinity as it
// was; with one CPU allowed it changes nothing and reports false (the
// waiter then yields).
func TestMoveOff(t *testing.T) {
	if cpuNow() == 0 {
		t.Skip("the CPU number cannot be read here (no per-CPU segment for the vDSO's getcpu): waiters never hand over")
	}
	onOneCPU(t, func(cpu uint32) {
		var before, after unix.CPUSet
		if err := unix.SchedGetaffinity(0, &before); err != nil {
			t.Fatal(err)
		}
		if moveOff() {
			t.Fatal("moveOff reported true with one CPU allowed")
		}
		if err := unix.SchedGetaffinity(0, &after); err != nil {
			t.Fatal(err)
		}
		if after != before || cpuNow() != cpu {
			t.Fatalf("moveOff with one CPU allowed changed the thread: CPU %d, %d CPUs allowed", cpuNow()-1, after.Count())
		}
	})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var before, after unix.CPUSet
	if err := unix.SchedGetaffinity(0, &before); err != nil {
		t.Fatal(err)
	}
	if before.Count() < 2 {
		t.Skipf("this test may run on %d CPU: there is no other to move to", before.Count())
	}
	cpu := cpuNow()
	if !moveOff() {
		t.Fatalf("moveOff failed with %d CPUs allowed", before.Count())
	}
	if got := cpuNow(); got == cpu {
		t.Fatalf("still on CPU %d after moveOff", cpu-1)
	}
	if err := unix.SchedGetaffinity(0, &after); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("affinity after moveOff: %d CPUs, before: %d", after.Count(), before.Count())
	}
}

// A waiter whose peer keeps waiting on whatever CPU the waiter is on moves
// at most once per moveEvery and yields in between.
func TestHandoffMovesAtMostEveryMoveEvery(t *testing.T) {
	if cpuNow() == 0 {
		t.Skip("the CPU number cannot be read here (no per-CPU segment for the vDSO's getcpu): waiters never hand over")
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	if set.Count() < 2 {
		t.Skipf("this test may run on %d CPU: there is no other to move to", set.Count())
	}
	_, c, _ := pair(t, 4096, 0, &Options{Spin: time.Second, AdaptiveSpin: -1})
	var peer uint32
	c.w.peer = &peer
	// The peer's word follows ours: it names the CPU we announce, with a
	// beat that never moves, so every look finds the peer stuck behind us.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			atomic.StoreUint32(&peer, atomic.LoadUint32(c.g.dataCPU)&cpuMask|7*cpuBeat)
			time.Sleep(20 * time.Microsecond)
		}
	}()
	const d = 40 * time.Millisecond
	before := c.w.c.moves.Load()
	s := waitEmpty(t, c, d)
	close(stop)
	<-done
	moves := c.w.c.moves.Load() - before
	if limit := uint64(d/moveEvery) + 1; moves == 0 || moves > limit {
		t.Fatalf("%d moves in %v of a peer stuck behind us: want 1 to %d", moves, d, limit)
	}
	if s.Handoffs <= moves {
		t.Fatalf("%d hand-offs, %d of them moves: want yields between the moves", s.Handoffs, moves)
	}
}
