package transport

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringwire/ringwire/internal/duplex"
	"github.com/ringwire/ringwire/ring"
)

// shmConn is a Conn over two shared-memory rings (internal/duplex). Senders
// serialise on sendMu (the ring has one producer); the reader holds recvMu
// while it waits. Close wakes both with ErrClosed, then takes both locks, so
// no goroutine is inside a ring when the memory is unmapped.
type shmConn struct {
	end  *duplex.End
	info Info
	max  int

	sendMu sync.Mutex
	_      [64]byte // keep the reader's lock off the senders' cache line
	recvMu sync.Mutex
	held   bool // a message from Recv awaits Release (under recvMu)

	closed atomic.Bool
	// memMu guards the unmapping against calls that touch the rings' memory
	// without sendMu or recvMu (deadlines, which may be set while a Send or
	// Recv blocks holding those): they hold it for reading.
	memMu    sync.RWMutex
	unmapped bool // under memMu (written with recvMu held too)
	closeErr error
}

func newShmConn(end *duplex.End, info Info) *shmConn {
	info.Kind = KindShm
	info.Compression = "none"
	info.RingSize = end.Tx.Capacity()
	return &shmConn{end: end, info: info, max: info.MaxMessage}
}

func (c *shmConn) Send(typ uint16, data []byte) error {
	if len(data) > c.max {
		return fmt.Errorf("%w: %d-byte message, the limit is %d", ErrTooLarge, len(data), c.max)
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.closed.Load() {
		return ErrClosed
	}
	return convertRingErr(c.end.Tx.Write(typ, data))
}

// SendParts copies head and body straight into the ring as one record; a
// message above the ring's record size is joined first and fragmented.
func (c *shmConn) SendParts(typ uint16, head, body []byte) error {
	n := len(head) + len(body)
	if n > c.max {
		return fmt.Errorf("%w: %d-byte message, the limit is %d", ErrTooLarge, n, c.max)
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.closed.Load() {
		return ErrClosed
	}
	tx := c.end.Tx
	if n > tx.MaxRecord() {
		msg := make([]byte, 0, n)
		return convertRingErr(tx.Write(typ, append(append(msg, head...), body...)))
	}
	buf, err := tx.Reserve(n)
	if err != nil {
		return convertRingErr(err)
	}
	copy(buf[copy(buf, head):], body)
	if err := tx.Commit(typ, n); err != nil {
		return convertRingErr(err)
	}
	tx.Flush()
	return nil
}

// TrySendParts is SendParts that reports false instead of waiting for room
// (for messages that fit one record; larger ones are sent as SendParts does).
func (c *shmConn) TrySendParts(typ uint16, head, body []byte) (bool, error) {
	n := len(head) + len(body)
	if n > c.end.Tx.MaxRecord() {
		return true, c.SendParts(typ, head, body)
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.closed.Load() {
		return false, ErrClosed
	}
	tx := c.end.Tx
	buf, err := tx.TryReserve(n)
	if errors.Is(err, ring.ErrFull) {
		return false, nil
	}
	if err != nil {
		return false, convertRingErr(err)
	}
	copy(buf[copy(buf, head):], body)
	if err := tx.Commit(typ, n); err != nil {
		return false, convertRingErr(err)
	}
	tx.Flush()
	return true, nil
}

// SendBatch stages every message and publishes them with one position store
// and at most one wake. If it fails part-way, the messages before the failing
// one have been sent.
func (c *shmConn) SendBatch(msgs []Message) error {
	for _, m := range msgs {
		if len(m.Data) > c.max {
			return fmt.Errorf("%w: %d-byte message, the limit is %d", ErrTooLarge, len(m.Data), c.max)
		}
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.closed.Load() {
		return ErrClosed
	}
	tx := c.end.Tx
	for _, m := range msgs {
		if err := tx.Stage(m.Type, m.Data); err != nil {
			tx.Flush()
			return convertRingErr(err)
		}
	}
	tx.Flush()
	return nil
}

func (c *shmConn) Recv() (Message, error) {
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	if c.closed.Load() {
		if c.held {
			// Close left the memory mapped for the held message; this
			// Recv releases it, as documented, so the unmapping happens.
			c.held = false
			c.unmap()
		}
		return Message{}, ErrClosed
	}
	rx := c.end.Rx
	if c.held {
		c.held = false
		_ = rx.Release()
	}
	r, err := rx.Peek()
	if err != nil {
		return Message{}, convertRingErr(err)
	}
	c.held = true
	return Message{Type: r.Type, Data: r.Data}, nil
}

func (c *shmConn) Release() {
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	if !c.held {
		return
	}
	c.held = false
	if c.closed.Load() {
		// Close left the memory mapped for this message.
		c.unmap()
		return
	}
	_ = c.end.Rx.Release()
}

// unmap releases the rings and the control socket once. The caller holds
// recvMu, and no sender is inside a ring (Close holds or held sendMu after
// shutting the rings down).
func (c *shmConn) unmap() {
	c.memMu.Lock()
	defer c.memMu.Unlock()
	if c.unmapped {
		return
	}
	c.unmapped = true
	c.closeErr = c.end.Close()
}

// withMemory runs f while the rings are mapped, or returns ErrClosed.
func (c *shmConn) withMemory(f func()) error {
	c.memMu.RLock()
	defer c.memMu.RUnlock()
	if c.unmapped || c.closed.Load() {
		return ErrClosed
	}
	f()
	return nil
}

func (c *shmConn) SetReadDeadline(t time.Time) error {
	return c.withMemory(func() { c.end.Rx.SetDeadline(t) })
}

func (c *shmConn) SetWriteDeadline(t time.Time) error {
	return c.withMemory(func() { c.end.Tx.SetDeadline(t) })
}

// Close wakes every waiter with ErrClosed and unmaps the rings once no
// goroutine uses them — or, when a received message is still held, at its
// Release.
func (c *shmConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.end.Shutdown()
	// The peer learns of the close now, even if a held message keeps the
	// rings mapped until its Release.
	c.end.Hangup()
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	if c.held {
		return nil
	}
	c.unmap()
	return c.closeErr
}

func (c *shmConn) Info() Info { return c.info }

func (c *shmConn) Stats() Stats {
	tx, rx := c.end.Tx.Stats(), c.end.Rx.Stats()
	return Stats{
		MessagesSent: tx.Messages,
		MessagesRecv: rx.Messages,
		BytesSent:    tx.Bytes,
		BytesRecv:    rx.Bytes,
		Wakes:        tx.WakesSent + rx.WakesSent,
		Parks:        tx.Parks + rx.Parks,
	}
}
