package transport

// The framed transport: messages over any byte stream (Unix socket, TCP, TLS).
// The frame format and codec are in framed_codec.go, the send path (a
// bounded queue and its writer goroutine) in framed_send.go, the receive
// path in framed_recv.go.
//
// Errors. A header or payload that breaks the codec's rules is ErrCorrupt or
// ErrTooLarge; EOF or a reset from the peer is ErrPeerGone, also when the
// stream ends inside a frame (the peer died mid-send; the bytes seen were
// not malformed). All of these are sticky: the connection closes and every
// later call returns the same error (ErrClosed once Close was called). A
// write that finds the peer gone (EPIPE, reset) fails every later send with
// ErrPeerGone (and drops what was queued) but leaves Recv to drain what the
// peer sent before it left; any other write error breaks the connection.
//
// Deadlines. A read deadline that passes returns ErrTimeout and keeps any
// partial frame, so the next Recv resumes where the last stopped. A write
// deadline bounds only how long a send waits for room in the queue: the
// socket itself never gets a write deadline, so a frame is never cut and
// crypto/tls (which breaks for good on a write timeout) stays usable. A send
// that times out sent nothing; the connection stays usable.
//
// Closing. Close returns at once. Pending and later calls return ErrClosed;
// a pending Recv is woken by a read deadline in the past. Frames already
// accepted still go out: with nothing queued the socket closes at once,
// otherwise the writer goroutine goes on writing for at most
// framedCloseLinger and then closes it, so no goroutine outlives that.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// framedOptions configures newFramed.
type framedOptions struct {
	Kind        Kind              // KindUnix or KindTCP, reported in Info
	Compression framedCompression // the negotiated codec
	Threshold   int               // compress payloads at least this long (0: 1 KiB for LZ4, 4 KiB for ZSTD)
	MaxMessage  int               // largest message either way (0: 128 MiB; at most 1 GiB)
	Info        Info              // peer, version, TLS; Kind, Compression, MaxMessage are set here
}

// framedCloseLinger is how long a closed connection goes on writing what it
// had accepted before Close, for a peer that reads slowly, before it closes
// the socket anyway.
const framedCloseLinger = 2 * time.Second

// framedConn is a Conn over a net.Conn; the wire format is in framed_codec.go.
type framedConn struct {
	nc     net.Conn
	info   Info
	comp   framedCompression
	flag   uint16
	thresh int
	max    int
	// raw is nc's socket for our own non-blocking writev (Unix and TCP
	// sockets); nil for TLS and other conns, which always use the queue.
	raw syscall.RawConn
	// The RawConn.Write callbacks, bound once so a write does not allocate.
	rawOnce, rawWait func(fd uintptr) bool

	closed     atomic.Bool
	failure    atomic.Pointer[error] // first fatal error, or ErrClosed
	wfailure   atomic.Pointer[error] // the peer stopped reading: sends fail, Recv drains
	wdeadline  atomic.Int64          // write deadline, ncDeadlineNanos form
	sockOnce   sync.Once
	sockClosed atomic.Bool // nc is closed: nothing more can be written

	// Send side (framed_send.go), under wmu.
	wmu     sync.Mutex
	writing bool           // a direct write or the writer goroutine owns the socket's write side
	queue   []frameChunk   // accepted bytes not yet taken by the writer, in order
	spare   []frameChunk   // the writer's other queue array
	wheld   int            // accepted bytes not yet written (queue, writer's batch, direct write, reservations)
	wpeak   int            // the most wheld has been (tests check the bound)
	waiters []*frameWaiter // senders waiting for room, first come first served
	linger  *time.Timer    // closes the socket framedCloseLinger after Close
	// Owned by whoever holds the writing role.
	wvec [][]byte // pieces of the next writev
	wn   int      // what the last rawOnce/rawWait wrote
	werr error    // and its error

	// Recv side, owned by the reading goroutine.
	rbuf   *[]byte // read-ahead buffer; unread bytes are rbuf[rr:rw]
	rr, rw int
	rhave  bool // header of the current frame parsed
	rlen   int  // its payload length on the wire
	rtyp   uint16
	rflags uint16
	rraw   int     // its declared raw length if compressed
	big    *[]byte // payload of a large frame being read
	bigN   int
	held   *[]byte // pooled memory of the message last returned

	msgsSent, msgsRecv   atomic.Uint64
	bytesSent, bytesRecv atomic.Uint64
	wireSent, wireRecv   atomic.Uint64
	writes               atomic.Uint64
}

// newFramed wraps nc, which the framed connection owns from now on.
func newFramed(nc net.Conn, o framedOptions) *framedConn {
	maxMsg := o.MaxMessage
	if maxMsg <= 0 {
		maxMsg = framedDefaultMax
	}
	maxMsg = min(maxMsg, framedMaxLimit)
	comp := o.Compression
	if comp > framedCompZstd {
		comp = framedCompNone
	}
	thresh := o.Threshold
	if thresh <= 0 {
		thresh = framedDefaultThresholdLZ4
		if comp == framedCompZstd {
			thresh = framedDefaultThresholdZstd
		}
	}
	c := &framedConn{
		nc:     nc,
		comp:   comp,
		flag:   comp.flag(),
		thresh: thresh,
		max:    maxMsg,
		info:   o.Info,
	}
	if c.raw = frameRawConn(nc); c.raw != nil {
		c.rawOnce, c.rawWait = c.writevOnce, c.writevWait
	}
	c.info.Kind = o.Kind
	c.info.Compression = comp.String()
	c.info.MaxMessage = maxMsg
	return c
}

// Info reports what was negotiated.
func (c *framedConn) Info() Info { return c.info }

// Stats returns the connection's counters.
func (c *framedConn) Stats() Stats {
	return Stats{
		MessagesSent:  c.msgsSent.Load(),
		MessagesRecv:  c.msgsRecv.Load(),
		BytesSent:     c.bytesSent.Load(),
		BytesRecv:     c.bytesRecv.Load(),
		WireBytesSent: c.wireSent.Load(),
		WireBytesRecv: c.wireRecv.Load(),
		Writes:        c.writes.Load(),
	}
}

// LocalAddr returns the socket's local address (over TLS, the TCP one).
func (c *framedConn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr returns the socket's remote address (over TLS, the TCP one).
func (c *framedConn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// framedPast is a deadline in the past, which wakes a blocked Read.
var framedPast = time.Unix(1, 0)

// SetReadDeadline bounds pending and future Recv calls.
func (c *framedConn) SetReadDeadline(t time.Time) error {
	err := c.nc.SetReadDeadline(t)
	if c.closed.Load() {
		// Close may have set its wake-up deadline before ours: keep it.
		_ = c.nc.SetReadDeadline(framedPast)
		return ErrClosed
	}
	if err == nil {
		return nil
	}
	if st := c.stateErr(); st != nil {
		return st
	}
	return fmt.Errorf("transport: framed deadline: %w", err)
}

// SetWriteDeadline bounds how long pending and future sends wait for room in
// the send queue; one in the past fails them at once. It is only recorded:
// the socket never gets a write deadline (see framed_send.go).
func (c *framedConn) SetWriteDeadline(t time.Time) error {
	if err := c.stateErr(); err != nil {
		return err
	}
	c.wdeadline.Store(ncDeadlineNanos(t))
	c.wmu.Lock()
	c.wakeAllLocked() // they re-check against the new deadline
	c.wmu.Unlock()
	return nil
}

// Close closes the connection and returns at once; pending and later calls
// return ErrClosed. Frames already accepted are still written for up to
// framedCloseLinger. A message still held from Recv stays valid until
// Release.
func (c *framedConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	closedErr := ErrClosed
	if !c.failure.CompareAndSwap(nil, &closedErr) {
		return nil // already failed, and nc closed then
	}
	// Wake a pending Recv; the closed flag turns its timeout into ErrClosed.
	_ = c.nc.SetReadDeadline(framedPast)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wakeAllLocked()
	if c.writing {
		// The writer (or a direct write about to hand over to it) finishes
		// what was accepted and then closes the socket, or the linger does.
		c.linger = time.AfterFunc(framedCloseLinger, func() { _ = c.closeSocket() })
		return nil
	}
	if err := c.closeSocket(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("transport: framed close: %w", err)
	}
	return nil
}

// closeSocket closes nc, once. Over TLS it closes the TCP socket under it:
// crypto/tls would wait up to 5 s to send close_notify to a peer that may
// not read, and the framing already tells a cut stream apart.
func (c *framedConn) closeSocket() error {
	var err error
	c.sockOnce.Do(func() {
		c.sockClosed.Store(true)
		nc := c.nc
		if tc, ok := nc.(*tls.Conn); ok {
			nc = tc.NetConn()
		}
		err = nc.Close()
	})
	return err
}

// stateErr is the error every call returns once the conn is closed or broken.
func (c *framedConn) stateErr() error {
	if c.closed.Load() {
		return ErrClosed
	}
	if p := c.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// sendErr is the error every Send returns once sending is over.
func (c *framedConn) sendErr() error {
	if err := c.stateErr(); err != nil {
		return err
	}
	if p := c.wfailure.Load(); p != nil {
		return *p
	}
	return nil
}

// fail makes err the connection's sticky error (unless one is set already),
// closes the socket, wakes every waiting sender and returns the sticky
// error. The caller must not hold wmu.
func (c *framedConn) fail(err error) error {
	if c.failure.CompareAndSwap(nil, &err) {
		_ = c.closeSocket()
		c.wmu.Lock()
		c.wakeAllLocked()
		c.wmu.Unlock()
	}
	return c.stateErr()
}

// frameIsTimeout reports whether err is a passed deadline.
func frameIsTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// frameTimeout is a send that waited too long for room: ErrTimeout, and
// itself a net.Error timeout like the errors of net.Conn.
type frameTimeout struct{ what string }

func (e frameTimeout) Error() string   { return ErrTimeout.Error() + " (" + e.what + ")" }
func (e frameTimeout) Unwrap() error   { return ErrTimeout }
func (e frameTimeout) Timeout() bool   { return true }
func (e frameTimeout) Temporary() bool { return true }

var (
	errFrameWriteDeadline = error(frameTimeout{"write deadline"})
	errFrameSendDeadline  = error(frameTimeout{"send deadline"})
)

// frameIsPeerGone reports whether err means the other side hung up.
func frameIsPeerGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.ErrClosedPipe) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}
