package transport

import (
	"github.com/ringwire/ringwire/internal/duplex"
	"github.com/ringwire/ringwire/internal/seam"
)

func init() {
	seam.ShmConn = func(end *duplex.End, maxMessage int) any {
		return newShmConn(end, Info{MaxMessage: maxMessage})
	}
	seam.ShmEnd = func(conn any) *duplex.End {
		if c, ok := conn.(*shmConn); ok {
			return c.end
		}
		return nil
	}
}
