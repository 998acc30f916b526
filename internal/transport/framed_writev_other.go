//go:build !(darwin || linux || openbsd)

package transport

import (
	"errors"
	"net"
	"syscall"
)

const framedMaxIov = 1024

// frameRawConn returns nil: without writev here, every framed connection
// writes through its queue.
func frameRawConn(net.Conn) syscall.RawConn { return nil }

func frameWritev(uintptr, [][]byte) (int, bool, error) {
	return 0, false, errors.ErrUnsupported
}
