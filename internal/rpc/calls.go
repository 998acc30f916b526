package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringwire/ringwire/internal/sendparts"
	"github.com/ringwire/ringwire/internal/transport"
)

// callTable is the calls this side made that await an answer. Its
// invariants, under mu:
//
//   - a call is in calls from its registration until exactly one of
//     deliver (its answer came), forget (its caller gave up) or fail (the
//     Peer ended) takes it out; whoever takes it out completes it, and only
//     then may its caller reuse it;
//   - npending == len(calls) (kept outside mu for the readers' fast checks);
//   - err is set once, when the Peer fails or closes; after it no call is
//     registered.
type callTable struct {
	nextID   atomic.Uint64
	mu       sync.Mutex
	calls    map[uint64]*call
	err      error
	npending atomic.Int32

	// One call record and one header buffer kept by the Peer in front of
	// the shared pools: garbage collection empties a sync.Pool, and a
	// program that collects often (large replies) would refill it on
	// nearly every call. Sequential callers always find them here.
	spareCall atomic.Pointer[call]
	spareHead atomic.Pointer[[]byte]
}

// getCall returns a call record, the Peer's spare if it is free.
func (t *callTable) getCall() *call {
	if c := t.spareCall.Swap(nil); c != nil {
		return c
	}
	return callPool.Get().(*call)
}

// putCall gives c back, without the caller's buffers and closures.
func (t *callTable) putCall(c *call) {
	c.dst, c.reply, c.cb, c.fn, c.pooled = nil, nil, nil, nil, nil
	if !t.spareCall.CompareAndSwap(nil, c) {
		callPool.Put(c)
	}
}

// getHead returns an empty buffer for a call's header.
func (t *callTable) getHead() *[]byte {
	if b := t.spareHead.Swap(nil); b != nil {
		return b
	}
	return getBuf()
}

// putHead gives a header buffer back.
func (t *callTable) putHead(b *[]byte) {
	*b = (*b)[:0]
	if cap(*b) > 4<<10 || !t.spareHead.CompareAndSwap(nil, b) {
		putBuf(b)
	}
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

// register allocates a call id and records c as waiting for it.
func (p *Peer) register(ctx context.Context, flags uint8, ping bool, dst []byte, cb Handler, fn func([]byte) error) (*call, uint64, error) {
	if err := p.usable(ctx, flags); err != nil {
		return nil, 0, err
	}
	if isDone(ctx.Done()) {
		return nil, 0, ctx.Err()
	}
	c := p.getCall()
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
		p.putCall(c)
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
		p.putCall(c)
	}
	return ok
}

func (p *Peer) call(ctx context.Context, flags uint8, aux uint64, method string, req, dst []byte) ([]byte, error) {
	return p.callFn(ctx, flags, aux, method, req, dst, nil)
}

func (p *Peer) callFn(ctx context.Context, flags uint8, aux uint64, method string, req, dst []byte, fn func([]byte) error) ([]byte, error) {
	if len(p.intercept) > 0 {
		var reply []byte
		err := chainClient(p.intercept, ctx, method, req, func(ctx context.Context) (err error) {
			reply, err = p.callDirect(ctx, flags, aux, method, req, dst, fn)
			return err
		})
		return reply, err
	}
	return p.callDirect(ctx, flags, aux, method, req, dst, fn)
}

func (p *Peer) callDirect(ctx context.Context, flags uint8, aux uint64, method string, req, dst []byte, fn func([]byte) error) ([]byte, error) {
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
	hb := p.getHead()
	*hb = appendCall((*hb)[:0], id, timeout, aux, flags, trace, method, nil)
	err = p.sendCtx(ctx, kindCall, *hb, req)
	p.putHead(hb)
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
	p.putCall(c)
	return err
}

// sendCtx sends a call, ping or goaway for a caller, waiting for room only
// as long as ctx lasts: a peer that stops reading cannot hold a caller (or a
// health check) beyond its deadline. A send that ctx cut short fails with
// ctx's error and sent nothing: the connection goes on.
func (p *Peer) sendCtx(ctx context.Context, typ uint16, head, body []byte) error {
	dl, _ := ctx.Deadline()
	err := sendparts.Until(p.conn, dl, ctx.Done(), typ, head, body)
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
	found := bytes.Contains((*b)[:n], []byte("ringwire/internal/rpc.callViewInPlace("))
	stackPool.Put(b)
	return found
}
