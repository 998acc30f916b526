package transport

// The framed transport: messages over any byte stream (Unix socket, TCP, TLS).
// The frame format and codec are in framed_codec.go, the send path in
// framed_send.go, the receive path in framed_recv.go.
//
// Errors. A header or payload that breaks the codec's rules is ErrCorrupt or
// ErrTooLarge; EOF or a reset from the peer is ErrPeerGone, also when the
// stream ends inside a frame (the peer died mid-send; the bytes seen were
// not malformed). All of these are sticky: the connection closes and every
// later call returns the same error (ErrClosed once Close was called). A
// write that finds the peer gone (EPIPE, reset) fails that and every later
// Send with ErrPeerGone but leaves Recv to drain what the peer sent before
// it left.
// A read deadline that passes returns ErrTimeout and keeps any partial frame,
// so the next Recv resumes where the last stopped. A write deadline that
// passes returns ErrTimeout and leaves the connection usable: if it cut a
// frame in two, the rest of that frame is kept (copied) and written first by
// the next writer, so the stream stays framed and the cut message arrives
// whole; frames queued after it were not sent. ErrTimeout from Send thus
// means "not known to be delivered", as with any timed-out call. Over TLS a
// write timeout breaks crypto/tls for good, so there it closes the
// connection.

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

// framedConn is a Conn over a net.Conn; the wire format is in framed_codec.go.
type framedConn struct {
	nc     net.Conn
	info   Info
	comp   framedCompression
	flag   uint16
	thresh int
	max    int
	writev bool // nc writes net.Buffers with one writev
	// timeoutBreaks: a write timeout leaves nc unusable (crypto/tls), so a
	// write deadline that passes closes the connection.
	timeoutBreaks bool

	closed   atomic.Bool
	failure  atomic.Pointer[error] // first fatal error; the conn is closed then
	wfailure atomic.Pointer[error] // the peer stopped reading: sends fail, Recv drains

	// Send side: the queue of senders and the writer role.
	wmu     sync.Mutex
	writing bool        // a writer holds the role (or is being handed it)
	pending []*frameReq // queued, not yet taken by a writer
	spare   []*frameReq // the other queue array, swapped with pending
	// Writer-owned.
	wbufs net.Buffers // backing array of the batch's pieces
	wview net.Buffers // what WriteTo consumes
	stage *[]byte     // gather buffer for conns without writev
	// residue is the unwritten tail of a frame a write deadline cut short;
	// the next writer sends it first so the stream stays framed.
	residue []byte

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
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
		c.writev = true
	case *tls.Conn:
		c.timeoutBreaks = true
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

// SetReadDeadline bounds pending and future Recv calls.
func (c *framedConn) SetReadDeadline(t time.Time) error {
	return c.deadlineErr(c.nc.SetReadDeadline(t))
}

// SetWriteDeadline bounds pending and future Send calls.
func (c *framedConn) SetWriteDeadline(t time.Time) error {
	return c.deadlineErr(c.nc.SetWriteDeadline(t))
}

func (c *framedConn) deadlineErr(err error) error {
	if err == nil {
		return nil
	}
	if st := c.stateErr(); st != nil {
		return st
	}
	return fmt.Errorf("transport: framed deadline: %w", err)
}

// Close closes the connection; pending calls return ErrClosed. A message
// still held from Recv stays valid until Release.
func (c *framedConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	closedErr := ErrClosed
	if !c.failure.CompareAndSwap(nil, &closedErr) {
		return nil // already failed, and nc closed then
	}
	nc := c.nc
	if tc, ok := nc.(*tls.Conn); ok {
		// crypto/tls would wait up to 5 s to send close_notify to a peer
		// that may not read; the framing already tells a cut stream apart.
		nc = tc.NetConn()
	}
	if err := nc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("transport: framed close: %w", err)
	}
	return nil
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
// closes the socket and returns the sticky error.
func (c *framedConn) fail(err error) error {
	if c.failure.CompareAndSwap(nil, &err) {
		if tc, ok := c.nc.(*tls.Conn); ok {
			// No close_notify on a broken stream: crypto/tls would wait up
			// to 5 s to write it to a peer that may not read.
			_ = tc.NetConn().Close()
		} else {
			_ = c.nc.Close()
		}
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

// frameIsPeerGone reports whether err means the other side hung up.
func frameIsPeerGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.ErrClosedPipe) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}
