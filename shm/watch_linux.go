//go:build linux

package shm

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Watcher states.
const (
	watchRunning int32 = iota
	watchFired         // onGone has been (or is being) called
	watchStopped       // Close won: onGone will never be called
)

// deadlineRetry is how long the watch loop waits before polling again when a
// read deadline it did not set expires (someone else set one on the conn).
const deadlineRetry = 10 * time.Millisecond

// Watcher reports a peer's death once through a callback. Create one with
// WatchConn or WatchPid and stop it with Close.
type Watcher struct {
	state    atomic.Int32
	stop     chan struct{} // closed by Close when it stops a running watcher
	loopDone chan struct{} // closed when the goroutine no longer touches the fd
	exited   chan struct{} // closed when the goroutine has returned

	setDeadline func(time.Time) error
	release     func() error // closes a descriptor the watcher owns, or nil

	closeOnce sync.Once
	closeErr  error

	polls atomic.Int64 // callback invocations (tests check there is no spin)
}

// WatchConn calls onGone once, from the watcher's own goroutine, when the peer
// of c hangs up (POLLHUP, POLLRDHUP — which includes a shutdown of the peer's
// write side — or POLLERR) or reading c fails (including c being closed
// locally before the Watcher is closed).
//
// It never consumes data: unread data stays in the socket. It waits in Go's
// netpoller and wakes only on readiness events, so pending data does not make
// it spin. Detection takes well under a millisecond after the peer process
// dies.
//
// While the Watcher runs it owns the read side of c: it holds c's read lock
// (a concurrent c.Read blocks until Close) and Close uses c's read deadline to
// stop it, leaving the deadline at zero (none) afterwards. Writes on c are
// unaffected.
func WatchConn(c *net.UnixConn, onGone func()) (*Watcher, error) {
	if c == nil {
		return nil, errors.New("shm: watch conn: nil connection")
	}
	if onGone == nil {
		return nil, errors.New("shm: watch conn: nil onGone")
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("shm: watch conn: %w", err)
	}
	w := newWatcher(c.SetReadDeadline, nil)
	go w.run(rc, unix.POLLRDHUP, unix.POLLHUP|unix.POLLRDHUP|unix.POLLERR|unix.POLLNVAL, onGone)
	return w, nil
}

// WatchPid calls onGone once, from the watcher's own goroutine, when process
// pid exits. It uses a pidfd (pidfd_open with PIDFD_NONBLOCK, Linux 5.10+)
// polled through Go's netpoller; it does not reap the process, so its parent
// still calls Wait. If the process has already exited (but is not reaped),
// onGone is called at once. The pidfd is owned by the Watcher and closed by
// Close.
func WatchPid(pid int, onGone func()) (*Watcher, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("shm: watch pid: invalid pid %d", pid)
	}
	if onGone == nil {
		return nil, errors.New("shm: watch pid: nil onGone")
	}
	pidfd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("shm: watch pid %d: %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	f := os.NewFile(uintptr(pidfd), fmt.Sprintf("pidfd:%d", pid))
	// A descriptor that did not make it into the netpoller has no deadlines;
	// the watcher could not be stopped.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: watch pid %d: pidfd is not pollable: %w", pid, err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("shm: watch pid %d: %w", pid, err)
	}
	w := newWatcher(f.SetReadDeadline, f.Close)
	go w.run(rc, unix.POLLIN, unix.POLLIN|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL, onGone)
	return w, nil
}

func newWatcher(setDeadline func(time.Time) error, release func() error) *Watcher {
	return &Watcher{
		stop:        make(chan struct{}),
		loopDone:    make(chan struct{}),
		exited:      make(chan struct{}),
		setDeadline: setDeadline,
		release:     release,
	}
}

func (w *Watcher) run(rc syscall.RawConn, events, gone int16, onGone func()) {
	defer close(w.exited)
	fire := w.loop(rc, events, gone)
	if fire && w.state.CompareAndSwap(watchRunning, watchFired) {
		// Close no longer waits for onGone, so onGone may call Close.
		close(w.loopDone)
		onGone()
		return
	}
	close(w.loopDone)
}

// loop waits until the peer is gone (true) or the watcher is stopped (false).
func (w *Watcher) loop(rc syscall.RawConn, events, gone int16) bool {
	for w.state.Load() == watchRunning {
		err := rc.Read(func(fd uintptr) bool {
			w.polls.Add(1)
			return pollOnce(int(fd), events, gone)
		})
		if err == nil {
			return true // hang-up seen
		}
		if w.state.Load() != watchRunning {
			return false // stopped by Close (deadline in the past)
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return true // the socket failed or was closed: report it
		}
		// A read deadline set by someone else expired: the netpoller will
		// not wait for us until it is reset. Keep watching by polling every
		// deadlineRetry, not in a tight loop.
		hup := false
		if err := rc.Control(func(fd uintptr) {
			w.polls.Add(1)
			hup = pollOnce(int(fd), events, gone)
		}); err != nil || hup {
			return true
		}
		t := time.NewTimer(deadlineRetry)
		select {
		case <-w.stop:
			t.Stop()
			return false
		case <-t.C:
		}
	}
	return false
}

// pollOnce polls fd without blocking and reports whether any of the gone
// events is set. It never reads from fd.
func pollOnce(fd int, events, gone int16) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
	for range 100 {
		n, err := unix.Poll(pfd, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return true // the descriptor itself is unusable
		}
		return n > 0 && pfd[0].Revents&gone != 0
	}
	return false
}

// Close stops the watcher. If onGone has not been called yet it never will
// be. Close releases the goroutine and the pidfd of a WatchPid watcher (never
// the connection of a WatchConn watcher), and waits for the goroutine to exit
// — except when onGone is already running: then Close waits only until the
// watcher has stopped using its descriptor and does not wait for onGone to
// return, so onGone may itself call Close.
//
// Close is idempotent and safe for concurrent use; every call returns the
// result of the first. For WatchConn, Close sets c's read deadline to the past
// to stop the watcher and then resets it to zero (no deadline).
func (w *Watcher) Close() error {
	if w == nil {
		return nil
	}
	w.closeOnce.Do(func() {
		if w.state.CompareAndSwap(watchRunning, watchStopped) {
			close(w.stop)
			// Errors are ignored: on a closed conn the goroutine has already
			// been woken by the close.
			_ = w.setDeadline(time.Unix(1, 0))
			<-w.exited
			_ = w.setDeadline(time.Time{})
		} else {
			<-w.loopDone
		}
		if w.release != nil {
			if err := w.release(); err != nil {
				w.closeErr = fmt.Errorf("shm: close watcher: %w", err)
			}
		}
	})
	return w.closeErr
}
