//go:build linux

package duplex

import (
	"encoding/binary"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

var le = binary.LittleEndian

func closeFd(fd int) error { return unix.Close(fd) }

// SocketPair returns both ends of a connected Unix stream socket pair, the
// first as a *net.UnixConn and the second as an *os.File to hand to a child.
func socketPair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	lf := os.NewFile(uintptr(fds[0]), "ringwire-control")
	defer lf.Close()
	c, err := net.FileConn(lf)
	if err != nil {
		_ = unix.Close(fds[1])
		return nil, nil, err
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "ringwire-control-child"), nil
}
