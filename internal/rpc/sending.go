package rpc

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringwire/ringwire/internal/sendparts"
	"github.com/ringwire/ringwire/internal/transport"
)

// Sending. Every send of a Peer is bounded, on every transport:
//
//   - a call, ping or goaway of Shutdown by the caller's context (sendCtx);
//   - a handler's reply by its call's deadline and by Options.SendTimeout
//     (sendAnswer): a reply the call's deadline overtook is dropped (its
//     caller has given up), one that could not go out within SendTimeout
//     means the peer stopped reading, and the connection is closed with
//     ErrStalled;
//   - what the reading goroutine itself has to send (pongs, refusals, the
//     answering goaway, cancels, view handlers' replies) never waits: it is
//     sent if there is room at once, or else copied to the outbox, whose
//     goroutine sends it under SendTimeout (post). Two peers that flood each
//     other thus never deadlock with both readers blocked in a send.
//
// The outbox holds at most outboxMax bytes of view replies (or one larger
// reply) and outboxSmallMax bytes of small messages; a reader that finds
// it full waits for room, which the outbox's goroutine makes within
// SendTimeout or the connection closes: a peer that neither reads nor stops
// sending is refused more work (backpressure) instead of growing our
// memory. View calls that arrive while the outbox holds anything are served
// on goroutines instead (incoming), so the reader waits only when the peer
// has sent 64 KiB worth of pings or refused calls without reading.

// outboxMax bounds the bytes of large messages (view handlers' replies) the
// outbox holds; one is always taken when it holds none. Small messages
// (pongs, refusals, cancels, goaway: outboxSmall bytes at most) have a
// bound of their own, outboxSmallMax, so they never wait behind a large
// reply: a reader waiting for room for a pong while the peer's reader
// waits for room for its own would deadlock the two.
const (
	outboxMax      = 1 << 20
	outboxSmall    = 512
	outboxSmallMax = 64 << 10
)

type outMsg struct {
	typ uint16
	b   *[]byte
}

// outbox is the queue of answers the reader could not send at once. It
// orders them: while it holds anything, later answers queue behind.
type outbox struct {
	mu      sync.Mutex
	q       []outMsg
	bytes   int  // of every message queued
	small   int  // of the small ones (at most outboxSmall bytes each)
	running bool // its goroutine is sending
	// draining mirrors running for lock-free readers.
	draining atomic.Bool
	room     chan struct{} // closed (and dropped) when bytes drop; made by a waiter
}

// post sends what the reading goroutine has to send without ever waiting
// for the peer: at once if there is room, or else through the outbox.
func (p *Peer) post(typ uint16, head, body []byte) {
	o := &p.out
	if !o.draining.Load() {
		// Nothing queued: try without the lock (the usual case).
		err := sendparts.Until(p.conn, sendparts.NoWait, nil, typ, head, body)
		if err == nil || !errors.Is(err, transport.ErrTimeout) {
			p.sent(err)
			return
		}
	}
	o.mu.Lock()
	if !o.running {
		err := sendparts.Until(p.conn, sendparts.NoWait, nil, typ, head, body)
		if err == nil || !errors.Is(err, transport.ErrTimeout) {
			o.mu.Unlock()
			p.sent(err)
			return
		}
	}
	n := len(head) + len(body)
	for o.full(n) {
		// Backpressure: the outbox's goroutine makes room within
		// SendTimeout, or the connection fails.
		if o.room == nil {
			o.room = make(chan struct{})
		}
		room := o.room
		o.mu.Unlock()
		select {
		case <-room:
		case <-p.done:
			return
		}
		o.mu.Lock()
	}
	b := getBuf()
	*b = append(append((*b)[:0], head...), body...)
	o.q = append(o.q, outMsg{typ, b})
	o.bytes += n
	if n <= outboxSmall {
		o.small += n
	}
	if !o.running {
		o.running = true
		o.draining.Store(true)
		go p.drainOutbox()
	}
	o.mu.Unlock()
}

// drainOutbox sends the outbox's messages in order, each within
// SendTimeout, and ends when the outbox is empty.
func (p *Peer) drainOutbox() {
	o := &p.out
	for {
		o.mu.Lock()
		if len(o.q) == 0 || isDone(p.done) {
			for _, m := range o.q {
				putBuf(m.b)
			}
			clear(o.q)
			o.q, o.bytes, o.small, o.running = o.q[:0], 0, 0, false
			o.draining.Store(false)
			o.wake()
			o.mu.Unlock()
			return
		}
		m := o.q[0]
		o.mu.Unlock()

		err := sendparts.Until(p.conn, time.Now().Add(p.sendTimeout), p.done, m.typ, *m.b, nil)
		n := len(*m.b)
		putBuf(m.b)
		if errors.Is(err, transport.ErrTimeout) {
			p.fail(p.stalled())
		} else {
			p.sent(err)
		}

		o.mu.Lock()
		o.q[0] = outMsg{}
		o.q = o.q[1:]
		o.bytes -= n
		if n <= outboxSmall {
			o.small -= n
		}
		o.wake()
		o.mu.Unlock()
	}
}

// full reports whether a message of n bytes has to wait for room (under
// mu).
func (o *outbox) full(n int) bool {
	if n <= outboxSmall {
		return o.small > 0 && o.small+n > outboxSmallMax
	}
	large := o.bytes - o.small
	return large > 0 && large+n > outboxMax
}

// busy reports whether the outbox holds answers the peer has not made room
// for yet (a view call checks it, lock-free).
func (o *outbox) busy() bool { return o.draining.Load() }

// wake releases every poster waiting for room (under mu).
func (o *outbox) wake() {
	if o.room != nil {
		close(o.room)
		o.room = nil
	}
}

// sent handles the outcome of a send nobody waits for: a broken connection
// ends the Peer; a message over the limit was the sender's problem and was
// reported elsewhere.
func (p *Peer) sent(err error) {
	if err == nil || errors.Is(err, transport.ErrTooLarge) {
		return
	}
	p.fail(err)
}

// stalled is the error of a connection whose peer stopped reading.
func (p *Peer) stalled() error {
	return fmt.Errorf("%w: nothing could be sent for %v", ErrStalled, p.sendTimeout)
}

// sendAnswer sends a handler's reply or error: at once if there is room,
// else waiting at most until the call's deadline and SendTimeout. Bytes
// that wait count against the connection's budget.
func (p *Peer) sendAnswer(hc *handlerCtx, typ uint16, head, body []byte) error {
	if hc.reader {
		// A view handler runs on the reading goroutine: never wait.
		p.post(typ, head, body)
		return nil
	}
	err := sendparts.Until(p.conn, sendparts.NoWait, nil, typ, head, body)
	if err == nil || !errors.Is(err, transport.ErrTimeout) {
		return err
	}
	n := int64(len(head) + len(body))
	p.budget.take(n)
	defer p.budget.give(n)
	dl, byCall := time.Now().Add(p.sendTimeout), false
	if !hc.deadline.IsZero() && hc.deadline.Before(dl) {
		dl, byCall = hc.deadline, true
	}
	err = sendparts.Until(p.conn, dl, p.done, typ, head, body)
	if errors.Is(err, transport.ErrTimeout) {
		if byCall {
			return nil // the caller has given up on it already
		}
		p.fail(p.stalled())
		return p.Err()
	}
	return err
}
