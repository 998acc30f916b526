//go:build unix

package plugin

import (
	"fmt"
	"net"
	"os"
)

// inheritedConn turns the socket a host handed down as descriptor fd into a
// connection. The descriptor itself is closed: the connection holds a
// close-on-exec duplicate, so the plugin's own children do not inherit the
// liveness channel (and cannot keep it open after the plugin dies).
func inheritedConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "ringwire-host")
	if f == nil {
		return nil, fmt.Errorf("%w: %s=%d is not an open descriptor", ErrConfig, envFD, fd)
	}
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %s=%d: %w", ErrConfig, envFD, fd, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%w: %s=%d is a %T, not a Unix socket", ErrConfig, envFD, fd, c)
	}
	return uc, nil
}
