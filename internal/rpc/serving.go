package rpc

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringwire/ringwire/internal/transport"
)

// servingTable is the peer's calls this side serves. Its invariants:
//
//   - a call is in serving (under serveMu) from its acceptance until its
//     handler returned; a second call with the same id is a protocol
//     violation;
//   - active counts accepted calls until their answer went out (Shutdown
//     waits for it to drain), spawned those on goroutines of their own
//     (at most maxHandlers);
//   - the bytes of every request copied for a handler, and of every answer
//     that has to wait for room, are counted in budget until released; a
//     call that does not fit is refused at once.
type servingTable struct {
	serveMu     sync.Mutex
	serving     map[uint64]*handlerCtx
	active      atomic.Int64
	spawned     atomic.Int64
	maxHandlers int64
	budget      budget
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
	view := meth != nil && meth.view
	if view && !p.out.busy() {
		started = true
		return p.serveView(meth, h)
	}
	// A view call while the outbox holds answers the peer has not made room
	// for is served like any other call (a copy of its request, a goroutine,
	// the budget): its reply would make this reader wait for room, and two
	// peers flooding each other would then both stop reading.
	inline := !view && primary && meth != nil && p.inlineMax > 0 && meth.slow.Load() == 0 && meth.avg.Load() < p.inlineMax
	if !inline && p.spawned.Load() >= p.maxHandlers {
		p.refuse(h.id, &Error{Code: CodeResourceExhaust, Message: fmt.Sprintf("%d calls are being served already", p.maxHandlers)})
		return true
	}
	if n := int64(len(h.body)); !p.budget.admit(n) {
		p.refuse(h.id, &Error{Code: CodeResourceExhaust, Message: fmt.Sprintf("%d bytes of requests and answers are held already (MaxPendingBytes %d)", p.budget.used.Load(), p.budget.max)})
		return true
	}
	hc := &handlerCtx{parent: parent, peer: p, id: h.id, view: view}
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
	p.serveMu.Lock()
	if _, dup := p.serving[h.id]; dup {
		p.serveMu.Unlock()
		putBuf(req)
		p.budget.give(int64(len(h.body)))
		p.corrupt(fmt.Errorf("%w: call id %d is already being served", ErrCorrupt, h.id))
		return true
	}
	p.serving[h.id] = hc
	p.serveMu.Unlock()
	started = true
	job := serveJob{hc: hc, meth: meth, cb: cb, flags: h.flags, aux: h.aux, name: name, req: req, held: int64(len(h.body))}
	if inline {
		// Run it here. The token is given back meanwhile, so a handler
		// that calls back into the peer can read its own answer, and the
		// guard can start another reader if this handler turns out slow.
		p.conn.Release()
		p.inlineMethod.Store(meth)
		now := nanotime()
		p.inlineStart.Store(now)
		p.guardStart(now)
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
	hc := &handlerCtx{parent: p.base, peer: p, id: h.id, view: true, reader: true}
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
		p.serveMu.Lock()
		delete(p.serving, id)
		p.serveMu.Unlock()
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
	var (
		out  []byte
		err  error
		sent bool // a ReplyHandler's reply went out
	)
	if icpt := p.mux.interceptors(); len(icpt) > 0 {
		out, sent, err = p.intercepted(icpt, j, req)
	} else {
		out, sent, err = p.invoke(j, j.hc, req)
	}
	if sent {
		return
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

// invoke runs j's handler on req with ctx. A ReplyHandler's reply is sent
// here (sent); any other handler's is returned.
func (p *Peer) invoke(j serveJob, ctx context.Context, req []byte) (out []byte, sent bool, err error) {
	switch {
	case j.meth != nil && j.meth.rh != nil:
		r := replyPool.Get().(*Reply)
		r.b = appendID(r.b[:0], j.hc.id)
		r.base = idSize
		if err = j.meth.rh(ctx, req, r); err == nil {
			p.sendReply(j.hc, r.b, nil)
			sent = true
		}
		if cap(r.b) <= 4<<20 {
			replyPool.Put(r)
		}
	case j.meth != nil:
		out, err = j.meth.h(ctx, req)
	case j.cb != nil:
		out, err = j.cb(ctx, req)
	default:
		out, err = p.serveObject(j, req)
	}
	return out, sent, err
}

// intercepted is invoke inside the Mux's interceptors; their verdict is the
// call's error.
func (p *Peer) intercepted(icpt []ServerInterceptor, j serveJob, req []byte) (out []byte, sent bool, err error) {
	err = chainServer(icpt, j.hc, j.methodName(), req, func(ctx context.Context) error {
		var herr error
		out, sent, herr = p.invoke(j, ctx, req)
		return herr
	})
	return out, sent, err
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

// budget bounds the bytes the peer can make this side hold: requests
// copied for running handlers, and answers waiting to be sent.
type budget struct {
	used atomic.Int64
	max  int64
}

// admit takes n bytes for a request if they fit, or if nothing is held (so
// one message of any size the connection allows is always served).
func (b *budget) admit(n int64) bool {
	for {
		u := b.used.Load()
		if u > 0 && u+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// take counts n bytes that are held already (a reply that has to wait).
func (b *budget) take(n int64) { b.used.Add(n) }

// give returns n bytes.
func (b *budget) give(n int64) { b.used.Add(-n) }
