//go:build !linux

package shm

import (
	"fmt"
	"net"
	"time"
)

func unsupported(op string) error { return fmt.Errorf("shm: %s: %w", op, ErrUnsupported) }

// Segment is a sealed memfd mapped shared. It cannot be created on this
// system: Create and Open return an error wrapping ErrUnsupported.
type Segment struct{}

// Create returns an error wrapping ErrUnsupported on this system.
func Create(size int) (*Segment, error) { return nil, unsupported("create") }

// Open closes nothing and returns an error wrapping ErrUnsupported on this
// system.
func Open(fd int, size int) (*Segment, error) { return nil, unsupported("open") }

// Bytes returns nil.
func (s *Segment) Bytes() []byte { return nil }

// Fd returns -1.
func (s *Segment) Fd() int { return -1 }

// Size returns 0.
func (s *Segment) Size() int { return 0 }

// Close does nothing and returns nil.
func (s *Segment) Close() error { return nil }

// SendFds returns an error wrapping ErrUnsupported on this system.
func SendFds(c *net.UnixConn, msg []byte, fds ...int) error { return unsupported("send fds") }

// RecvFds returns an error wrapping ErrUnsupported on this system.
func RecvFds(c *net.UnixConn, buf []byte, maxFds int) (n int, fds []int, err error) {
	return 0, nil, unsupported("recv fds")
}

// FutexWait returns an error wrapping ErrUnsupported on this system.
func FutexWait(addr *uint32, val uint32, timeout time.Duration) error {
	return unsupported("futex wait")
}

// FutexWake returns an error wrapping ErrUnsupported on this system.
func FutexWake(addr *uint32, n int) (int, error) { return 0, unsupported("futex wake") }

// Watcher reports a peer's death once through a callback. It cannot be
// created on this system.
type Watcher struct{}

// WatchConn returns an error wrapping ErrUnsupported on this system.
func WatchConn(c *net.UnixConn, onGone func()) (*Watcher, error) {
	return nil, unsupported("watch conn")
}

// WatchPid returns an error wrapping ErrUnsupported on this system.
func WatchPid(pid int, onGone func()) (*Watcher, error) { return nil, unsupported("watch pid") }

// Close does nothing and returns nil.
func (w *Watcher) Close() error { return nil }
