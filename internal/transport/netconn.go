package transport

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Message types from typeReserved up (0xFF00–0xFFFF) are reserved by this
// package; applications use the types below it.
const (
	// typeReserved is the first message type reserved by the package.
	typeReserved uint16 = 0xFF00
	// typeStream carries a piece of a NetConn byte stream.
	typeStream uint16 = 0xFF00
	// typeStreamEOF ends a NetConn byte stream in one direction (CloseWrite).
	// It has no payload.
	typeStreamEOF uint16 = 0xFF01
)

// ncMaxChunk caps one typeStream message, so a huge Write needs no huge
// message (and a peer's small MaxMessage is respected below it).
const ncMaxChunk = 1 << 20

// netAddr is the net.Addr of a NetConn end: the transport kind and, for the
// remote end, the name the peer declared in the handshake.
type netAddr struct {
	Kind Kind
	Name string // the peer's declared name; empty for the local end
}

// Network returns "ringwire+" and the kind, e.g. "ringwire+shm".
func (a netAddr) Network() string { return "ringwire+" + a.Kind.String() }

// String returns the name, or the kind when there is no name.
func (a netAddr) String() string {
	if a.Name != "" {
		return a.Name
	}
	return a.Kind.String()
}

// NetConn returns a net.Conn that carries a byte stream over c, which it owns
// (its Close closes c). The peer must use NetConn too: each Write travels as
// one or more typeStream messages and CloseWrite as typeStreamEOF.
//
// The returned value also has CloseWrite and CloseRead methods, like
// *net.TCPConn, and Info, the Conn's. Errors are *net.OpErrors following the
// net package's conventions, except io.EOF:
//   - Read returns io.EOF after the peer's CloseWrite, or when the peer is
//     gone (ErrPeerGone, like a TCP FIN); Write to a gone peer returns an
//     error wrapping ErrPeerGone (like EPIPE).
//   - After Close, pending and later calls return errors matching both
//     net.ErrClosed and ErrClosed.
//   - Write after CloseWrite returns an error matching ErrClosed but not
//     net.ErrClosed (the connection is still open for reading).
//   - Timeouts are net.Errors with Timeout() true that match
//     os.ErrDeadlineExceeded and ErrTimeout; the connection stays usable.
//   - A message of any other type breaks the stream: Read then fails for
//     good with an error wrapping ErrCorrupt (the Conn stays open for the
//     caller to Close).
//
// Addresses come from an optional LocalAddr/RemoteAddr pair of methods on c
// (a framed Conn over TCP can report its socket's addresses); otherwise they
// are netAddr values built from c.Info().
func NetConn(c Conn) net.Conn {
	info := c.Info()
	nc := &ncConn{c: c, chunk: ncMaxChunk}
	if info.MaxMessage > 0 && info.MaxMessage < nc.chunk {
		nc.chunk = info.MaxMessage
	}
	if a, ok := c.(interface {
		LocalAddr() net.Addr
		RemoteAddr() net.Addr
	}); ok && a.LocalAddr() != nil && a.RemoteAddr() != nil {
		nc.laddr, nc.raddr = a.LocalAddr(), a.RemoteAddr()
	} else {
		nc.laddr = netAddr{Kind: info.Kind}
		nc.raddr = netAddr{Kind: info.Kind, Name: info.Peer.Name}
	}
	nc.network = netAddr{Kind: info.Kind}.Network()
	return nc
}

// ncConn is NetConn's net.Conn. Reads serialise on rmu (Recv has one reader),
// writes on wmu (a Write's chunks never interleave with another's).
type ncConn struct {
	c       Conn
	chunk   int
	laddr   net.Addr
	raddr   net.Addr
	network string

	closed    atomic.Bool
	readShut  atomic.Bool  // CloseRead was called
	rdeadline atomic.Int64 // ncNoDeadline or Unix nanoseconds
	wdeadline atomic.Int64

	rmu  sync.Mutex
	rbuf []byte // unread rest of the held message (under rmu)
	held bool   // a message from Recv awaits Release (under rmu)
	rerr error  // sticky read error: io.EOF or a broken stream (under rmu)

	wmu     sync.Mutex
	wshut   bool // CloseWrite was called (under wmu)
	eofSent bool // typeStreamEOF went out (under wmu)
}

// ncNoDeadline marks an unset deadline.
const ncNoDeadline = 0

// errWriteClosed is the error of a Write after CloseWrite: the connection is
// not closed (reads go on), so it does not match net.ErrClosed, as a
// TCPConn's "broken pipe" does not.
var errWriteClosed = errors.New("transport: write after CloseWrite")

// ncErrClosed is the error of calls on a NetConn after its Close.
var ncErrClosed = fmt.Errorf("%w (%w)", net.ErrClosed, ErrClosed)

// ncTimeoutError wraps a timeout so that *net.OpError.Timeout, which checks
// its Err by type assertion, reports it.
type ncTimeoutError struct{ err error }

func (e ncTimeoutError) Error() string   { return e.err.Error() }
func (e ncTimeoutError) Unwrap() error   { return e.err }
func (e ncTimeoutError) Timeout() bool   { return true }
func (e ncTimeoutError) Temporary() bool { return true }

func (c *ncConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.network, Source: c.laddr, Addr: c.raddr, Err: err}
}

// ncDeadlineNanos turns a deadline into the atomic form: 0 for none, and
// at least 1 for any real time (so times before 1970 stay "past").
func ncDeadlineNanos(t time.Time) int64 {
	switch {
	case t.IsZero():
		return ncNoDeadline
	case t.Unix() <= 0:
		return 1
	case t.Unix() >= math.MaxInt64/int64(time.Second)-1:
		return math.MaxInt64
	}
	return t.UnixNano()
}

func ncExpired(d int64) bool {
	return d != ncNoDeadline && time.Now().UnixNano() >= d
}

// Read reads from the stream; see NetConn for its errors.
func (c *ncConn) Read(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, c.opError("read", ncErrClosed)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.closed.Load() {
			c.dropHeld()
			return 0, c.opError("read", ncErrClosed)
		}
		if c.readShut.Load() {
			c.dropHeld()
			return 0, io.EOF
		}
		if len(p) == 0 {
			return 0, nil
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		if ncExpired(c.rdeadline.Load()) {
			return 0, c.opError("read", ncTimeoutError{ErrTimeout})
		}
		if len(c.rbuf) > 0 {
			n := copy(p, c.rbuf)
			c.rbuf = c.rbuf[n:]
			if len(c.rbuf) == 0 {
				c.dropHeld()
			}
			return n, nil
		}
		m, err := c.c.Recv()
		if err != nil {
			c.held = false // a failed Recv holds nothing
			if err := c.readError(err); err != nil {
				return 0, err
			}
			continue
		}
		c.held = true
		switch m.Type {
		case typeStream:
			if len(m.Data) == 0 {
				c.dropHeld()
				continue
			}
			c.rbuf = m.Data
		case typeStreamEOF:
			c.dropHeld()
			if len(m.Data) != 0 {
				c.rerr = c.opError("read", fmt.Errorf("transport: stream end with a %d-byte payload: %w", len(m.Data), ErrCorrupt))
			} else {
				c.rerr = io.EOF
			}
		default:
			c.dropHeld()
			c.rerr = c.opError("read", fmt.Errorf("transport: stream got a message of type %#04x: %w", m.Type, ErrCorrupt))
		}
	}
}

// readError maps a Recv error; nil means "look again" (the loop re-checks
// closure and CloseRead).
func (c *ncConn) readError(err error) error {
	switch {
	case c.closed.Load() || c.readShut.Load():
		return nil
	case errors.Is(err, ErrTimeout):
		return c.opError("read", ncTimeoutError{err})
	case errors.Is(err, ErrPeerGone):
		c.rerr = io.EOF
		return io.EOF
	case errors.Is(err, ErrClosed):
		// Closed underneath us (not by our Close): still a closed conn.
		c.rerr = c.opError("read", fmt.Errorf("%w: %w", net.ErrClosed, err))
		return c.rerr
	}
	c.rerr = c.opError("read", err)
	return c.rerr
}

// dropHeld releases the held message, if any (under rmu).
func (c *ncConn) dropHeld() {
	c.rbuf = nil
	if c.held {
		c.held = false
		c.c.Release()
	}
}

// Write sends p as one or more messages; concurrent Writes do not interleave.
func (c *ncConn) Write(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, c.opError("write", ncErrClosed)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := 0
	for {
		if c.closed.Load() {
			return n, c.opError("write", ncErrClosed)
		}
		if c.wshut {
			return n, c.opError("write", errWriteClosed)
		}
		if ncExpired(c.wdeadline.Load()) {
			return n, c.opError("write", ncTimeoutError{ErrTimeout})
		}
		if len(p) == 0 {
			return n, nil
		}
		k := min(len(p), c.chunk)
		if err := c.c.Send(typeStream, p[:k]); err != nil {
			return n, c.writeError("write", err)
		}
		n += k
		p = p[k:]
		if len(p) == 0 {
			return n, nil
		}
	}
}

// writeError maps a Send error: closure, timeout, or (ErrPeerGone and the
// rest) the Conn's error itself.
func (c *ncConn) writeError(op string, err error) error {
	switch {
	case c.closed.Load():
		return c.opError(op, ncErrClosed)
	case errors.Is(err, ErrTimeout):
		return c.opError(op, ncTimeoutError{err})
	case errors.Is(err, ErrClosed):
		return c.opError(op, fmt.Errorf("%w: %w", net.ErrClosed, err))
	}
	return c.opError(op, err)
}

// CloseWrite ends the stream in this direction: the peer's Read returns
// io.EOF once it has read everything before it, and this side's Writes fail.
// Reading goes on. Calling it again is a no-op once the end went out.
func (c *ncConn) CloseWrite() error {
	if c.closed.Load() {
		return c.opError("close", ncErrClosed)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wshut = true
	if c.eofSent {
		return nil
	}
	if ncExpired(c.wdeadline.Load()) {
		return c.opError("close", ncTimeoutError{ErrTimeout})
	}
	if err := c.c.Send(typeStreamEOF, nil); err != nil {
		return c.writeError("close", err)
	}
	c.eofSent = true
	return nil
}

// CloseRead ends reading: pending and later Reads return io.EOF. It sends
// nothing; messages the peer goes on sending are not consumed, so a peer
// that keeps writing eventually blocks (as with TCP's shutdown(SHUT_RD)).
func (c *ncConn) CloseRead() error {
	if c.closed.Load() {
		return c.opError("close", ncErrClosed)
	}
	if c.readShut.Swap(true) {
		return nil
	}
	// Wake a Read blocked in Recv; the read deadline means nothing any more.
	c.rdeadline.Store(1)
	if err := c.c.SetReadDeadline(time.Unix(1, 0)); err != nil && !c.closed.Load() {
		return c.opError("close", err)
	}
	// Hand back a held message unless a Read is using it (it will).
	if c.rmu.TryLock() {
		c.dropHeld()
		c.rmu.Unlock()
	}
	return nil
}

// Close closes the underlying Conn and unblocks pending calls with an error
// matching net.ErrClosed. Closing twice returns such an error too.
func (c *ncConn) Close() error {
	if c.closed.Swap(true) {
		return c.opError("close", ncErrClosed)
	}
	err := c.c.Close()
	// Hand back a held message unless a Read is using it; that Read does it
	// (the memory stays valid until then).
	if c.rmu.TryLock() {
		c.dropHeld()
		c.rmu.Unlock()
	}
	if err != nil {
		return c.opError("close", err)
	}
	return nil
}

// Info reports the underlying Conn's Info (what was negotiated, the peer).
func (c *ncConn) Info() Info { return c.c.Info() }

func (c *ncConn) LocalAddr() net.Addr  { return c.laddr }
func (c *ncConn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline sets both deadlines; see SetReadDeadline.
func (c *ncConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline bounds pending and later Reads; a deadline in the past
// fails them at once, and the zero time removes the bound.
func (c *ncConn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opError("set", ncErrClosed)
	}
	if c.readShut.Load() {
		return nil // reads end with io.EOF whatever the deadline
	}
	c.rdeadline.Store(ncDeadlineNanos(t))
	if err := c.c.SetReadDeadline(t); err != nil {
		return c.setError(err)
	}
	if c.readShut.Load() {
		// CloseRead ran meanwhile: keep its wake-up deadline in force.
		c.rdeadline.Store(1)
		_ = c.c.SetReadDeadline(time.Unix(1, 0))
	}
	return nil
}

// SetWriteDeadline bounds pending and later Writes in the same way.
func (c *ncConn) SetWriteDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opError("set", ncErrClosed)
	}
	c.wdeadline.Store(ncDeadlineNanos(t))
	if err := c.c.SetWriteDeadline(t); err != nil {
		return c.setError(err)
	}
	return nil
}

func (c *ncConn) setError(err error) error {
	if c.closed.Load() {
		return c.opError("set", ncErrClosed)
	}
	if errors.Is(err, ErrClosed) {
		err = fmt.Errorf("%w: %w", net.ErrClosed, err)
	}
	return c.opError("set", err)
}

// acceptor is what NetListener needs; *Listener satisfies it.
type acceptor interface {
	Accept() (Conn, error)
	Close() error
	Addr() net.Addr
}

// NetListener returns a net.Listener whose Accept wraps each Conn from l in
// NetConn, so net/rpc, net/http or gRPC servers can serve over any transport.
// After Close, Accept returns an error matching net.ErrClosed (and ErrClosed).
// Other Accept errors come back as temporary net.Errors, so servers that back
// off and retry on those (net/http, gRPC) keep serving.
func NetListener(l acceptor) net.Listener {
	return &ncListener{l: l}
}

type ncListener struct {
	l      acceptor
	closed atomic.Bool
}

func (l *ncListener) Accept() (net.Conn, error) {
	if l.closed.Load() {
		return nil, l.opError(ncErrClosed)
	}
	c, err := l.l.Accept()
	if err != nil {
		switch {
		case l.closed.Load():
			return nil, l.opError(ncErrClosed)
		case errors.Is(err, net.ErrClosed) && errors.Is(err, ErrClosed):
			return nil, l.opError(err)
		case errors.Is(err, net.ErrClosed) || errors.Is(err, ErrClosed):
			return nil, l.opError(fmt.Errorf("%w (%w)", ncErrClosed, err))
		}
		return nil, l.opError(ncTemporaryError{err})
	}
	if c == nil {
		return nil, l.opError(ncTemporaryError{errors.New("transport: acceptor returned no connection")})
	}
	return NetConn(c), nil
}

func (l *ncListener) opError(err error) error {
	a := l.l.Addr()
	network := ""
	if a != nil {
		network = a.Network()
	}
	return &net.OpError{Op: "accept", Net: network, Addr: a, Err: err}
}

// Close closes the acceptor; pending and later Accepts fail.
func (l *ncListener) Close() error {
	l.closed.Store(true)
	return l.l.Close()
}

func (l *ncListener) Addr() net.Addr { return l.l.Addr() }

// ncTemporaryError marks an Accept failure that does not end the listener.
type ncTemporaryError struct{ err error }

func (e ncTemporaryError) Error() string   { return e.err.Error() }
func (e ncTemporaryError) Unwrap() error   { return e.err }
func (e ncTemporaryError) Timeout() bool   { return false }
func (e ncTemporaryError) Temporary() bool { return true }

// InfoOf returns what the handshake of c agreed, if c is a net.Conn that
// NetConn made.
func InfoOf(c net.Conn) (Info, bool) {
	nc, ok := c.(*ncConn)
	if !ok {
		return Info{}, false
	}
	return nc.c.Info(), true
}
