package rpc

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// departure is goaway in both directions. Its invariants: leaving and
// peerLeft only go from false to true; once either is true no new call is
// made except those serving a call still in flight (callbacks, calls from
// handlers); peerBye is closed exactly once, when the peer's goaway
// arrives; lastIn is the highest call id the peer sent, which our goaway
// reports.
type departure struct {
	leaving  atomic.Bool   // we sent goaway: refuse new incoming calls, make no new ones
	peerLeft atomic.Bool   // the peer sent goaway: make no new calls
	peerBye  chan struct{} // closed when the peer's goaway arrives
	lastIn   atomic.Uint64
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
