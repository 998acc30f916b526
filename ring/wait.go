package ring

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/ringwire/ringwire/shm"
)

// Defaults of Options, chosen by BenchmarkPingPong, BenchmarkPaced and the
// comparison suite's load shapes (see docs/benchmarks.md).
const (
	// DefaultSpin is how long a side busy-polls before it parks when its
	// recent waits were long (sparse traffic; see stallSpin for the window
	// while messages come quickly). It must be longer than the peer's
	// wake-up time or both sides fall into the slow park-every-message mode.
	DefaultSpin = 20 * time.Microsecond
	// DefaultAdaptiveSpin caps the adaptive spin window, and with it the CPU a
	// waiter burns per message when traffic is paced (see Options.AdaptiveSpin).
	DefaultAdaptiveSpin = 100 * time.Microsecond
	// DefaultParkTimeout bounds a futex sleep while there is traffic; on
	// an idle side consecutive sleeps double, up to maxParkGrowth times it.
	// A lost wake-up (only a hostile peer can cause one) costs at most
	// that long.
	DefaultParkTimeout = 100 * time.Millisecond
	// maxParkGrowth bounds the growth of consecutive sleeps of one wait
	// (see ParkTimeout): measured by BenchmarkIdle (plugin), an idle host
	// and plugin use 6-7 ms of CPU a second with every sleep at 100 ms,
	// 3.7-4.2 ms with 1 s.
	maxParkGrowth = 10
	// DefaultMaxMessage bounds a reassembled fragmented message.
	DefaultMaxMessage = 256 << 20
)

// Options tune one side of a ring. The zero value selects every default.
type Options struct {
	// Spin is how long a waiting side polls the shared counters before it
	// announces it is asleep and parks on the futex. 0 selects DefaultSpin; a
	// negative value parks at once.
	Spin time.Duration
	// AdaptiveSpin lets the spin window grow up to this bound when the observed
	// gap between messages is shorter than it: the waiter spins for twice the
	// recent average gap, and at least 60 µs (see stallSpin), so paced traffic
	// (a message every 50 µs, say) and a quick exchange whose peer is held
	// off its CPU for a moment are caught while spinning instead of paying a
	// futex wake-up (20-45 µs here).
	// The price is CPU: at most AdaptiveSpin of spinning per wait, i.e. at most
	// one core per waiting side while messages come faster than one per
	// AdaptiveSpin, and nothing beyond Spin once they come slower. 0 selects
	// DefaultAdaptiveSpin; a negative value turns adaptation off.
	AdaptiveSpin time.Duration
	// ParkTimeout bounds a futex sleep. Each further sleep may last twice
	// the one before, up to 10 times ParkTimeout, until a wait ends while
	// spinning again, so an idle side wakes about once a second. 0 selects
	// DefaultParkTimeout.
	ParkTimeout time.Duration
	// MaxMessage bounds a message reassembled from fragments (consumer side).
	// 0 selects DefaultMaxMessage.
	MaxMessage int
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Spin == 0 {
		r.Spin = DefaultSpin
	}
	if r.AdaptiveSpin == 0 {
		r.AdaptiveSpin = DefaultAdaptiveSpin
	}
	if r.ParkTimeout <= 0 {
		r.ParkTimeout = DefaultParkTimeout
	}
	if r.MaxMessage <= 0 {
		r.MaxMessage = DefaultMaxMessage
	}
	return r
}

// Stats counts one side's traffic and waiting. Reading it is safe at any time.
type Stats struct {
	Records    uint64 // records committed (producer) or released (consumer), padding excluded
	Messages   uint64 // whole messages: fragments of one message count once
	Bytes      uint64 // payload bytes of those messages
	SpinWaits  uint64 // waits that ended while spinning
	Parks      uint64 // FUTEX_WAIT calls
	WakesSent  uint64 // FUTEX_WAKE calls issued to the peer
	SpinBudget int64  // current spin window in nanoseconds (adaptive)
	// Handoffs counts the times a waiter left its CPU (moving to another,
	// or with sched_yield) to a peer stuck behind it on that CPU
	// (docs/ring.md).
	Handoffs uint64
}

type counters struct {
	records, messages, bytes ownedCounter
	spinWaits, parks, wakes  ownedCounter
	handoffs                 ownedCounter
	moves                    ownedCounter // hand-offs that moved to another CPU (tests)
}

// ownedCounter is a statistics counter that only its side's goroutine writes
// (with Add) and that any goroutine may read (with Load).
type ownedCounter struct {
	_ [0]atomic.Uint64 // 64-bit alignment for the atomic operations on 32-bit platforms
	v uint64
}

// Load returns the counter's value.
func (c *ownedCounter) Load() uint64 { return atomic.LoadUint64(&c.v) }

// Side states; the first non-open state wins and sticks.
const (
	stateOpen uint32 = iota
	stateClosed
	statePeerGone
	stateCorrupt
)

var epoch = time.Now()

// nanotime is a monotonic clock in nanoseconds.
func nanotime() int64 { return int64(time.Since(epoch)) }

// waiter is the spin-then-park strategy of one side, sleeping on one bell.
//
// The no-lost-wakeup argument. Let C be the condition the waiter waits for (the
// producer's tail moved, or the consumer's head moved) and P the peer that makes
// it true. P does: (1) store the position (publish: a store and a full fence),
// (2) load the bell; if the asleep bit is set, CAS it to (seq+1, awake) and only
// if that CAS succeeds issue FUTEX_WAKE. The waiter does: (a) CAS the asleep bit
// on, giving word v, (b) re-check C with an atomic load, (c) FUTEX_WAIT(bell, v).
// Go's atomics are sequentially consistent (and publish's fence orders its
// store before any later load, see fast_amd64.go), so (1)<(2) and (a)<(b) in
// one total order: either (b) sees the new position and the waiter does not
// sleep, or (2) comes after (a) and sees the bit. In the second case P changes the word;
// if that happens before (c), the kernel sees bell != v and FUTEX_WAIT returns at
// once; if after, the waiter is queued and FUTEX_WAKE releases it. The asleep bit
// lives in the futex word itself and the waker changes the word (seq+1) in the
// same CAS that clears the bit, so a slow waker from an earlier round cannot
// consume a later sleep: its CAS fails against the new word. One sleep gets at
// most one wake. Local events (close, peer death, a new deadline) add seq to the
// word before waking, so they too cannot be missed. A hostile peer rewriting the
// word can at worst delay us by ParkTimeout, never hang us.
//
// A wait's own bound (limit: a deadline and a cancel channel) changes none of
// this: the deadline only shortens the futex timeout, and the cancel channel,
// which nobody can wake a futex for, is polled — before each sleep, every 32
// spins, and with each sleep capped at CancelPoll while there is one — so a
// cancel is seen at most CancelPoll late and a wake-up is never traded for it.
// A waiter that leaves for its bound clears its asleep bit with the same CAS
// as one that leaves on a deadline; if a waker got there first, the bit is
// already clear and the waker's FUTEX_WAKE finds nobody, which is harmless.
type waiter struct {
	bell     *uint32
	spin     int64
	adaptMax int64
	park     time.Duration
	gap      int64         // moving average of wait durations in ns; owner only
	sleep    time.Duration // the next futex sleep's bound (see ParkTimeout); owner only

	deadline atomic.Int64 // nanotime of the deadline; 0 = none
	state    atomic.Uint32
	budgetNs atomic.Int64
	c        counters

	// self is where this side tells the peer which CPU it waits on, and
	// peer where the peer tells us (shared memory, advisory: see here).
	// Either may be nil.
	self, peer *uint32
	told       uint32 // what we last stored in self (never read back from it)
	seen       uint32 // the peer's word at our previous look, this wait
	noYield    int64  // nanotime before which waiters do not yield their CPU to the peer
	moved      int64  // nanotime of our last move to another CPU
}

// The CPU word: the low 12 bits hold 1 + the CPU number (0: unknown), the
// rest a beat the waiter advances at every look while it spins, so that the
// peer can tell a spinning waiter from one that is not running.
const (
	cpuMask = 1<<12 - 1
	cpuBeat = 1 << 12
)

// here notes in self the CPU this thread runs on (and a beat), and reports
// whether the peer is waiting for this very CPU: its word names this CPU and
// has not changed since our previous look. A peer that names our CPU cannot
// be running now (we are), and one that spins elsewhere would have moved its
// beat; so it is descheduled here, or was at its last look, and spinning
// would only delay it. The word is a hint that the peer may have left stale
// or written falsely; either costs us one hand-off, never correctness,
// since the sleep protocol below does not depend on it.
func (w *waiter) here(first bool) bool {
	cpu := cpuNow()
	if cpu == 0 {
		return false
	}
	if w.self != nil {
		w.told = (w.told+cpuBeat)&^cpuMask | cpu
		atomic.StoreUint32(w.self, w.told)
	}
	if w.peer == nil {
		return false
	}
	v, prev := atomic.LoadUint32(w.peer), w.seen
	w.seen = v
	return !first && v == prev && v&cpuMask == cpu
}

func (w *waiter) init(bell *uint32, o Options) {
	w.bell, w.spin, w.park = bell, max(int64(o.Spin), 0), o.ParkTimeout
	w.sleep = w.park
	if o.AdaptiveSpin > 0 {
		w.adaptMax = int64(o.AdaptiveSpin)
	}
	w.budgetNs.Store(w.spin)
}

// A waiter that has found the peer waiting for its CPU for handoffAfter
// leaves it (see here). A hand-off that takes longer than longYield gave the
// CPU to a third thread, not to the peer: waiters then do not hand off for
// yieldBackoff.
//
// A hand-off moves the waiter to another CPU at most once per moveEvery and
// yields in between: where more threads spin than there are CPUs (four
// plugins and their host on two), the other CPU has a spinner of its own and
// moving every time only chases it (4 plugins 28 % fewer calls a second,
// p=0.05, against no loss with the limit; docs/benchmarks.md).
const (
	moveEvery    = 2 * time.Millisecond
	handoffAfter = 5 * time.Microsecond
	longYield    = 500 * time.Microsecond
	yieldBackoff = 20 * time.Millisecond
)

// stallSpin is the least spin window while messages come quickly (the
// average wait is under AdaptiveSpin). A wait that should have been short
// and is late then most often has a running peer held off its CPU for a
// moment (an interrupt, another thread's turn), back within tens of
// microseconds, and a park would add a wake-up of 20-45 µs. 60 µs against
// 20 µs: 4 plugins 50-59 % less time a call, p99s under load halved;
// beyond 60 µs nothing more was gained (docs/benchmarks.md). Sparse traffic
// keeps Spin: its waits are long anyway, and each would burn the longer
// window.
const stallSpin = int64(60 * time.Microsecond)

// budget is the spin window for the next wait.
func (w *waiter) budget() int64 {
	if w.adaptMax > w.spin && w.gap > 0 && w.gap <= w.adaptMax {
		if b := min(max(2*w.gap, stallSpin), w.adaptMax); b > w.spin {
			return b
		}
	}
	return w.spin
}

// observe feeds the duration of a wait that ended with the condition met.
// A wait counts for at most twice AdaptiveSpin: one stall of milliseconds
// in a quick exchange must not hold the window down for the dozens of
// waits it would take the average to forget it.
func (w *waiter) observe(d int64) {
	if w.adaptMax == 0 {
		return
	}
	d = min(d, 2*w.adaptMax)
	w.gap += (d - w.gap) / 8
}

func (w *waiter) stateErr(st uint32) error {
	switch st {
	case stateClosed:
		return ErrClosed
	case statePeerGone:
		return ErrPeerGone
	}
	return ErrCorrupt
}

// setDeadline sets the deadline for waits (zero time: none) and kicks a
// sleeping waiter so it recomputes its timeout.
func (w *waiter) setDeadline(t time.Time) {
	w.deadline.Store(deadlineNanos(t))
	w.kick()
}

// shutdown moves the side to a terminal state and wakes every waiter.
func (w *waiter) shutdown(st uint32) {
	w.state.CompareAndSwap(stateOpen, st)
	w.kick()
}

// kick changes the bell word and wakes its sleepers: whoever is about to sleep
// on the old value returns at once, whoever sleeps is woken.
func (w *waiter) kick() {
	atomic.AddUint32(w.bell, bellSeq)
	_, _ = shm.FutexWake(w.bell, 1<<30)
}

// CancelPoll is the longest a waiter with a cancel channel sleeps between two
// looks at it, so a closed channel is noticed within about this long.
const CancelPoll = time.Millisecond

// limit is one wait's own bound, on top of the side's deadline.
type limit struct {
	deadline int64           // nanotime; 0: none
	cancel   <-chan struct{} // nil: never
	noSide   bool            // the side's deadline (SetDeadline) does not apply
}

// deadlineNanos converts t for limit.deadline (the zero time: 0).
func deadlineNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(int64(t.Sub(epoch)), 1)
}

// until is the deadline in force for a wait: the earlier of its own and the
// side's (read anew each time: SetDeadline may change it during the wait).
func (w *waiter) until(l *limit) int64 {
	dl := l.deadline
	if !l.noSide {
		if sd := w.deadline.Load(); sd != 0 && (dl == 0 || sd < dl) {
			dl = sd
		}
	}
	return dl
}

// closed reports whether the cancel channel c is closed (nil: never).
func closed(c <-chan struct{}) bool {
	if c == nil {
		return false
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// maxBellRetries bounds CAS retries on a bell word. A well-behaved peer changes
// our bell at most once per sleep, so more failures than this mean the peer is
// rewriting it.
const maxBellRetries = 64

// wait spins, then parks, until ready reports true, the side closes, or l's
// bound ends (ErrTimeout, ErrCanceled). ready must be cheap and must return
// true as well when it has found corruption (the caller then reports it). A
// deadline of l that has passed already allows one look and no waiting.
func (w *waiter) wait(ready func() bool, l limit) error {
	err := w.waitLoop(ready, l)
	if w.told&cpuMask != 0 {
		// No longer waiting: what this thread does next (the handler,
		// the reply) may run anywhere, and a peer that saw our CPU here
		// must not take us for descheduled there.
		w.told &^= cpuMask
		atomic.StoreUint32(w.self, w.told)
	}
	return err
}

func (w *waiter) waitLoop(ready func() bool, l limit) error {
	start := nanotime()
	if l.deadline != 0 && start >= l.deadline {
		if ready() {
			return nil
		}
		return ErrTimeout
	}
	budget := w.budget()
	w.budgetNs.Store(budget)
	// now is the clock as of the last check, at most 32 polls old: a message
	// found while spinning is timed with it, which keeps a clock read (about
	// 30 ns here) off the path from the message's arrival to its handling.
	now, stuck := start, int64(0) // stuck: since when the peer waits for our CPU
	for i := uint32(1); ; i++ {
		if ready() {
			w.c.spinWaits.Add(1)
			w.observe(now - start)
			w.sleep = w.park
			return nil
		}
		if i%32 == 0 {
			if st := w.state.Load(); st != stateOpen {
				return w.stateErr(st)
			}
			if closed(l.cancel) {
				return ErrCanceled
			}
			now = nanotime()
			if dl := w.until(&l); dl != 0 && now >= dl {
				return ErrTimeout
			}
			if now-start >= budget {
				break
			}
			if !w.here(i == 32) {
				stuck = 0
			} else if stuck == 0 {
				stuck = now
			} else if now-stuck >= int64(handoffAfter) && now >= w.noYield {
				// The peer has been waiting for this CPU for longer than
				// the kernel takes to move one of us to an idle one:
				// leave it to the peer. Moving to another CPU lets both
				// run (with the other CPU idle, or busy with a process
				// the kernel can share it with); a yield, where no other
				// CPU is allowed or we moved less than moveEvery ago,
				// trades this one. A hand-off that lasts means a third
				// thread ran here (another process's time slice): stop
				// handing off for a while, the futex serves better then.
				w.c.handoffs.Add(1)
				if now-w.moved >= int64(moveEvery) && moveOff() {
					w.moved = now
					w.c.moves.Add(1)
				} else {
					osYield()
				}
				if d := nanotime() - now; d > int64(longYield) {
					w.noYield = now + d + int64(yieldBackoff)
				}
				stuck = 0
			}
			// Let the other goroutines of this process run: the one that
			// will produce what we wait for may be among them.
			runtime.Gosched()
		}
		pause()
	}
	retries := 0
	for {
		v := atomic.LoadUint32(w.bell)
		if v&bellAsleep == 0 {
			if !atomic.CompareAndSwapUint32(w.bell, v, v|bellAsleep) {
				if retries++; retries > maxBellRetries {
					return fmt.Errorf("%w: the peer keeps rewriting our futex word", ErrCorrupt)
				}
				continue
			}
			v |= bellAsleep
		}
		if ready() {
			atomic.CompareAndSwapUint32(w.bell, v, v&^bellAsleep)
			w.observe(nanotime() - start)
			return nil
		}
		if st := w.state.Load(); st != stateOpen {
			return w.stateErr(st)
		}
		if closed(l.cancel) {
			atomic.CompareAndSwapUint32(w.bell, v, v&^bellAsleep)
			return ErrCanceled
		}
		// Each sleep may last twice the one before, from ParkTimeout up
		// to maxParkGrowth times it, until a wait ends while spinning
		// (traffic again): an idle connection then costs one wake-up a
		// second per waiting side, not ten.
		timeout := w.sleep
		w.sleep = min(2*w.sleep, maxParkGrowth*w.park)
		if dl := w.until(&l); dl != 0 {
			left := time.Duration(dl - nanotime())
			if left <= 0 {
				atomic.CompareAndSwapUint32(w.bell, v, v&^bellAsleep)
				return ErrTimeout
			}
			timeout = min(timeout, left)
		}
		if l.cancel != nil {
			timeout = min(timeout, CancelPoll)
		}
		w.c.parks.Add(1)
		if err := shm.FutexWait(w.bell, v, timeout); errors.Is(err, shm.ErrUnsupported) {
			time.Sleep(min(timeout, 200*time.Microsecond))
		}
	}
}

// wakePeer wakes the peer sleeping on bell, if and only if it announced sleep.
// It reports whether it issued FUTEX_WAKE.
func wakePeer(bell *uint32) bool {
	for range 8 {
		v := atomic.LoadUint32(bell)
		if v&bellAsleep == 0 {
			return false
		}
		if atomic.CompareAndSwapUint32(bell, v, (v+bellSeq)&^bellAsleep) {
			_, _ = shm.FutexWake(bell, 1)
			return true
		}
	}
	// The word keeps changing under us (a kick from the peer's own side, or a
	// hostile peer): wake anyway, a spurious wake-up is harmless.
	_, _ = shm.FutexWake(bell, 1)
	return true
}

func (w *waiter) stats() Stats {
	return Stats{
		Records:    w.c.records.Load(),
		Messages:   w.c.messages.Load(),
		Bytes:      w.c.bytes.Load(),
		SpinWaits:  w.c.spinWaits.Load(),
		Parks:      w.c.parks.Load(),
		WakesSent:  w.c.wakes.Load(),
		SpinBudget: w.budgetNs.Load(),
		Handoffs:   w.c.handoffs.Load(),
	}
}
