package protocol

import (
	"sync"
	"sync/atomic"
	"time"
)

// The guard watches handlers that run on the background reader ("inline").
// One that runs longer than guardAfter marks its method slow (its next calls
// get goroutines of their own) and, whenever nobody reads the connection
// meanwhile, starts a rescue reader, so a slow or hung handler stalls its
// connection for about a millisecond at most. It is one goroutine for the process, ticking
// only while inline handlers have run recently: idle, it costs nothing.
const (
	guardTick  = time.Millisecond
	guardAfter = time.Millisecond
	guardIdle  = 200 // ticks without inline work before the guard parks
)

var guard struct {
	mu      sync.Mutex
	peers   map[*Peer]struct{}
	running bool
	parked  atomic.Bool
	wake    chan struct{}
	last    atomic.Int64 // nanotime of the last inline start
}

var epoch = time.Now()

func nanotime() int64 { return int64(time.Since(epoch)) }

func guardAdd(p *Peer) {
	guard.mu.Lock()
	defer guard.mu.Unlock()
	if guard.peers == nil {
		guard.peers = map[*Peer]struct{}{}
		guard.wake = make(chan struct{}, 1)
	}
	guard.peers[p] = struct{}{}
	if !guard.running {
		guard.running = true
		guard.parked.Store(true)
		go guardLoop()
	}
}

func guardRemove(p *Peer) {
	guard.mu.Lock()
	delete(guard.peers, p)
	guard.mu.Unlock()
}

// guardNotify is called as an inline handler starts.
func guardNotify() {
	guard.last.Store(nanotime())
	if guard.parked.Load() && guard.parked.CompareAndSwap(true, false) {
		select {
		case guard.wake <- struct{}{}:
		default:
		}
	}
}

func guardLoop() {
	var t *time.Ticker
	for {
		if guard.parked.Load() {
			if t != nil {
				t.Stop()
				t = nil
			}
			<-guard.wake
			continue
		}
		if t == nil {
			t = time.NewTicker(guardTick)
		}
		<-t.C
		now := nanotime()
		guard.mu.Lock()
		for p := range guard.peers {
			// Only the background reader runs handlers inline, one at a
			// time, so one start time per Peer says it all. An overrun is
			// looked at on every tick until the handler returns.
			s := p.inlineStart.Load()
			if s == 0 || now-s < int64(guardAfter) {
				continue
			}
			if m := p.inlineMethod.Load(); m != nil {
				m.slow.Store(slowRuns)
			}
			// The inline handler gave the token back before it started; if
			// nobody reads now, a rescue reader does until it returns.
			if p.reading.Load() == 0 && p.rescuing.CompareAndSwap(false, true) {
				go p.rescue()
			}
		}
		guard.mu.Unlock()
		if now-guard.last.Load() > guardIdle*int64(guardTick) {
			guard.parked.Store(true)
			// An inline start between the check and the store finds the
			// guard parked and wakes it.
			if nanotime()-guard.last.Load() <= guardIdle*int64(guardTick) && guard.parked.CompareAndSwap(true, false) {
				continue
			}
		}
	}
}
