// Package sendparts sends one message made of two parts (a header and a
// payload) on a connection, within bounds: the contract every transport.Conn
// of this module keeps (BoundedSender), and the fallbacks for a connection
// written elsewhere. The RPC engine and the transport's tests send through it.
package sendparts

import "time"

// Sender is a message connection (transport.Conn has this method).
type Sender interface {
	Send(typ uint16, data []byte) error
}

// PartsSender is implemented by connections that can send one message made
// of two parts without the caller joining them: the parts are copied
// straight into the ring, or written with one writev. Every transport.Conn
// of this module implements it.
type PartsSender interface {
	SendParts(typ uint16, head, body []byte) error
}

// BoundedSender is implemented by every transport.Conn of this module.
//
// SendPartsUntil sends head followed by body as one message, waiting for
// room (ring space on shared memory, the send buffer on a stream) only until
// deadline (the zero time: no bound of its own) and only while cancel (nil:
// never) is open. The Conn's write deadline bounds it as well.
//
//   - If the bound ends before any of the message went out, it returns an
//     error matching ErrTimeout (deadline or write deadline) or ErrCanceled
//     (cancel closed), nothing was sent, and the connection is as usable as
//     before. A deadline already in the past makes one attempt without
//     waiting; a write deadline in the past fails at once.
//   - Once a message has started to go out it is always finished: if the
//     bound ends midway (a fragmented message on shared memory, a frame
//     half-written to a socket), the rest is copied and sent in the
//     background ahead of every later message, and SendPartsUntil returns
//     nil. The connection is never left with half a message.
//
// head and body may be reused when it returns. It never blocks longer than
// its bounds, whatever the peer does; a peer that never reads costs at most
// the copy of one message held for the background.
type BoundedSender interface {
	SendPartsUntil(deadline time.Time, cancel <-chan struct{}, typ uint16, head, body []byte) error
}

// NoWait is a deadline that has passed: Until with it sends only if there
// is room at once.
var NoWait = time.Unix(0, 1)

// Until sends on c as BoundedSender does. A connection that does not
// implement BoundedSender (one written elsewhere) is sent to with Parts,
// bounded only by its own write deadline.
func Until(c Sender, deadline time.Time, cancel <-chan struct{}, typ uint16, head, body []byte) error {
	if bs, ok := c.(BoundedSender); ok {
		return bs.SendPartsUntil(deadline, cancel, typ, head, body)
	}
	return Parts(c, typ, head, body)
}

// Parts sends head followed by body as one message on c, without joining
// them first when c is a PartsSender.
func Parts(c Sender, typ uint16, head, body []byte) error {
	if ps, ok := c.(PartsSender); ok {
		return ps.SendParts(typ, head, body)
	}
	if len(body) == 0 {
		return c.Send(typ, head)
	}
	msg := make([]byte, 0, len(head)+len(body))
	return c.Send(typ, append(append(msg, head...), body...))
}
