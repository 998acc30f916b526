//go:build darwin || linux || openbsd

package transport

import (
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// framedMaxIov is the most pieces one writev takes (IOV_MAX here).
const framedMaxIov = 1024

// frameRawConn returns the socket under nc for the framed transport's own
// writev calls: on *net.UnixConn and *net.TCPConn, nil on anything else
// (TLS, pipes), which then always writes through its queue.
func frameRawConn(nc net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch c := nc.(type) {
	case *net.UnixConn:
		sc = c
	case *net.TCPConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// frameWritev makes one writev of bufs on the non-blocking socket fd. again
// reports a full socket (EAGAIN: nothing written); err is any other failure.
func frameWritev(fd uintptr, bufs [][]byte) (n int, again bool, err error) {
	for {
		n, err = unix.Writev(int(fd), bufs)
		switch err {
		case nil:
			return n, false, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, true, nil
		}
		return 0, false, os.NewSyscallError("writev", err)
	}
}
