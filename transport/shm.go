package transport

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringwire/ringwire/internal/duplex"
	"github.com/ringwire/ringwire/ring"
)

// shmConn is a Conn over two shared-memory rings (internal/duplex).
//
// Memory: every method that touches the rings brackets that with
// end.Enter/Exit on the ring's side, and a message held from Recv keeps its
// reference until Release (or the next Recv). The mapping is released by the
// last Exit after Close (duplex.lifetime), so Close, the reader, the senders,
// the deadline setters and the liveness watcher may interleave freely.
//
// Senders serialise on sendMu (the ring has one producer); the reader holds
// recvMu while it waits (Recv and Release belong to one reader at a time).
type shmConn struct {
	end   *duplex.End
	info  Info
	max   int
	laddr net.Addr
	raddr net.Addr

	sendMu sync.Mutex
	_      [64]byte // keep the reader's lock off the senders' cache line
	recvMu sync.Mutex
	held   bool // a message from Recv awaits Release (under recvMu); it holds an RxSide reference

	closed atomic.Bool
}

func newShmConn(end *duplex.End, info Info) *shmConn {
	info.Kind = KindShm
	info.Compression = "none"
	info.RingSize = end.Tx.Capacity()
	return &shmConn{end: end, info: info, max: info.MaxMessage,
		laddr: end.LocalAddr(), raddr: end.RemoteAddr()}
}

// LocalAddr is the local address of the Unix socket that carried the
// handshake and now watches the peer's liveness.
func (c *shmConn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr is that socket's peer address.
func (c *shmConn) RemoteAddr() net.Addr { return c.raddr }

// lockTx takes sendMu and a TxSide reference, or reports ErrClosed.
func (c *shmConn) lockTx() error {
	if !c.end.Enter(duplex.TxSide) {
		return ErrClosed
	}
	c.sendMu.Lock()
	if c.closed.Load() {
		c.unlockTx()
		return ErrClosed
	}
	return nil
}

func (c *shmConn) unlockTx() {
	c.sendMu.Unlock()
	c.end.Exit(duplex.TxSide)
}

func (c *shmConn) Send(typ uint16, data []byte) error {
	if len(data) > c.max {
		return fmt.Errorf("%w: %d-byte message, the limit is %d", ErrTooLarge, len(data), c.max)
	}
	if err := c.lockTx(); err != nil {
		return err
	}
	defer c.unlockTx()
	return convertRingErr(c.end.Tx.Write(typ, data))
}

// SendParts copies head and body straight into the ring as one record; a
// message above the ring's record size is joined first and fragmented.
func (c *shmConn) SendParts(typ uint16, head, body []byte) error {
	n := len(head) + len(body)
	if n > c.max {
		return fmt.Errorf("%w: %d-byte message, the limit is %d", ErrTooLarge, n, c.max)
	}
	if err := c.lockTx(); err != nil {
		return err
	}
	defer c.unlockTx()
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
	if err := c.lockTx(); err != nil {
		return false, err
	}
	defer c.unlockTx()
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
	if err := c.lockTx(); err != nil {
		return err
	}
	defer c.unlockTx()
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
	rx := c.end.Rx
	if c.held {
		// The held message's reference carries over to this Recv.
		c.held = false
		if c.closed.Load() {
			c.end.Exit(duplex.RxSide)
			return Message{}, ErrClosed
		}
		_ = rx.Release()
	} else if !c.end.Enter(duplex.RxSide) {
		return Message{}, ErrClosed
	} else if c.closed.Load() {
		c.end.Exit(duplex.RxSide)
		return Message{}, ErrClosed
	}
	r, err := rx.Peek()
	if err != nil {
		c.end.Exit(duplex.RxSide)
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
	if !c.closed.Load() {
		_ = c.end.Rx.Release()
	}
	c.end.Exit(duplex.RxSide)
}

func (c *shmConn) SetReadDeadline(t time.Time) error {
	if !c.end.Enter(duplex.RxSide) {
		return ErrClosed
	}
	defer c.end.Exit(duplex.RxSide)
	if c.closed.Load() {
		return ErrClosed
	}
	c.end.Rx.SetDeadline(t)
	return nil
}

func (c *shmConn) SetWriteDeadline(t time.Time) error {
	if !c.end.Enter(duplex.TxSide) {
		return ErrClosed
	}
	defer c.end.Exit(duplex.TxSide)
	if c.closed.Load() {
		return ErrClosed
	}
	c.end.Tx.SetDeadline(t)
	return nil
}

// Close wakes every waiter with ErrClosed and tells the peer at once. The
// memory is unmapped by the last goroutine to leave the rings — at once if
// none is inside, or at the Release of a message still held.
func (c *shmConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.end.Close()
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
