package shm

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// gone counts onGone calls and signals the first.
type gone struct {
	n  atomic.Int32
	at atomic.Int64 // UnixNano of the first call
	ch chan struct{}
}

func newGone() *gone { return &gone{ch: make(chan struct{})} }

func (g *gone) fn() {
	if g.n.Add(1) == 1 {
		g.at.Store(time.Now().UnixNano())
		close(g.ch)
	}
}

// wait waits at most d for the first call and returns when it happened.
func (g *gone) wait(t *testing.T, d time.Duration) time.Time {
	t.Helper()
	select {
	case <-g.ch:
		return time.Unix(0, g.at.Load())
	case <-time.After(d):
		t.Fatalf("onGone not called within %v", d)
		return time.Time{}
	}
}

func TestWatchConnPeerClose(t *testing.T) {
	base := runtime.NumGoroutine()
	a, b := socketpair(t)
	g := newGone()
	w, err := WatchConn(a, g.fn)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	if g.n.Load() != 0 {
		t.Fatal("onGone called while the peer is alive")
	}
	closed := time.Now()
	b.Close()
	at := g.wait(t, time.Second)
	t.Logf("detected %v after close", at.Sub(closed))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	time.Sleep(10 * time.Millisecond)
	if n := g.n.Load(); n != 1 {
		t.Fatalf("onGone called %d times", n)
	}
	a.Close()
	checkGoroutines(t, base)
}

func TestWatchConnPendingDataNoSpin(t *testing.T) {
	base := runtime.NumGoroutine()
	a, b := socketpair(t)
	g := newGone()
	w, err := WatchConn(a, g.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// Unread data makes the socket readable; the watcher must neither consume
	// it nor spin on it.
	for range 5 {
		if _, err := b.Write([]byte("pending")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	before := w.polls.Load()
	time.Sleep(100 * time.Millisecond)
	after := w.polls.Load()
	if after != before {
		t.Fatalf("watcher polled %d times in 100 ms of idle pending data: it spins", after-before)
	}
	if after > 20 {
		t.Fatalf("watcher polled %d times for 5 writes", after)
	}
	if g.n.Load() != 0 {
		t.Fatal("onGone called on data")
	}

	closed := time.Now()
	b.Close()
	at := g.wait(t, time.Second)
	if d := at.Sub(closed); d > 100*time.Millisecond {
		t.Fatalf("detected %v after close", d)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// All the data is still there: the watcher consumed nothing.
	a.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 100)
	total := 0
	for total < 35 {
		n, err := a.Read(buf[total:])
		if err != nil {
			t.Fatalf("after %d bytes: %v", total, err)
		}
		total += n
	}
	if string(buf[:total]) != "pendingpendingpendingpendingpending" {
		t.Fatalf("read back %q", buf[:total])
	}
	a.Close()
	checkGoroutines(t, base)
}

func TestWatchConnHalfClose(t *testing.T) {
	a, b := socketpair(t)
	g := newGone()
	w, err := WatchConn(a, g.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := b.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	g.wait(t, time.Second)
}

func TestWatchConnSIGKILL(t *testing.T) {
	base := runtime.NumGoroutine()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a := fileConn(t, fds[0])
	defer a.Close()
	childEnd := os.NewFile(uintptr(fds[1]), "child end")
	c := startChild(t, "conn", nil, childEnd)
	childEnd.Close() // the child holds the only other reference now

	// Wait for the child's hello so that it is really running.
	a.SetReadDeadline(time.Now().Add(10 * time.Second))
	hello := make([]byte, 1)
	if _, err := a.Read(hello); err != nil || hello[0] != 'r' {
		t.Fatalf("child hello: %q, %v", hello, err)
	}
	a.SetReadDeadline(time.Time{})

	g := newGone()
	w, err := WatchConn(a, g.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	time.Sleep(20 * time.Millisecond)
	if g.n.Load() != 0 {
		t.Fatal("onGone called while the child is alive")
	}

	killed := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	at := g.wait(t, 2*time.Second)
	d := at.Sub(killed)
	t.Logf("peer death detected %v after SIGKILL", d)
	if d > 100*time.Millisecond {
		t.Fatalf("detected %v after SIGKILL, want < 100ms", d)
	}
	err = c.wait(t, 5*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child wait: %v, want killed", err)
	}
	w.Close()
	a.Close()
	checkGoroutines(t, base)
}

func TestWatchConnCloseWithoutHangup(t *testing.T) {
	base := runtime.NumGoroutine()
	a, b := socketpair(t)
	g := newGone()
	w, err := WatchConn(a, g.fn)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("Close took %v", d)
	}
	checkGoroutines(t, base)

	// The connection is usable again and its read deadline is cleared.
	if _, err := b.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if n, err := a.Read(buf); err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("read after Close: %q, %v", buf[:n], err)
	}
	// A hang-up after Close is not reported.
	b.Close()
	time.Sleep(20 * time.Millisecond)
	if n := g.n.Load(); n != 0 {
		t.Fatalf("onGone called %d times after Close", n)
	}
	a.Close()
	checkGoroutines(t, base)
}

func TestWatchConnCloseFromCallback(t *testing.T) {
	base := runtime.NumGoroutine()
	a, b := socketpair(t)
	var w *Watcher
	ready := make(chan struct{})
	closed := make(chan error, 1)
	w, err := WatchConn(a, func() {
		<-ready
		closed <- w.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	b.Close()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close from onGone deadlocked")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	a.Close()
	checkGoroutines(t, base)
}

func TestWatchConnLocalCloseReported(t *testing.T) {
	a, _ := socketpair(t)
	g := newGone()
	w, err := WatchConn(a, g.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	time.Sleep(10 * time.Millisecond)
	a.Close()
	g.wait(t, time.Second)
}

func TestWatchConnForeignDeadline(t *testing.T) {
	a, b := socketpair(t)
	g := newGone()
	w, err := WatchConn(a, g.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// A deadline set by someone else expires: no false report, no spin.
	a.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
	time.Sleep(100 * time.Millisecond)
	if g.n.Load() != 0 {
		t.Fatal("onGone called on an expired foreign deadline")
	}
	if p := w.polls.Load(); p > 30 { // about 10 at one poll per 10 ms
		t.Fatalf("%d polls in 100 ms", p)
	}
	b.Close()
	g.wait(t, time.Second)
}

func TestWatchPid(t *testing.T) {
	base := runtime.NumGoroutine()
	c := startChild(t, "sleep", nil)
	g := newGone()
	w, err := WatchPid(c.cmd.Process.Pid, g.fn)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if g.n.Load() != 0 {
		t.Fatal("onGone called while the child is alive")
	}
	killed := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	at := g.wait(t, 2*time.Second)
	t.Logf("exit detected %v after SIGKILL", at.Sub(killed))
	if d := at.Sub(killed); d > 100*time.Millisecond {
		t.Fatalf("detected %v after SIGKILL", d)
	}
	// The watcher did not reap the child: Wait still reports its death.
	err = c.wait(t, 5*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child wait: %v, want killed by SIGKILL", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	checkGoroutines(t, base)
}

func TestWatchPidCloseReleasesFd(t *testing.T) {
	socketpair(t) // make sure the netpoller's own descriptors exist already
	c := startChild(t, "sleep", nil)
	base := runtime.NumGoroutine()
	fdsBefore := countFds(t)
	g := newGone()
	w, err := WatchPid(c.cmd.Process.Pid, g.fn)
	if err != nil {
		t.Fatal(err)
	}
	if countFds(t) != fdsBefore+1 {
		t.Fatal("WatchPid did not open a pidfd")
	}
	time.Sleep(10 * time.Millisecond)
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("Close took %v", d)
	}
	if n := countFds(t); n != fdsBefore {
		t.Fatalf("%d fds after Close, want %d", n, fdsBefore)
	}
	checkGoroutines(t, base)
	c.cmd.Process.Kill()
	c.wait(t, 5*time.Second)
	time.Sleep(10 * time.Millisecond)
	if g.n.Load() != 0 {
		t.Fatal("onGone called after Close")
	}
}

func TestWatchPidAlreadyExited(t *testing.T) {
	// A zombie (exited, not yet reaped) is reported at once.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=exit", "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer cmd.Wait()
	// Wait until it is a zombie without reaping it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err == nil {
			break
		}
		if err != unix.EINTR || time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	g := newGone()
	w, err := WatchPid(pid, g.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	g.wait(t, time.Second)
}

func TestWatchBadArgs(t *testing.T) {
	a, _ := socketpair(t)
	if _, err := WatchConn(nil, func() {}); err == nil {
		t.Fatal("WatchConn(nil) accepted")
	}
	if _, err := WatchConn(a, nil); err == nil {
		t.Fatal("WatchConn with nil onGone accepted")
	}
	if _, err := WatchPid(0, func() {}); err == nil {
		t.Fatal("WatchPid(0) accepted")
	}
	if _, err := WatchPid(1<<22+12345, func() {}); err == nil {
		t.Fatal("WatchPid of a nonexistent pid accepted")
	}
}
