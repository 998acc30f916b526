//go:build !linux && !darwin

package transport

import (
	"errors"
	"net"
)

const shmSupported = false

// peerCred is not available here: Unix-socket peers are authenticated by
// their token only.
func peerCred(*net.UnixConn) (uid, pid int, err error) {
	return -1, -1, errors.ErrUnsupported
}
