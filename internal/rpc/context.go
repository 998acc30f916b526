package rpc

import (
	"context"
	"sync"
	"time"
)

// handlerCtx is the context of one incoming call: it carries the caller's
// deadline, is cancelled by the caller's cancel message or when the connection
// closes, and knows its Peer and call id (for PeerFromContext and Callback).
// It is built by hand instead of with context.WithDeadline/WithCancel so that
// a call that never looks at ctx.Done() costs no timer and no channel.
type handlerCtx struct {
	parent   context.Context // the Peer's base context (cancelled at close)
	peer     *Peer
	id       uint64
	trace    string
	deadline time.Time // zero: none
	view     bool      // a view handler's: it may not call its peer
	reader   bool      // it runs on the reading goroutine: its answer never waits

	mu    sync.Mutex
	done  chan struct{} // created on first Done()
	err   error
	timer *time.Timer
	stop  func() bool // detaches from parent
	after []*afterFunc
}

// afterFunc is one function registered with AfterFunc.
type afterFunc struct{ f func() }

// AfterFunc arranges for f to run in its own goroutine once the context is
// done, and returns a function that cancels that (reporting whether it did).
// The context package finds it, so a context derived from a handler's
// (context.WithTimeout(ctx, …), WithCancel) costs no goroutine of its own.
func (c *handlerCtx) AfterFunc(f func()) (stop func() bool) {
	c.Done() // arm the deadline and the watch on the parent
	a := &afterFunc{f: f}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.after = append(c.after, a)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, x := range c.after {
			if x == a {
				c.after = append(c.after[:i], c.after[i+1:]...)
				return true
			}
		}
		return false
	}
}

func (c *handlerCtx) Deadline() (time.Time, bool) {
	pd, ok := c.parent.Deadline()
	if c.deadline.IsZero() || ok && pd.Before(c.deadline) {
		return pd, ok
	}
	return c.deadline, true
}

func (c *handlerCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
			return c.done
		}
		if !c.deadline.IsZero() {
			c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
		}
		c.stop = context.AfterFunc(c.parent, func() { c.cancel(context.Canceled) })
	}
	return c.done
}

func (c *handlerCtx) Err() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		c.cancel(context.DeadlineExceeded)
		return context.DeadlineExceeded
	}
	if err := c.parent.Err(); err != nil {
		c.cancel(err)
		return err
	}
	return nil
}

func (c *handlerCtx) Value(key any) any {
	switch key {
	case peerKey{}:
		return c.peer
	case callKey{}:
		return c
	}
	return c.parent.Value(key)
}

// cancel ends the context with err (the first error wins).
func (c *handlerCtx) cancel(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.stop != nil {
		c.stop()
	}
	for _, a := range c.after {
		go a.f()
	}
	c.after = nil
}

type peerKey struct{}
type callKey struct{}
type callbackKey struct{}
type traceKey struct{}

// PeerFromContext returns the Peer whose call a handler is serving, so the
// handler can call back into its caller's side.
func PeerFromContext(ctx context.Context) (*Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(*Peer)
	return p, ok
}

// WithCallback returns a context whose calls carry a call-scoped callback: the
// handler serving such a call can invoke h on the caller's side with Callback,
// as often as it likes, until the call returns.
func WithCallback(ctx context.Context, h Handler) context.Context {
	return context.WithValue(ctx, callbackKey{}, h)
}

// WithTraceparent returns a context whose calls carry the W3C traceparent
// header tp to the handler (Traceparent reads it there).
func WithTraceparent(ctx context.Context, tp string) context.Context {
	return context.WithValue(ctx, traceKey{}, tp)
}

// Traceparent returns the traceparent the caller attached to this call, or the
// one attached with WithTraceparent.
func Traceparent(ctx context.Context) string {
	if c, ok := ctx.Value(callKey{}).(*handlerCtx); ok && c.trace != "" {
		return c.trace
	}
	tp, _ := ctx.Value(traceKey{}).(string)
	return tp
}

// Callback invokes the call-scoped callback that the caller of the current
// call attached with WithCallback. ctx must be (or derive from) the handler's
// context. It fails with ErrNoCallback outside a handler and with
// ErrUnknownMethod when the caller attached no callback.
func Callback(ctx context.Context, req []byte) ([]byte, error) {
	c, ok := ctx.Value(callKey{}).(*handlerCtx)
	if !ok {
		return nil, ErrNoCallback
	}
	return c.peer.call(ctx, flagCallback, c.id, "", req, nil)
}
