//go:build !unix

package transport

import (
	"net"
	"time"
)

// awaitFirstByte has no cheap way to wait without reading here: the
// handshake's own deadlines bound a silent connection.
func awaitFirstByte(net.Conn, time.Duration) error { return nil }

// hasData cannot tell here.
func hasData(net.Conn) bool { return false }
