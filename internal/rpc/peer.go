package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ringwire/ringwire/internal/transport"
)

// Defaults of Options.
const (
	// DefaultInlineMax: a method whose handler has averaged less than this
	// runs on the goroutine that read its request, skipping a goroutine
	// hand-off (a wake-up of another thread costs 20-45 µs on the machines
	// this was measured on).
	DefaultInlineMax = 20 * time.Microsecond
	// DefaultMaxHandlers is Options.MaxHandlers' default.
	DefaultMaxHandlers = 10000
	// DefaultMaxObjects is Options.MaxObjects' default.
	DefaultMaxObjects = 100000
	// DefaultSendTimeout is Options.SendTimeout's default (yamux's
	// ConnectionWriteTimeout is the model).
	DefaultSendTimeout = 10 * time.Second
	// DefaultMaxPendingBytes is Options.MaxPendingBytes' default.
	DefaultMaxPendingBytes = 16 << 20
	// goAwayGrace bounds how long Shutdown waits for the peer to answer its
	// goaway with one of its own (after which no call of the peer's can
	// still be on its way).
	goAwayGrace = time.Second
	// linger is how long the background reader leaves the connection to
	// callers that read their own replies before it reads it itself.
	linger = time.Millisecond
)

// Options configure a Peer. The zero value serves nothing and only calls.
type Options struct {
	// Mux is what this side serves to the peer (nil: nothing; every incoming
	// call fails with ErrUnknownMethod).
	Mux *Mux
	// Logger receives handler panics and protocol violations (nil:
	// slog.Default()).
	Logger *slog.Logger
	// InlineMax is the average run time below which a handler runs on the
	// reading goroutine (0: DefaultInlineMax; negative: never, every request
	// gets a goroutine).
	InlineMax time.Duration
	// Context is the parent of every handler's context (nil: Background);
	// cancelling it does not close the Peer.
	Context context.Context
	// MaxHandlers bounds the peer's calls served at once on goroutines of
	// their own (0: DefaultMaxHandlers); beyond it calls are refused with
	// CodeResourceExhaust, so a flood cannot exhaust memory.
	MaxHandlers int
	// MaxObjects bounds the objects the peer may hold on this connection
	// (0: DefaultMaxObjects); New beyond it fails with CodeResourceExhaust.
	MaxObjects int
	// SendTimeout bounds how long an answer (a reply, an error, a pong)
	// may wait for the peer to make room for it (0: DefaultSendTimeout).
	// A peer that reads nothing for that long is considered stalled and
	// the connection is closed with ErrStalled. Calls are bounded by their
	// contexts instead.
	SendTimeout time.Duration
	// MaxPendingBytes bounds the bytes the peer can make this side hold:
	// its requests copied for running handlers plus answers waiting to be
	// sent (0: DefaultMaxPendingBytes, 16 MiB). A call that would go beyond
	// it is refused at once with CodeResourceExhaust; one request is always
	// admitted when nothing is held. Answers are counted when they have to
	// wait but never refused (they exist already), so the most held is
	// about twice MaxPendingBytes (requests admitted up to it, plus their
	// answers waiting) plus one message (the connection's MaxMessage),
	// plus the outbox's 1 MiB and 64 KiB of small messages.
	MaxPendingBytes int64
	// Intercept wraps every call this side makes, the first outermost
	// (see ClientInterceptor); Mux.Intercept wraps the calls it serves.
	Intercept []ClientInterceptor
}

// Peer is one end of an RPC connection. Both ends may call and serve. All
// methods are safe for concurrent use; any number of calls may be in flight.
type Peer struct {
	conn      transport.Conn
	mux       *Mux
	intercept []ClientInterceptor
	log       *slog.Logger
	inlineMax int64
	maxMsg    int

	base       context.Context
	cancelBase context.CancelFunc

	callTable    // our calls awaiting an answer, and the Peer's end (calls.go)
	readToken    // who reads the connection (reader.go)
	servingTable // the peer's calls we serve, and their budget (serving.go)
	departure    // goaway in both directions (shutdown.go)
	objects      objectTable
	out          outbox
	sendTimeout  time.Duration

	done chan struct{}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 4<<20 {
		return // do not pin huge buffers
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// NewPeer starts serving conn and returns the Peer; the Peer owns conn from
// then on.
func NewPeer(conn transport.Conn, o Options) *Peer {
	parent := o.Context
	if parent == nil {
		parent = context.Background()
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	inl := int64(o.InlineMax)
	if inl == 0 {
		inl = int64(DefaultInlineMax)
	}
	maxH, maxO := int64(o.MaxHandlers), o.MaxObjects
	if maxH <= 0 {
		maxH = DefaultMaxHandlers
	}
	if maxO <= 0 {
		maxO = DefaultMaxObjects
	}
	st, mb := o.SendTimeout, o.MaxPendingBytes
	if st <= 0 {
		st = DefaultSendTimeout
	}
	if mb <= 0 {
		mb = DefaultMaxPendingBytes
	}
	p := &Peer{
		conn: conn, mux: o.Mux, log: log, inlineMax: inl, intercept: o.Intercept,
		maxMsg:      conn.Info().MaxMessage,
		sendTimeout: st,
		objects:     objectTable{max: maxO, log: log},
		done:        make(chan struct{}),
	}
	p.calls = map[uint64]*call{}
	p.bgWake = make(chan struct{}, 1)
	p.serving = map[uint64]*handlerCtx{}
	p.maxHandlers = maxH
	p.budget.max = mb
	p.peerBye = make(chan struct{})
	p.base, p.cancelBase = context.WithCancel(parent)
	p.guardInit()
	go p.background()
	return p
}

// Info reports the connection's negotiated transport and the peer's declared
// name, version, constants and contract.
func (p *Peer) Info() transport.Info { return p.conn.Info() }

// Stats returns the connection's counters.
func (p *Peer) Stats() transport.Stats { return p.conn.Stats() }

// Done is closed when the Peer has failed or been closed.
func (p *Peer) Done() <-chan struct{} { return p.done }

// Err returns why the Peer ended (ErrClosed, or an error matching
// ErrPeerGone), or nil while it is alive.
func (p *Peer) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Close tears the connection down. Calls in flight on both sides fail, the
// contexts of running handlers are cancelled and every object the peer
// created is released.
func (p *Peer) Close() error {
	p.fail(ErrClosed)
	return nil
}

// isDone reports whether done is closed, without the lock that a
// context's Err takes (callers sharing one context would contend on it).
func isDone(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// corrupt closes the connection after a protocol violation by the peer.
func (p *Peer) corrupt(err error) {
	p.log.Warn("ringwire: closing the connection: the peer broke the protocol", "err", err)
	p.fail(err)
}

// sendErr converts a failed Send.
func (p *Peer) sendErr(err error) error {
	switch {
	case errors.Is(err, transport.ErrTooLarge):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	case errors.Is(err, transport.ErrTimeout),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// This call's own bound: it fails alone, the connection goes on.
		return err
	}
	p.fail(err)
	return p.Err()
}

// fail ends the Peer once: it closes the connection, fails every call in
// flight, cancels running handlers and releases the peer's objects.
func (p *Peer) fail(cause error) {
	p.mu.Lock()
	if p.err != nil {
		p.mu.Unlock()
		return
	}
	switch {
	case errors.Is(cause, ErrClosed), errors.Is(cause, transport.ErrClosed) && !errors.Is(cause, transport.ErrPeerGone):
		p.err = ErrClosed
	case errors.Is(cause, ErrCorrupt), errors.Is(cause, transport.ErrCorrupt):
		p.err = fmt.Errorf("%w: %w", ErrPeerGone, cause)
	case errors.Is(cause, ErrPeerGone):
		p.err = cause // one sentinel for every layer: nothing to add
	default:
		p.err = fmt.Errorf("%w: %w", ErrPeerGone, cause)
	}
	calls := p.calls
	p.calls = map[uint64]*call{}
	err := p.err
	p.mu.Unlock()

	p.guardStop()
	p.unwatch()
	_ = p.conn.Close()
	p.cancelBase()
	for _, c := range calls {
		p.npending.Add(-1)
		c.ended()
		c.err = err
		c.done.Store(true)
		select {
		case c.ch <- struct{}{}:
		default:
		}
	}
	p.objects.closeAll()
	close(p.done)
	p.releaseClosed()
}
