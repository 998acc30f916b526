//go:build darwin

package transport

import (
	"net"

	"golang.org/x/sys/unix"
)

const shmSupported = false

// peerCred returns the uid of the process at the other end of c (LOCAL_PEERCRED);
// the pid is not reported.
func peerCred(c *net.UnixConn) (uid, pid int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, -1, err
	}
	var cred *unix.Xucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); err != nil {
		return -1, -1, err
	}
	if serr != nil {
		return -1, -1, serr
	}
	return int(cred.Uid), -1, nil
}
