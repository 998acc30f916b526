//go:build unix

package transport

import (
	"io"
	"net"
	"syscall"
	"time"
)

// awaitFirstByte waits, at most d, until nc (a socket) has a byte to read,
// without reading it (MSG_PEEK): a connection that stays silent costs a
// parked goroutine and is closed at the deadline.
func awaitFirstByte(nc net.Conn, d time.Duration) error {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	if err := nc.SetReadDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	var b [1]byte
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case e == syscall.EAGAIN || e == syscall.EINTR:
			return false // wait for readiness (or the deadline)
		case e != nil:
			perr = e
		case n == 0:
			perr = io.EOF
		}
		return true
	})
	if err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	return nc.SetReadDeadline(time.Time{})
}

// hasData reports, without waiting or reading, whether nc (a socket) has
// bytes to read (or has been closed by its peer).
func hasData(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var b [1]byte
	ready := false
	_ = rc.Control(func(fd uintptr) {
		n, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ready = e == nil && n > 0
	})
	return ready
}
