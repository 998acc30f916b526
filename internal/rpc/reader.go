package rpc

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringwire/ringwire/internal/transport"
)

// readToken decides who reads the connection: callers read their own
// answers, the background reader reads when no caller does, and a rescue
// reader (guard.go) reads while an inline handler overruns. Its invariants:
//
//   - whoever swaps reading from 0 to 1 holds the token and is the only
//     goroutine in Recv or holding a received message, until release;
//   - no caller waits without a reader: a waiter increments waiters and
//     then re-checks reading; release stores reading and then loads waiters
//     (see release);
//   - the token holder never waits to send (what it must send goes through
//     post, sending.go), so two peers flooding each other cannot deadlock;
//   - a CallView function or view handler that runs on the held message
//     cannot call its own Peer: it would wait for a reader forever
//     (ErrViewCall).
type readToken struct {
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
	guard        guardState // watches inline handlers (guard.go)
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
		p.serveMu.Lock()
		hc := p.serving[id]
		p.serveMu.Unlock()
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
