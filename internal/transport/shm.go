package transport

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringwire/ringwire/internal/duplex"
	"github.com/ringwire/ringwire/internal/sendparts"
	"github.com/ringwire/ringwire/internal/streamcopy"
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
// Sending: the ring has one producer, so a sender holds the send token
// (sendToken) while it writes; waiting for the token and waiting for room are
// both bounded by the sender's deadline, cancel channel and the write
// deadline. A fragmented message cut short by those bounds keeps the token:
// a background goroutine finishes it (finishLater) before anyone else writes.
//
// Receiving: the reader holds recvMu while it waits (Recv and Release belong
// to one reader at a time).
type shmConn struct {
	end   *duplex.End
	info  Info
	max   int
	laddr net.Addr
	raddr net.Addr

	tok  sendToken
	done chan struct{} // closed by Close: token waiters give up

	// wdl is the write deadline as nanos since epoch (0: none), for the
	// token waiters and the past-deadline check; the ring's producer keeps
	// its own copy for the waits for room. wdlKick wakes token waiters
	// when it changes (see deadlineChanged).
	wdl     atomic.Int64
	wdlKick atomic.Pointer[chan struct{}]

	_      [64]byte // keep the reader's fields off the senders' cache lines
	recvMu sync.Mutex
	held   bool // a message from Recv awaits Release (under recvMu); it holds an RxSide reference

	closed atomic.Bool
}

func newShmConn(end *duplex.End, info Info) *shmConn {
	info.Kind = KindShm
	info.Compression = "none"
	info.RingSize = end.Tx.Capacity()
	return &shmConn{end: end, info: info, max: info.MaxMessage,
		laddr: end.LocalAddr(), raddr: end.RemoteAddr(),
		tok: sendToken{wake: make(chan struct{}, 1)}, done: make(chan struct{})}
}

// LocalAddr is the local address of the Unix socket that carried the
// handshake and now watches the peer's liveness.
func (c *shmConn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr is that socket's peer address.
func (c *shmConn) RemoteAddr() net.Addr { return c.raddr }

// epoch anchors the nanosecond deadlines kept in atomics (monotonic).
var epoch = time.Now()

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(int64(t.Sub(epoch)), 1)
}

func now() int64 { return int64(time.Since(epoch)) }

func tooLarge(n, limit int) error {
	return fmt.Errorf("%w: %d-byte message, the limit is %d", ErrTooLarge, n, limit)
}

func (c *shmConn) Send(typ uint16, data []byte) error {
	return c.SendPartsUntil(time.Time{}, nil, typ, data, nil)
}

// SendParts copies head and body straight into the ring as one message,
// bounded by the write deadline only (as SendPartsUntil with no bound of its
// own).
func (c *shmConn) SendParts(typ uint16, head, body []byte) error {
	return c.SendPartsUntil(time.Time{}, nil, typ, head, body)
}

// SendPartsUntil sends head followed by body as one message, waiting for the
// send token and for ring room only within deadline, cancel and the write
// deadline (see sendparts.BoundedSender). A message that fits one record is copied
// straight into the ring; a larger one is fragmented, and if the bound ends
// after its first fragment went out, the rest is finished in the background.
func (c *shmConn) SendPartsUntil(deadline time.Time, cancel <-chan struct{}, typ uint16, head, body []byte) error {
	return c.send(deadline, deadline, cancel, typ, head, body)
}

// send is SendPartsUntil with separate deadlines for the token and for room.
func (c *shmConn) send(tokenBy, roomBy time.Time, cancel <-chan struct{}, typ uint16, head, body []byte) error {
	n := len(head) + len(body)
	if n > c.max {
		return tooLarge(n, c.max)
	}
	if !c.end.Enter(duplex.TxSide) {
		return ErrClosed
	}
	if err := c.acquire(tokenBy, cancel); err != nil {
		c.end.Exit(duplex.TxSide)
		return err
	}
	tx := c.end.Tx
	if n <= tx.MaxRecord() {
		buf, err := tx.ReserveUntil(n, roomBy, cancel)
		if err == nil {
			streamcopy.Copy(buf[streamcopy.Copy(buf, head):], body)
			if err = tx.Commit(typ, n); err == nil {
				tx.Flush()
			}
		}
		c.tok.release()
		c.end.Exit(duplex.TxSide)
		return shmErr(err)
	}
	sent, err := tx.StagePartsUntil(typ, head, body, roomBy, cancel)
	tx.Flush()
	if cutShort(err, sent, tx) {
		// The token and our reference go to the finisher.
		c.finishLater(head, body, sent)
		return nil
	}
	c.tok.release()
	c.end.Exit(duplex.TxSide)
	return shmErr(err)
}

// cutShort reports whether a bound (not a failure of the ring) ended a
// fragmented message midway, so that it is to be finished in the background.
func cutShort(err error, sent int, tx *ring.Producer) bool {
	return sent > 0 && tx.Unfinished() > 0 && (errors.Is(err, ring.ErrTimeout) || errors.Is(err, ring.ErrCanceled))
}

// shmErr maps a ring error onto the package's sentinels.
func shmErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ring.ErrCanceled) {
		return fmt.Errorf("%w (%v)", ErrCanceled, err)
	}
	return convertRingErr(err)
}

// SendBatch stages every message and publishes them with one position store
// and at most one wake, bounded by the write deadline. If it fails part-way,
// the messages before the failing one have been sent; a fragmented message
// that had started to go out counts as sent (it is finished in the
// background).
func (c *shmConn) SendBatch(msgs []Message) error {
	for _, m := range msgs {
		if len(m.Data) > c.max {
			return tooLarge(len(m.Data), c.max)
		}
	}
	if !c.end.Enter(duplex.TxSide) {
		return ErrClosed
	}
	if err := c.acquire(time.Time{}, nil); err != nil {
		c.end.Exit(duplex.TxSide)
		return err
	}
	tx := c.end.Tx
	for i, m := range msgs {
		sent, err := tx.StagePartsUntil(m.Type, m.Data, nil, time.Time{}, nil)
		if err == nil {
			continue
		}
		tx.Flush()
		if cutShort(err, sent, tx) {
			c.finishLater(m.Data, nil, sent)
			if i == len(msgs)-1 {
				return nil
			}
			return convertRingErr(err)
		}
		c.tok.release()
		c.end.Exit(duplex.TxSide)
		return convertRingErr(err)
	}
	tx.Flush()
	c.tok.release()
	c.end.Exit(duplex.TxSide)
	return nil
}

// finishLater copies the unsent end of a fragmented message (head+body from
// offset sent on) and writes it from a new goroutine, which takes over the
// caller's send token and TxSide reference. It waits for room with no
// deadline; Close or the peer's death end it.
func (c *shmConn) finishLater(head, body []byte, sent int) {
	rest := make([]byte, 0, len(head)+len(body)-sent)
	if sent < len(head) {
		rest = append(append(rest, head[sent:]...), body...)
	} else {
		rest = append(rest, body[sent-len(head):]...)
	}
	go func() {
		_ = c.end.Tx.Resume(rest) // its failure is the ring's: later sends see it
		c.tok.release()
		c.end.Exit(duplex.TxSide)
	}()
}

// wdlPassed reports whether the write deadline has passed.
func (c *shmConn) wdlPassed() bool {
	wdl := c.wdl.Load()
	return wdl != 0 && now() >= wdl
}

// acquire takes the send token within the bounds: deadline, cancel, the
// write deadline and Close. A write deadline that has passed fails at once; a
// deadline of its own that has passed allows one attempt.
func (c *shmConn) acquire(deadline time.Time, cancel <-chan struct{}) error {
	if c.wdlPassed() {
		return ErrTimeout
	}
	if cancel != nil {
		select {
		case <-cancel:
			return ErrCanceled
		default:
		}
	}
	if c.tok.tryAcquire() {
		return nil
	}
	return c.acquireSlow(nanos(deadline), cancel)
}

func (c *shmConn) acquireSlow(deadline int64, cancel <-chan struct{}) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		kick := c.deadlineChanged() // before reading wdl: see deadlineChanged
		if c.tok.grab() {
			return nil
		}
		dl := deadline
		if wdl := c.wdl.Load(); wdl != 0 && (dl == 0 || wdl < dl) {
			dl = wdl
		}
		var expired <-chan time.Time
		if dl != 0 {
			left := time.Duration(dl - now())
			if left <= 0 {
				return ErrTimeout
			}
			if timer == nil {
				timer = time.NewTimer(left)
			} else {
				timer.Reset(left)
			}
			expired = timer.C
		}
		select {
		case <-c.tok.wake:
		case <-c.done:
			return ErrClosed
		case <-cancel:
			return ErrCanceled
		case <-expired:
		case <-kick:
		}
	}
}

// deadlineChanged returns a channel that SetWriteDeadline closes when it next
// changes the write deadline. A waiter takes it before reading the deadline
// and SetWriteDeadline stores the deadline before closing it, so a waiter
// either reads the new deadline or is woken (the atomics are sequentially
// consistent).
func (c *shmConn) deadlineChanged() <-chan struct{} {
	for {
		if p := c.wdlKick.Load(); p != nil {
			return *p
		}
		ch := make(chan struct{})
		if c.wdlKick.CompareAndSwap(nil, &ch) {
			return ch
		}
	}
}

// sendToken is the right to write to the ring (it has one producer). Unlike
// a mutex, waiting for it can be given up, and its holder can hand it to
// another goroutine (finishLater).
//
// No release is missed: a waiter marks the token contended (grab swaps in
// 2) before it sleeps on wake, and release sees that mark in its swap and
// leaves a signal in wake, which stays there until a waiter takes it. A
// waiter that gives up leaves the signal for the others; one that wakes and
// loses the race to a fast acquirer has marked the token contended again, so
// that holder's release signals too.
type sendToken struct {
	state atomic.Int32  // 0 free, 1 held, 2 held and maybe waited for
	wake  chan struct{} // capacity 1
}

func (t *sendToken) tryAcquire() bool { return t.state.CompareAndSwap(0, 1) }

// grab is a waiter's attempt: it takes the token if free and marks it
// contended either way.
func (t *sendToken) grab() bool { return t.state.Swap(2) == 0 }

func (t *sendToken) release() {
	if t.state.Swap(0) == 2 {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
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
	c.wdl.Store(nanos(t))
	if p := c.wdlKick.Swap(nil); p != nil {
		close(*p)
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
	close(c.done)
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
		Handoffs:     tx.Handoffs + rx.Handoffs,
	}
}

var _ sendparts.BoundedSender = (*shmConn)(nil)
