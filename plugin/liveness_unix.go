//go:build unix

package plugin

import (
	"net"
	"sync"
	"syscall"
)

// liveness is a duplicate of the host's end of a launched plugin's socket,
// kept so the host can end the liveness channel itself: a shared-memory
// connection closed while a received message is still held keeps its socket
// open until that message is released, and the plugin would never learn
// that its host is gone. shutdown(2) acts on the socket, not on one
// descriptor, so the plugin sees the hang-up at once.
type liveness struct {
	once sync.Once
	fd   int
}

// newLiveness duplicates uc's descriptor (close-on-exec); nil if it cannot.
func newLiveness(uc *net.UnixConn) *liveness {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	l := &liveness{fd: -1}
	var dupErr error
	if err := rc.Control(func(fd uintptr) {
		// Under ForkLock, so no child started meanwhile inherits the
		// duplicate before it is marked close-on-exec.
		syscall.ForkLock.RLock()
		defer syscall.ForkLock.RUnlock()
		if l.fd, dupErr = syscall.Dup(int(fd)); dupErr == nil {
			syscall.CloseOnExec(l.fd)
		}
	}); err != nil || dupErr != nil {
		return nil
	}
	return l
}

// end shuts the socket down in both directions and closes the duplicate.
func (l *liveness) end() {
	if l == nil {
		return
	}
	l.once.Do(func() {
		_ = syscall.Shutdown(l.fd, syscall.SHUT_RDWR)
		_ = syscall.Close(l.fd)
	})
}
