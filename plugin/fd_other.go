//go:build !unix

package plugin

import (
	"fmt"
	"net"
)

// inheritedConn: sockets cannot be inherited as descriptors here.
func inheritedConn(fd int) (*net.UnixConn, error) {
	return nil, fmt.Errorf("%w: an inherited socket (%s=%d)", ErrUnsupported, envFD, fd)
}
