package duplex

import "sync/atomic"

// Side names one ring of an End for Enter and Exit.
type Side uint8

const (
	// TxSide is the ring this side writes: senders, the write deadline.
	TxSide Side = iota
	// RxSide is the ring this side reads: the reader, a held message, the
	// read deadline.
	RxSide
)

// lifetime is the one owner of an End's mapped memory.
//
// The invariant: the rings stay mapped while any reference is held, and they
// are unmapped exactly once, by whoever drops the last reference after Close.
// Every entry into the rings holds a reference for as long as it touches them
// (sends, receives, a received message still held, deadline changes, the
// wake-ups of Close and of the liveness watcher); enter fails once Close has
// begun, so no new entry can start. The End's own reference is dropped by
// Close, after it has woken every waiter.
//
// References are counted per side, each count on its own cache line, so the
// senders and the reader never write the same line on their hot paths. A
// count holds refs<<1 | closed, starting at the End's own reference; the last
// side to drain (closed and no references) unmaps.
type lifetime struct {
	sides [2]refCount
	live  atomic.Int32 // sides not yet drained
	free  func()       // unmaps; run once, by the last exit
}

type refCount struct {
	n atomic.Int64
	_ [120]byte // one count a cache line (128 bytes with the adjacent-line prefetch)
}

const (
	closedBit = 1
	oneRef    = 2
)

func (l *lifetime) init(free func()) {
	for i := range l.sides {
		l.sides[i].n.Store(oneRef)
	}
	l.live.Store(int32(len(l.sides)))
	l.free = free
}

// enter takes a reference on side s, or reports false once Close has begun.
func (l *lifetime) enter(s Side) bool {
	c := &l.sides[s].n
	for {
		n := c.Load()
		if n&closedBit != 0 {
			return false
		}
		if c.CompareAndSwap(n, n+oneRef) {
			return true
		}
	}
}

// exit drops a reference taken by enter; the last one after close unmaps,
// and reports that it did.
func (l *lifetime) exit(s Side) bool {
	if l.sides[s].n.Add(-oneRef) == closedBit {
		// The End's own reference is dropped only after close, so a count
		// reaches zero only once it is closed, and never rises again.
		if l.live.Add(-1) == 0 {
			l.free()
			return true
		}
	}
	return false
}

// close makes every later enter fail. It reports whether it was the first
// call; only that one may drop the End's own references (with exit).
func (l *lifetime) close() bool {
	// The first to set the bit on side 0 is the first call.
	first := l.sides[0].n.Or(closedBit)&closedBit == 0
	for i := 1; i < len(l.sides); i++ {
		l.sides[i].n.Or(closedBit)
	}
	return first
}
