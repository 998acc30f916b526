package shm

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestFutexWaitTimeout(t *testing.T) {
	var w uint32
	const timeout = 50 * time.Millisecond
	start := time.Now()
	err := FutexWait(&w, 0, timeout)
	d := time.Since(start)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("FutexWait: %v, want ErrTimeout", err)
	}
	if d < timeout-5*time.Millisecond || d > time.Second {
		t.Fatalf("timed out after %v, want about %v", d, timeout)
	}
}

func TestFutexWaitMismatch(t *testing.T) {
	w := uint32(1)
	start := time.Now()
	if err := FutexWait(&w, 0, 5*time.Second); err != nil {
		t.Fatalf("FutexWait on a changed value: %v, want nil", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("returned after %v, want at once", d)
	}
}

func TestFutexWaitNonPositiveTimeout(t *testing.T) {
	var w uint32
	for _, d := range []time.Duration{0, -time.Second} {
		if err := FutexWait(&w, 0, d); !errors.Is(err, ErrTimeout) {
			t.Fatalf("timeout %v, value equal: %v, want ErrTimeout", d, err)
		}
		if err := FutexWait(&w, 1, d); err != nil {
			t.Fatalf("timeout %v, value differs: %v, want nil", d, err)
		}
	}
}

func TestFutexWakeGoroutine(t *testing.T) {
	var w uint32
	type result struct {
		err error
		d   time.Duration
	}
	res := make(chan result, 1)
	go func() {
		start := time.Now()
		err := FutexWait(&w, 0, 5*time.Second)
		res <- result{err, time.Since(start)}
	}()
	// Wake until a sleeper is actually woken (it may not be asleep yet). The
	// word is left unchanged, so only the wake can release it.
	deadline := time.Now().Add(2 * time.Second)
	woken := 0
	for woken == 0 && time.Now().Before(deadline) {
		n, err := FutexWake(&w, 1)
		if err != nil {
			t.Fatal(err)
		}
		woken = n
		if n == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	if woken != 1 {
		t.Fatalf("FutexWake woke %d, want 1", woken)
	}
	select {
	case r := <-res:
		if r.err != nil || r.d >= 5*time.Second {
			t.Fatalf("waiter returned %v after %v", r.err, r.d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("waiter not released by FutexWake")
	}
	if n, err := FutexWake(&w, 10); n != 0 || err != nil {
		t.Fatalf("FutexWake without waiters: %d, %v", n, err)
	}
}

func TestFutexCrossProcess(t *testing.T) {
	size := os.Getpagesize()
	seg, err := Create(size)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	w0, w1 := word(seg.Bytes(), 0), word(seg.Bytes(), 4)

	// The child gets a duplicate as its fd 3; ours stays with the Segment.
	dup, err := unix.Dup(seg.Fd())
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(dup), "segment")
	c := startChild(t, "futex", []string{"RINGWIRE_SHM_SIZE=" + strconv.Itoa(size)}, f)
	f.Close()

	// Wait for the child to map the segment and announce itself in word 1.
	deadline := time.Now().Add(10 * time.Second)
	for atomic.LoadUint32(w1) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("child never became ready")
		}
		FutexWait(w1, 0, 100*time.Millisecond)
	}
	// Give it time to go to sleep on word 0, then store and wake.
	time.Sleep(50 * time.Millisecond)
	atomic.StoreUint32(w0, 42)
	if _, err := FutexWake(w0, 1); err != nil {
		t.Fatal(err)
	}
	// The child acknowledges by storing 2 in word 1. Its own wait timeout is
	// 5 s: an acknowledgement well before proves the wake crossed the process
	// boundary.
	start := time.Now()
	for atomic.LoadUint32(w1) != 2 {
		if time.Since(start) > 2*time.Second {
			t.Fatal("child did not acknowledge the wake within 2s")
		}
		FutexWait(w1, 1, 100*time.Millisecond)
	}
	t.Logf("child acknowledged %v after the wake", time.Since(start))
	if err := c.wait(t, 5*time.Second); err != nil {
		t.Fatalf("child failed: %v", err)
	}
}

// TestFutexWaitReleasesP shows that a goroutine blocked in FutexWait does not
// hold the only P: other goroutines keep running meanwhile.
func TestFutexWaitReleasesP(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var w uint32
	var waiting, returned atomic.Bool
	done := make(chan error, 1)
	go func() {
		waiting.Store(true)
		done <- FutexWait(&w, 0, 500*time.Millisecond)
		returned.Store(true)
	}()
	for !waiting.Load() {
		runtime.Gosched()
	}
	time.Sleep(10 * time.Millisecond) // let it enter the system call

	start := time.Now()
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
		close(pong)
	}()
	for i := range 1000 {
		ping <- i
		if v := <-pong; v != i+1 {
			t.Fatalf("got %d, want %d", v, i+1)
		}
	}
	close(ping)
	<-pong
	d := time.Since(start)
	stillBlocked := !returned.Load()

	if err := <-done; !errors.Is(err, ErrTimeout) {
		t.Fatalf("FutexWait: %v, want ErrTimeout", err)
	}
	if !stillBlocked {
		t.Fatalf("1000 handoffs finished only after FutexWait returned (%v): the P was not handed off", d)
	}
	if d > 250*time.Millisecond {
		t.Fatalf("1000 handoffs took %v while FutexWait slept", d)
	}
	t.Logf("1000 handoffs in %v during a futex wait", d)
}
