package protocol

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringwire/ringwire/transport"
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
	DefaultMaxPendingBytes = 32 << 20
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
	// sent (0: DefaultMaxPendingBytes). A call that would go beyond it is
	// refused at once with CodeResourceExhaust; one request is always
	// admitted when nothing is held, so the most held is MaxPendingBytes
	// plus one message (the connection's MaxMessage), plus the outbox's
	// 1 MiB.
	MaxPendingBytes int64
}

// Peer is one end of an RPC connection. Both ends may call and serve. All
// methods are safe for concurrent use; any number of calls may be in flight.
type Peer struct {
	conn      transport.Conn
	mux       *Mux
	log       *slog.Logger
	inlineMax int64
	maxMsg    int

	base       context.Context
	cancelBase context.CancelFunc

	nextID atomic.Uint64

	mu      sync.Mutex
	calls   map[uint64]*call       // our calls awaiting an answer
	serving map[uint64]*handlerCtx // the peer's calls we are serving
	objects objectTable
	err     error // set once, under mu, when the Peer fails or closes

	maxHandlers int64
	sendTimeout time.Duration
	budget      budget
	out         outbox

	npending atomic.Int32 // len(calls)
	// The reading token: whoever swaps reading from 0 to 1 reads the
	// connection until it gives the token back.
	reading  atomic.Int32
	waiters  atomic.Int32 // callers blocked on their call's channel
	wantRead atomic.Bool  // a caller wanted the token while the background reader held it
	rescuing atomic.Bool  // a rescue reader runs (see guard.go)
	bgWake   chan struct{}

	viewing atomic.Int32 // CallView functions running in place (see inPlaceView)

	handed bool // the reader handed an answer to another goroutine (token holder only)

	kickMu   sync.Mutex
	kickCtx  context.Context // the context whose end kicks the reader (watch)
	kickStop func() bool

	inlineStart  atomic.Int64 // nanotime at which the running inline handler started; 0: none
	inlineMethod atomic.Pointer[method]

	leaving  atomic.Bool   // we sent goaway: refuse new incoming calls, make no new ones
	peerLeft atomic.Bool   // the peer sent goaway: make no new calls
	peerBye  chan struct{} // closed when the peer's goaway arrives
	active   atomic.Int64  // incoming calls being served
	spawned  atomic.Int64  // of which on goroutines of their own
	lastIn   atomic.Uint64 // the highest call id the peer sent us

	done chan struct{}
}

// call is one outstanding outgoing call (or ping).
type call struct {
	ch    chan struct{} // signalled when done (or to retry for the token)
	done  atomic.Bool
	dst   []byte
	reply []byte
	err   error
	cb    Handler
	// CallView: fn sees the reply; pooled holds a copy when another
	// goroutine read it.
	fn     func([]byte) error
	pooled *[]byte
	ping   bool // answered by a pong, not by a reply or an error
	// cbEnd ends the contexts of the call-scoped callbacks running for
	// this call (set under Peer.mu while the call is in the table); the
	// callbacks end with their call.
	cbCtx context.Context
	cbEnd context.CancelFunc
}

// ended runs when the call left the table: its callbacks end with it.
func (c *call) ended() {
	if c.cbEnd != nil {
		c.cbEnd()
		c.cbCtx, c.cbEnd = nil, nil
	}
}

var callPool = sync.Pool{New: func() any { return &call{ch: make(chan struct{}, 1)} }}

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
		conn: conn, mux: o.Mux, log: log, inlineMax: inl,
		maxHandlers: maxH, sendTimeout: st,
		objects: objectTable{max: maxO, log: log},
		budget:  budget{max: mb},
		peerBye: make(chan struct{}),
		maxMsg:  conn.Info().MaxMessage,
		calls:   map[uint64]*call{},
		serving: map[uint64]*handlerCtx{},
		bgWake:  make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	p.base, p.cancelBase = context.WithCancel(parent)
	guardAdd(p)
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

// Shutdown ends the connection gracefully: it tells the peer (goaway), makes
// no new calls, refuses new incoming ones (callbacks into calls still in
// flight excepted), waits for the calls in flight in both directions to
// finish and for the peer's own goaway (up to a second: after it, none of the
// peer's calls can still be on its way), then closes. If ctx ends first it
// closes anyway and returns ctx's error. Called from one of this Peer's
// handlers, it does not wait for that handler.
func (p *Peer) Shutdown(ctx context.Context) error {
	if p.leaving.Swap(true) {
		select {
		case <-p.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	b := getBuf()
	*b = appendGoAwayBody((*b)[:0], "shutdown", p.lastIn.Load())
	err := p.sendCtx(ctx, kindGoAway, *b, nil)
	putBuf(b)
	if ctx.Err() != nil {
		// The peer did not make room for the goaway in time.
		p.fail(ErrClosed)
		return ctx.Err()
	}
	err = nil // a connection that failed meanwhile ends the wait below
	var self int64
	if hc, ok := ctx.Value(callKey{}).(*handlerCtx); ok && hc.peer == p {
		self = 1
	}
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	grace := time.After(goAwayGrace)
wait:
	for {
		if p.active.Load() <= self && p.npending.Load() == 0 {
			select {
			case <-p.peerBye:
				break wait
			case <-grace:
				break wait
			default:
			}
		}
		select {
		case <-t.C:
		case <-p.peerBye:
		case <-p.done:
			break wait
		case <-ctx.Done():
			err = ctx.Err()
			break wait
		}
	}
	p.fail(ErrClosed)
	return err
}

// postGoAway answers the peer's goaway from the reading goroutine.
func (p *Peer) postGoAway(reason string) {
	b := getBuf()
	*b = appendGoAwayBody((*b)[:0], reason, p.lastIn.Load())
	p.post(kindGoAway, *b, nil)
	putBuf(b)
}

// Call invokes method on the peer with req and returns its reply, a new
// slice. ctx's deadline travels with the call and becomes the handler's;
// cancelling ctx abandons the call and cancels the handler's context.
func (p *Peer) Call(ctx context.Context, method string, req []byte) ([]byte, error) {
	return p.call(ctx, 0, 0, method, req, nil)
}

// CallInto is Call that appends the reply to dst (which may be nil) and
// returns the extended slice: with a dst of enough capacity a call allocates
// nothing.
func (p *Peer) CallInto(ctx context.Context, method string, req, dst []byte) ([]byte, error) {
	if dst == nil {
		dst = []byte{}
	}
	return p.call(ctx, 0, 0, method, req, dst)
}

// CallView is Call that hands the reply to f instead of returning it. When the
// calling goroutine reads its own reply (the usual case for sequential calls)
// f sees the connection's memory itself, with no copy; reply is valid only
// until f returns (and on shared memory the peer can still change it: copy
// what you validate). f's error is CallView's; a panic in f becomes it too.
// f runs while its goroutine holds the connection's reading side: keep it
// short, and do not call this Peer from it.
func (p *Peer) CallView(ctx context.Context, method string, req []byte, f func(reply []byte) error) error {
	_, err := p.callFn(ctx, 0, 0, method, req, nil, f)
	return err
}

// Ping sends a ping and waits for the peer's pong: a round trip through the
// peer's reading loop (not through a handler).
func (p *Peer) Ping(ctx context.Context) error {
	c, id, err := p.register(ctx, 0, true, nil, nil, nil)
	if err != nil {
		return err
	}
	b := getBuf()
	*b = appendID((*b)[:0], id)
	err = p.sendCtx(ctx, kindPing, *b, nil)
	putBuf(b)
	if err != nil {
		p.forget(id, c)
		return p.sendErr(err)
	}
	return p.finish(ctx, id, c, nil)
}

// usable refuses new calls once either side sent goaway, except the calls
// that serve a call still in flight: callbacks, and calls made from one of
// this Peer's handlers.
func (p *Peer) usable(ctx context.Context, flags uint8) error {
	if !p.leaving.Load() && !p.peerLeft.Load() {
		return nil
	}
	if flags&flagCallback != 0 {
		return nil
	}
	if hc, ok := ctx.Value(callKey{}).(*handlerCtx); ok && hc.peer == p && hc.Err() == nil {
		return nil
	}
	return fmt.Errorf("%w: no new calls on this connection", ErrGoAway)
}

// register allocates a call id and records c as waiting for it.
func (p *Peer) register(ctx context.Context, flags uint8, ping bool, dst []byte, cb Handler, fn func([]byte) error) (*call, uint64, error) {
	if err := p.usable(ctx, flags); err != nil {
		return nil, 0, err
	}
	if isDone(ctx.Done()) {
		return nil, 0, ctx.Err()
	}
	c := callPool.Get().(*call)
	select {
	case <-c.ch: // a late signal from the call's previous use
	default:
	}
	c.done.Store(false)
	c.dst, c.reply, c.err, c.cb, c.fn, c.pooled, c.ping = dst, nil, nil, cb, fn, nil, ping
	id := p.nextID.Add(1)
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		putCall(c)
		return nil, 0, err
	}
	p.calls[id] = c
	p.mu.Unlock()
	p.npending.Add(1)
	return c, id, nil
}

// forget removes a call that was never answered. It reports false when an
// answer is being delivered (the caller then waits for c.done).
func (p *Peer) forget(id uint64, c *call) bool {
	p.mu.Lock()
	_, ok := p.calls[id]
	if ok {
		delete(p.calls, id)
	}
	p.mu.Unlock()
	if ok {
		p.npending.Add(-1)
		c.ended()
		putCall(c)
	}
	return ok
}

// putCall returns c to the pool without the caller's buffers and closures.
func putCall(c *call) {
	c.dst, c.reply, c.cb, c.fn, c.pooled = nil, nil, nil, nil, nil
	callPool.Put(c)
}

func (p *Peer) call(ctx context.Context, flags uint8, aux uint64, method string, req, dst []byte) ([]byte, error) {
	return p.callFn(ctx, flags, aux, method, req, dst, nil)
}

func (p *Peer) callFn(ctx context.Context, flags uint8, aux uint64, method string, req, dst []byte, fn func([]byte) error) ([]byte, error) {
	if hc, ok := ctx.Value(callKey{}).(*handlerCtx); ok && hc.view && hc.peer == p {
		return nil, ErrViewCall
	}
	if len(method) > maxMethod {
		return nil, fmt.Errorf("%w: method name of %d bytes (at most %d)", ErrTooLarge, len(method), maxMethod)
	}
	var timeout int64
	if dl, ok := ctx.Deadline(); ok {
		if timeout = int64(time.Until(dl)); timeout <= 0 {
			return nil, context.DeadlineExceeded
		}
	}
	trace := Traceparent(ctx)
	if len(trace) > maxTraceparent {
		trace = ""
	}
	if size := callHeaderSize + len(trace) + len(method) + len(req); p.maxMsg > 0 && size > p.maxMsg {
		return nil, fmt.Errorf("%w: %d-byte call, the connection's limit is %d", ErrTooLarge, size, p.maxMsg)
	}
	cb, _ := ctx.Value(callbackKey{}).(Handler)
	c, id, err := p.register(ctx, flags, false, dst, cb, fn)
	if err != nil {
		return nil, err
	}
	hb := getBuf()
	*hb = appendCall((*hb)[:0], id, timeout, aux, flags, trace, method, nil)
	err = p.sendCtx(ctx, kindCall, *hb, req)
	putBuf(hb)
	if err != nil {
		p.forget(id, c)
		return nil, p.sendErr(err)
	}
	var reply []byte
	err = p.finish(ctx, id, c, &reply)
	return reply, err
}

// finish waits for call id's answer, or abandons it when ctx ends.
func (p *Peer) finish(ctx context.Context, id uint64, c *call, reply *[]byte) error {
	if st := p.await(ctx, c); st != awaitAnswered {
		if p.forget(id, c) {
			var b [idSize]byte
			p.post(kindCancel, appendID(b[:0], id), nil)
			if st == awaitViewCall {
				return ErrViewCall
			}
			return ctx.Err()
		}
		// The answer is being delivered right now: take it.
		for !c.done.Load() {
			<-c.ch
		}
	}
	err := c.err
	if c.pooled != nil {
		if err == nil {
			err = callView(c.fn, c.reply, nil)
		}
		putBuf(c.pooled)
		c.pooled = nil
	}
	if reply != nil {
		*reply = c.reply
	}
	c.dst, c.reply, c.cb, c.fn = nil, nil, nil, nil
	callPool.Put(c)
	return err
}

// Outcomes of await.
const (
	awaitAnswered = iota
	awaitCtxDone
	awaitViewCall // called from a CallView function holding the reading side
)

// await waits until c is answered or ctx ends first. It reads the
// connection itself whenever nobody else does.
func (p *Peer) await(ctx context.Context, c *call) int {
	done := ctx.Done()
	for {
		if c.done.Load() {
			return awaitAnswered
		}
		if isDone(done) {
			return awaitCtxDone
		}
		if p.reading.CompareAndSwap(0, 1) {
			if done != nil {
				p.watch(ctx)
			}
			p.read(done, c, asCaller)
			continue
		}
		p.wantRead.Store(true)
		p.waiters.Add(1)
		if c.done.Load() || p.reading.Load() == 0 {
			p.waiters.Add(-1)
			continue
		}
		if p.viewing.Load() != 0 && inPlaceView() {
			// This goroutine holds the reading side itself, in a
			// CallView function: nobody would ever read our answer.
			p.waiters.Add(-1)
			return awaitViewCall
		}
		select {
		case <-c.ch:
		case <-done:
		}
		p.waiters.Add(-1)
	}
}

// sendCtx sends a call, ping or goaway for a caller, waiting for room only
// as long as ctx lasts: a peer that stops reading cannot hold a caller (or a
// health check) beyond its deadline. A send that ctx cut short fails with
// ctx's error and sent nothing: the connection goes on.
func (p *Peer) sendCtx(ctx context.Context, typ uint16, head, body []byte) error {
	dl, _ := ctx.Deadline()
	err := transport.SendPartsUntil(p.conn, dl, ctx.Done(), typ, head, body)
	if err != nil && (errors.Is(err, transport.ErrTimeout) || errors.Is(err, transport.ErrCanceled)) {
		if e := ctx.Err(); e != nil {
			return e
		}
		if !dl.IsZero() && !time.Now().Before(dl) {
			return context.DeadlineExceeded
		}
	}
	return err
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

// watch makes sure that the end of ctx interrupts a reader blocked in Recv
// (through a read deadline in the past). The registration stays until a
// reader comes with another context, so callers that keep using one context
// (a request's, or a long-lived one with a deadline) register once, not once
// per call: context.AfterFunc allocates and takes the context's lock. A kick
// for a context whose caller is gone is harmless: readers reset the deadline
// and re-check their own context.
func (p *Peer) watch(ctx context.Context) {
	p.kickMu.Lock()
	if p.kickCtx != ctx && !isDone(p.done) {
		if p.kickStop != nil {
			p.kickStop()
		}
		p.kickCtx, p.kickStop = ctx, context.AfterFunc(ctx, p.kickReader)
	}
	p.kickMu.Unlock()
}

// unwatch drops the registration (the Peer is closing).
func (p *Peer) unwatch() {
	p.kickMu.Lock()
	if p.kickStop != nil {
		p.kickStop()
	}
	p.kickCtx, p.kickStop = nil, nil
	p.kickMu.Unlock()
}

// kickReader makes the goroutine blocked in Recv, if any, return so that it
// re-examines why it is reading.
func (p *Peer) kickReader() { _ = p.conn.SetReadDeadline(time.Now()) }

// release gives the reading token back; if callers are waiting for answers,
// the background reader takes it at once.
//
// No caller is left without a reader: a waiter increments waiters (after its
// call was counted in npending) and then re-checks reading; release stores
// reading and then loads waiters and npending. Go's atomics are sequentially
// consistent, so either the waiter sees the token free and takes it, or
// release sees the waiter and its unanswered call and wakes the background
// reader.
func (p *Peer) release() {
	p.reading.Store(0)
	if isDone(p.done) {
		p.releaseClosed()
		return
	}
	if p.waiters.Load() > 0 && p.npending.Load() > 0 {
		select {
		case p.bgWake <- struct{}{}:
		default:
		}
	}
}

// releaseClosed hands a closed connection the message it may still hold, so
// that its memory is released (on shared memory Close defers the unmapping
// to that Release). It takes the token for good: the Peer reads no more.
func (p *Peer) releaseClosed() {
	if p.reading.CompareAndSwap(0, 1) {
		p.conn.Release()
	}
}

// Reader roles: what read may do with what it reads.
const (
	asCaller  = iota // a caller waiting for its own answer
	asPrimary        // the background reader: may run handlers inline
	asRescue         // started by the guard while an inline handler overruns
)

// background reads the connection when no caller does: always on a side that
// only serves, after linger on a side whose callers read their own replies.
func (p *Peer) background() {
	t := time.NewTimer(linger)
	defer t.Stop()
	for {
		if p.reading.CompareAndSwap(0, 1) && p.read(nil, nil, asPrimary) {
			// It yielded to a caller that reads its own replies: leave the
			// connection to it for a while.
			select {
			case <-p.bgWake:
			default:
			}
		}
		if isDone(p.done) {
			p.releaseClosed()
			return
		}
		if p.reading.Load() == 0 && p.waiters.Load() > 0 && p.npending.Load() > 0 {
			continue // a wake-up may have been drained above: look again
		}
		t.Reset(linger)
		select {
		case <-p.bgWake:
		case <-t.C:
		case <-p.done:
		}
	}
}

// rescue reads the connection while the background reader is stuck in an
// inline handler that overran (the guard starts it); it dispatches every
// call to a goroutine and stops once the inline handler has returned.
func (p *Peer) rescue() {
	defer func() {
		p.rescuing.Store(false)
		select {
		case p.bgWake <- struct{}{}: // the background reader takes over
		default:
		}
	}()
	for p.inlineStart.Load() != 0 && !isDone(p.done) {
		if p.reading.CompareAndSwap(0, 1) {
			p.read(nil, nil, asRescue)
			continue
		}
		time.Sleep(guardTick)
	}
}

// read reads and dispatches messages while holding the token: until c is
// answered or ctx ends (a caller), or until a caller wants the token and
// every call has been answered (the background reader, c == nil; it then
// reports true). It returns without the token.
func (p *Peer) read(done <-chan struct{}, c *call, role int) (yielded bool) {
	for {
		switch {
		case isDone(p.done):
			p.release()
			return false
		case role == asCaller:
			if c.done.Load() || isDone(done) {
				p.release()
				return false
			}
		case role == asRescue:
			if p.inlineStart.Load() == 0 {
				p.release()
				return false
			}
		case p.wantRead.Load() && p.npending.Load() == 0:
			// Sequential calls: the caller that found us reading will
			// read its next reply itself. Nobody is waiting, so nobody
			// needs waking.
			p.wantRead.Store(false)
			p.reading.Store(0)
			if p.waiters.Load() > 0 && p.npending.Load() > 0 && p.reading.CompareAndSwap(0, 1) {
				continue // a caller came and parked meanwhile: go on reading
			}
			return true
		}
		m, err := p.conn.Recv()
		if err != nil {
			if errors.Is(err, transport.ErrTimeout) {
				_ = p.conn.SetReadDeadline(time.Time{})
				continue
			}
			p.fail(err)
			p.release()
			return false
		}
		if !p.dispatch(m, c, role) {
			return false
		}
		if p.handed {
			// An answer went to a caller parked on its channel, now
			// runnable on this P (in runnext). Let it run before this
			// goroutine spins in Recv: otherwise it waits until another
			// thread wakes up and steals it, tens of microseconds here.
			p.handed = false
			runtime.Gosched()
		}
	}
}

// dispatch handles one message. It returns false if it gave the reading
// token away (an inline handler ran and someone else went on reading).
// mine is the reading caller's own call (nil for the background reader).
func (p *Peer) dispatch(m transport.Message, mine *call, role int) bool {
	switch m.Type {
	case kindReply, kindError, kindPong:
		id, body, err := parseID(m.Data)
		if err != nil {
			p.corrupt(err)
			return true
		}
		var rerr *Error
		if m.Type == kindError {
			code, msg, details, err := parseErrorBody(body)
			if err != nil {
				p.corrupt(fmt.Errorf("%w: %w", ErrCorrupt, err))
				return true
			}
			rerr = &Error{Code: Code(code), Message: msg, Details: details}
		}
		p.deliver(id, m.Type, body, mine, rerr)
	case kindCall:
		return p.incoming(m.Data, role == asPrimary)
	case kindCancel:
		id, _, err := parseID(m.Data)
		if err != nil {
			p.corrupt(err)
			return true
		}
		p.mu.Lock()
		hc := p.serving[id]
		p.mu.Unlock()
		if hc != nil {
			hc.cancel(context.Canceled)
		}
	case kindPing:
		id, _, err := parseID(m.Data)
		if err != nil {
			p.corrupt(err)
			return true
		}
		var b [idSize]byte
		p.post(kindPong, appendID(b[:0], id), nil)
	case kindGoAway:
		if _, _, err := parseGoAwayBody(m.Data); err != nil {
			p.corrupt(fmt.Errorf("%w: %w", ErrCorrupt, err))
			return true
		}
		if !p.peerLeft.Swap(true) {
			close(p.peerBye)
			// Answer with ours: the peer's Shutdown then knows that none
			// of our calls is still on its way.
			if !p.leaving.Load() {
				p.postGoAway("peer going away")
			}
		}
	default:
		p.corrupt(fmt.Errorf("%w: unknown message type %#x", ErrCorrupt, m.Type))
	}
	return true
}

// deliver hands an answer to the call waiting for it. Answers to calls that
// were abandoned (or never made) are dropped.
func (p *Peer) deliver(id uint64, kind uint16, body []byte, mine *call, rerr *Error) {
	p.mu.Lock()
	c := p.calls[id]
	if c != nil {
		delete(p.calls, id)
	}
	p.mu.Unlock()
	if c == nil {
		return
	}
	p.npending.Add(-1)
	c.ended()
	if c.ping != (kind == kindPong) {
		c.err = fmt.Errorf("%w: answer of type %#x to the wrong kind of request", ErrCorrupt, kind)
		kind = 0
		defer p.corrupt(c.err)
	}
	switch kind {
	case kindReply:
		if c.fn != nil {
			if c == mine {
				// The caller reads its own reply: it sees the
				// connection's memory itself, no copy.
				c.err = callView(c.fn, body, &p.viewing)
			} else {
				c.pooled = getBuf()
				*c.pooled = append((*c.pooled)[:0], body...)
				c.reply = *c.pooled
			}
		} else if c.dst != nil {
			c.reply = append(c.dst, body...)
		} else if len(body) > 0 {
			c.reply = append([]byte(nil), body...)
		}
	case kindError:
		c.err = rerr
	}
	c.done.Store(true)
	if c != mine {
		p.handed = true
	}
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

// callView runs a CallView function on the reply; a panic becomes its
// error, so the reading token and the message are not left behind. viewing
// is non-nil when f runs in place, on the connection's memory, with the
// reading side held: it counts such functions, so that a call made from one
// (which could never read its answer) is recognised (see inPlaceView).
func callView(f func([]byte) error, reply []byte, viewing *atomic.Int32) (err error) {
	if viewing != nil {
		viewing.Add(1)
		defer viewing.Add(-1)
		return callViewInPlace(f, reply)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("protocol: CallView function panicked: %v", r)
		}
	}()
	return f(reply)
}

// callViewInPlace is callView's in-place case; its name in a goroutine's
// stack is how inPlaceView recognises a call made from inside it.
//
//go:noinline
func callViewInPlace(f func([]byte) error, reply []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("protocol: CallView function panicked: %v", r)
		}
	}()
	return f(reply)
}

var stackPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// inPlaceView reports whether the calling goroutine runs inside a CallView
// function that holds the reading side. Go has no goroutine identity, so it
// reads the goroutine's own stack: it runs only on the slow path of a call
// that is about to park while some CallView function runs in place.
func inPlaceView() bool {
	b := stackPool.Get().(*[]byte)
	n := runtime.Stack(*b, false)
	found := bytes.Contains((*b)[:n], []byte("protocol.callViewInPlace("))
	stackPool.Put(b)
	return found
}

// incoming starts serving one call from the peer. Only the background
// reader (primary) runs handlers inline: a caller reading for its own answer
// must not be held up by someone else's handler, nor nest handlers on its
// stack.
func (p *Peer) incoming(data []byte, primary bool) bool {
	h, err := parseCall(data)
	if err != nil {
		p.corrupt(err)
		return true
	}
	if h.id > p.lastIn.Load() {
		p.lastIn.Store(h.id)
	}
	// Counted before the leaving check, so that Shutdown never sees zero
	// calls in flight between the check and the count.
	p.active.Add(1)
	started := false
	defer func() {
		if !started {
			p.active.Add(-1)
		}
	}()
	if p.leaving.Load() && h.flags&flagCallback == 0 {
		p.refuse(h.id, &Error{Code: CodeGoingAway, Message: "the connection is shutting down"})
		return true
	}
	var meth *method
	var cb Handler
	parent := p.base
	switch {
	case h.flags&flagCallback != 0:
		p.mu.Lock()
		if c := p.calls[h.aux]; c != nil && c.cb != nil {
			cb = c.cb
			if c.cbCtx == nil {
				c.cbCtx, c.cbEnd = context.WithCancel(p.base)
			}
			parent = c.cbCtx
		}
		p.mu.Unlock()
		if cb == nil {
			p.refuse(h.id, &Error{Code: CodeUnimplemented, Message: "no callback attached to that call"})
			return true
		}
	case h.flags&(flagObject|flagNew|flagDestroy) != 0:
	default:
		if meth = p.mux.lookup(h.method); meth == nil {
			p.refuse(h.id, &Error{Code: CodeUnimplemented, Message: fmt.Sprintf("unknown method %q", h.method)})
			return true
		}
	}
	if meth != nil && meth.view {
		started = true
		return p.serveView(meth, h)
	}
	inline := primary && meth != nil && p.inlineMax > 0 && meth.slow.Load() == 0 && meth.avg.Load() < p.inlineMax
	if !inline && p.spawned.Load() >= p.maxHandlers {
		p.refuse(h.id, &Error{Code: CodeResourceExhaust, Message: fmt.Sprintf("%d calls are being served already", p.maxHandlers)})
		return true
	}
	if n := int64(len(h.body)); !p.budget.admit(n) {
		p.refuse(h.id, &Error{Code: CodeResourceExhaust, Message: fmt.Sprintf("%d bytes of requests and answers are held already (MaxPendingBytes %d)", p.budget.used.Load(), p.budget.max)})
		return true
	}
	hc := &handlerCtx{parent: parent, peer: p, id: h.id}
	if h.timeout > 0 {
		hc.deadline = time.Now().Add(time.Duration(h.timeout))
	}
	if len(h.trace) > 0 {
		hc.trace = string(h.trace)
	}
	// The request is copied out of the connection's memory: the handler
	// may outlive this message (and on shared memory the peer could change
	// it under the handler's feet).
	req := getBuf()
	*req = append((*req)[:0], h.body...)
	var name string
	if meth == nil && len(h.method) > 0 {
		name = string(h.method)
	}
	p.mu.Lock()
	if _, dup := p.serving[h.id]; dup {
		p.mu.Unlock()
		putBuf(req)
		p.budget.give(int64(len(h.body)))
		p.corrupt(fmt.Errorf("%w: call id %d is already being served", ErrCorrupt, h.id))
		return true
	}
	p.serving[h.id] = hc
	p.mu.Unlock()
	started = true
	job := serveJob{hc: hc, meth: meth, cb: cb, flags: h.flags, aux: h.aux, name: name, req: req, held: int64(len(h.body))}
	if inline {
		// Run it here. The token is given back meanwhile, so a handler
		// that calls back into the peer can read its own answer, and the
		// guard can start another reader if this handler turns out slow.
		p.conn.Release()
		p.inlineMethod.Store(meth)
		p.inlineStart.Store(nanotime())
		guardNotify()
		p.release()
		p.serve(job)
		p.inlineStart.Store(0)
		return p.reading.CompareAndSwap(0, 1)
	}
	p.spawned.Add(1)
	go func() {
		defer p.spawned.Add(-1)
		p.serve(job)
	}()
	return true
}

// serveView runs a view handler on the reading goroutine, on the request in
// the connection's memory, holding the token (and the message) throughout.
func (p *Peer) serveView(meth *method, h callHeader) bool {
	hc := &handlerCtx{parent: p.base, peer: p, id: h.id, view: true}
	if h.timeout > 0 {
		hc.deadline = time.Now().Add(time.Duration(h.timeout))
	}
	if len(h.trace) > 0 {
		hc.trace = string(h.trace)
	}
	p.serve(serveJob{hc: hc, meth: meth, view: h.body})
	return true
}

type serveJob struct {
	hc    *handlerCtx
	meth  *method
	cb    Handler
	flags uint8
	aux   uint64
	name  string
	req   *[]byte
	view  []byte // the request of a view handler, in the connection's memory
	held  int64  // bytes of req counted against the budget
}

var replyPool = sync.Pool{New: func() any { return &Reply{b: make([]byte, 0, 512)} }}

// serve runs one incoming call's handler and sends its answer.
func (p *Peer) serve(j serveJob) {
	id := j.hc.id
	start := nanotime()
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("ringwire: handler panicked", "method", j.methodName(), "panic", r, "stack", string(debug.Stack()))
			p.sendError(j.hc, &Error{Code: CodeInternal, Message: fmt.Sprintf("handler panicked: %v", r)})
		}
		if j.meth != nil {
			j.meth.observe(nanotime() - start)
		}
		p.mu.Lock()
		delete(p.serving, id)
		p.mu.Unlock()
		j.hc.cancel(context.Canceled)
		if j.req != nil {
			putBuf(j.req)
			p.budget.give(j.held)
		}
		p.active.Add(-1)
	}()
	req := j.view
	if j.req != nil {
		req = *j.req
	}
	var out []byte
	var err error
	switch {
	case j.meth != nil && j.meth.rh != nil:
		r := replyPool.Get().(*Reply)
		r.b = appendID(r.b[:0], id)
		r.base = idSize
		if err = j.meth.rh(j.hc, req, r); err == nil {
			p.sendReply(j.hc, r.b, nil)
		}
		if cap(r.b) <= 4<<20 {
			replyPool.Put(r)
		}
		if err == nil {
			return
		}
	case j.meth != nil:
		out, err = j.meth.h(j.hc, req)
	case j.cb != nil:
		out, err = j.cb(j.hc, req)
	default:
		out, err = p.serveObject(j, req)
	}
	if err != nil {
		p.sendError(j.hc, toError(err))
		return
	}
	hb := getBuf()
	*hb = appendID((*hb)[:0], id)
	p.sendReply(j.hc, *hb, out)
	putBuf(hb)
}

func (j *serveJob) methodName() string {
	if j.meth != nil {
		return j.meth.name
	}
	return j.name
}

// sendReply sends a handler's reply (see sendAnswer for its bounds).
func (p *Peer) sendReply(hc *handlerCtx, head, body []byte) {
	err := p.sendAnswer(hc, kindReply, head, body)
	if errors.Is(err, transport.ErrTooLarge) {
		p.sendError(hc, &Error{Code: CodeResourceExhaust, Message: err.Error()})
		return
	}
	p.sent(err)
}

// sendError sends a handler's error.
func (p *Peer) sendError(hc *handlerCtx, e *Error) {
	b := getBuf()
	*b = appendErrorBody(appendID((*b)[:0], hc.id), uint32(e.Code), e.Message, e.Details)
	p.sent(p.sendAnswer(hc, kindError, *b, nil))
	putBuf(b)
}

// refuse answers a call the reading goroutine turns down, without waiting.
func (p *Peer) refuse(id uint64, e *Error) {
	b := getBuf()
	*b = appendErrorBody(appendID((*b)[:0], id), uint32(e.Code), e.Message, e.Details)
	p.post(kindError, *b, nil)
	putBuf(b)
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
	default:
		p.err = fmt.Errorf("%w: %w", ErrPeerGone, cause)
	}
	calls := p.calls
	p.calls = map[uint64]*call{}
	err := p.err
	p.mu.Unlock()

	guardRemove(p)
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
