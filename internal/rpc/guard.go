package rpc

import (
	"sync/atomic"
	"time"
)

// The guard watches handlers that run on the background reader ("inline").
// One that runs longer than guardAfter marks its method slow (its next calls
// get goroutines of their own) and, whenever nobody reads the connection
// meanwhile, starts a rescue reader, so a slow or hung handler stalls its
// connection for about a millisecond at most.
//
// It is one timer per Peer, pushed forward by the inline starts themselves:
// a start finds the timer due at least guardAfter/2 later, or moves it to
// guardAfter after the start (time.Timer.Reset, about 50 ns, so at most
// once per half millisecond of traffic). While handlers keep starting, the
// timer never fires, and nothing wakes up: the process-wide ticker that did
// this before woke a thread every millisecond per process, which cost 4
// plugins a quarter of their calls (docs/benchmarks.md). When it fires, it
// looks at the handler running then: none, and it waits for the next start
// to arm it again; one that started less than guardAfter ago, and it fires
// again when that one reaches guardAfter; one that overran, and it acts,
// then looks again every guardTick until that handler returns.
const (
	guardTick  = time.Millisecond
	guardAfter = time.Millisecond
)

// guardState is a Peer's guard.
type guardState struct {
	timer *time.Timer
	at    atomic.Int64 // nanotime at which timer fires; 0: not armed
}

var epoch = time.Now()

func nanotime() int64 { return int64(time.Since(epoch)) }

// guardInit creates p's guard timer, stopped.
func (p *Peer) guardInit() {
	p.guard.timer = time.AfterFunc(time.Hour, p.guardFire)
	p.guard.timer.Stop()
}

// guardStart is called by the reader as an inline handler starts, at now.
func (p *Peer) guardStart(now int64) {
	if p.guard.at.Load()-now < int64(guardAfter)/2 {
		p.guard.at.Store(now + int64(guardAfter))
		p.guard.timer.Reset(guardAfter)
	}
}

// guardStop stops p's guard for good (the Peer is closing).
func (p *Peer) guardStop() { p.guard.timer.Stop() }

// guardFire runs when the guard timer fires (on a goroutine of its own).
func (p *Peer) guardFire() {
	if isDone(p.done) {
		return
	}
	now := nanotime()
	s := p.inlineStart.Load()
	if s == 0 {
		// Idle: the next inline start arms the timer again. (A start
		// that armed it meanwhile is not undone: it only makes the next
		// start arm it once more.)
		p.guard.at.Store(0)
		return
	}
	if left := s + int64(guardAfter) - now; left > 0 {
		p.guard.at.Store(now + left)
		p.guard.timer.Reset(time.Duration(left))
		return
	}
	// Only the background reader runs handlers inline, one at a time, so
	// one start time per Peer says it all.
	if m := p.inlineMethod.Load(); m != nil {
		m.slow.Store(slowRuns)
	}
	// The inline handler gave the token back before it started; if nobody
	// reads now, a rescue reader does until it returns.
	if p.reading.Load() == 0 && p.rescuing.CompareAndSwap(false, true) {
		go p.rescue()
	}
	p.guard.at.Store(now + int64(guardTick))
	p.guard.timer.Reset(guardTick)
}
