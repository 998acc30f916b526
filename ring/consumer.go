package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"
	"unsafe"
)

// retainLimit is the largest reassembly buffer a Consumer keeps between
// messages; bigger ones are dropped after Release so one huge message does not
// pin its memory forever.
const retainLimit = 4 << 20

// Record is one message as seen by the consumer. Data aliases the ring (or the
// consumer's reassembly buffer) and is valid only until Release.
type Record struct {
	Type uint16
	Data []byte
}

// Consumer is the reading side of a ring. It is not safe for concurrent use:
// one goroutine reads at a time. Close and PeerGone may be called from any
// goroutine.
type Consumer struct {
	g      geometry
	w      waiter
	maxMsg uint64

	head    uint64 // private: everything before it is released
	next    uint64 // position after the record being held (== head if none)
	tail    uint64 // producer position as last read and validated
	held    bool   // a record from Peek awaits Release
	heldN   uint64 // its payload size, for the counters
	err     error  // sticky corruption
	asm     []byte // reassembly buffer; asm[:asmN] filled so far
	asmN    uint64
	asmTot  uint64 // declared total of the message being reassembled; 0 = none
	asmTyp  uint16
	asmDone bool   // the reassembled message is complete and not yet released
	touched uint64 // sink for the reads of touchNext
}

// NewConsumer attaches the reading side to an initialised ring in mem.
func NewConsumer(mem []byte, o *Options) (*Consumer, error) {
	g, err := attach(mem)
	if err != nil {
		return nil, err
	}
	opt := o.withDefaults()
	c := &Consumer{g: g, maxMsg: uint64(opt.MaxMessage)}
	c.w.init(g.dataBell, opt)
	c.w.self = g.dataCPU
	t, h := atomic.LoadUint64(g.tailp), atomic.LoadUint64(g.headp)
	if t%RecordAlign != 0 || h%RecordAlign != 0 || t-h > g.capacity {
		return nil, fmt.Errorf("%w: counters tail=%d head=%d", ErrCorrupt, t, h)
	}
	c.head, c.next, c.tail = h, h, h
	return c, nil
}

// Capacity is the size of the data area.
func (c *Consumer) Capacity() int { return int(c.g.capacity) }

func (c *Consumer) fail(format string, args ...any) error {
	if c.err == nil {
		c.err = fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
		c.w.state.CompareAndSwap(stateOpen, stateCorrupt)
	}
	return c.err
}

// refreshTail reads and validates the producer's position: aligned, never
// backwards, never more than a capacity ahead of what we released.
func (c *Consumer) refreshTail() error {
	t := atomic.LoadUint64(c.g.tailp)
	if t%RecordAlign != 0 || t-c.head > c.g.capacity || t-c.head < c.tail-c.head {
		return c.fail("producer position %d outside [%d, %d]", t, c.tail, c.head+c.g.capacity)
	}
	c.tail = t
	return nil
}

// ready is the wait condition: a record is visible, or something is wrong.
func (c *Consumer) ready() bool {
	if c.refreshTail() != nil || c.tail != c.next {
		return true
	}
	if touchNext {
		// Also read the line where the next record's header will be: when the
		// producer writes it, our next poll misses on it and on the tail at
		// the same time, so the two transfers overlap instead of the header
		// read waiting for the tail's (about 15% off a cross-process round
		// trip, see docs/benchmarks.md). The value is not used.
		c.touched += atomic.LoadUint64((*uint64)(unsafe.Pointer(&c.g.data[c.next&c.g.mask])))
	}
	return false
}

// Peek returns the next message, waiting for it (spin, then park) if the ring
// is empty. Data stays valid until Release. A fragmented message is
// reassembled into a buffer owned by the consumer, transparently. Messages
// already in the ring are still delivered after the peer is gone; only then
// does Peek return ErrPeerGone.
func (c *Consumer) Peek() (Record, error) {
	for {
		r, ok, err := c.TryPeek()
		if ok || err != nil {
			return r, err
		}
		if err := c.w.wait(c.ready, limit{}); err != nil {
			if c.err == nil && errors.Is(err, ErrCorrupt) {
				// The waiter's verdict on our bell sticks like any other.
				c.err = err
				c.w.state.CompareAndSwap(stateOpen, stateCorrupt)
			}
			if c.err != nil {
				return Record{}, c.err
			}
			return Record{}, err
		}
	}
}

// TryPeek is Peek that returns ok == false instead of waiting. Progress on a
// partly arrived fragmented message is kept across calls.
func (c *Consumer) TryPeek() (Record, bool, error) {
	if c.err != nil {
		return Record{}, false, c.err
	}
	if c.held {
		return Record{}, false, fmt.Errorf("%w: Peek before Release of the previous record", ErrState)
	}
	if c.w.state.Load() == stateClosed {
		return Record{}, false, ErrClosed
	}
	if c.asmDone {
		c.held = true
		return Record{Type: c.asmTyp, Data: c.asm[:c.asmTot:c.asmTot]}, true, nil
	}
	// Each pass consumes a record of at least 8 bytes. A peer that keeps
	// publishing fragments (empty ones, even) could keep the loop going
	// forever, so after a ring's worth of records the call returns; the
	// reassembly goes on at the next one.
	for passes := uint64(0); ; passes++ {
		if c.next == c.tail {
			if passes >= c.g.capacity/RecordAlign {
				return Record{}, false, nil
			}
			if err := c.refreshTail(); err != nil {
				return Record{}, false, err
			}
			if c.next == c.tail {
				if st := c.w.state.Load(); st != stateOpen {
					return Record{}, false, c.w.stateErr(st)
				}
				return Record{}, false, nil
			}
		}
		typ, flags, payload, ok, err := c.record()
		if err != nil {
			return Record{}, false, err
		}
		if !ok {
			// Only padding up to the tail we knew: the producer may have
			// published more since, so look again before reporting nothing.
			continue
		}
		if flags&(flagMore|flagCont) == 0 {
			if c.asmTot != 0 {
				return Record{}, false, c.fail("whole record inside a fragmented message")
			}
			c.held, c.heldN = true, uint64(len(payload))
			return Record{Type: typ, Data: payload}, true, nil
		}
		last, err := c.fragment(typ, flags, payload)
		if err != nil {
			return Record{}, false, err
		}
		c.releaseRecord(false)
		if last {
			c.asmDone, c.held, c.heldN = true, true, c.asmTot
			return Record{Type: c.asmTyp, Data: c.asm[:c.asmTot:c.asmTot]}, true, nil
		}
	}
}

// record validates the record at c.next and returns it, leaving c.next after
// it. A padding record in front of it is checked, released and skipped; ok is
// false when only padding was published up to the tail last read. Bounds: the
// record lies inside the published region and inside the data area, its
// length within the maximum.
func (c *Consumer) record() (typ, flags uint16, payload []byte, ok bool, err error) {
	for pads := 0; ; pads++ {
		avail := c.tail - c.next
		i := c.next & c.g.mask
		length, typ, flags := recordHeader(c.g.data, i)
		if flags&^flagMask != 0 {
			return 0, 0, nil, false, c.fail("record at %d has unknown flags %#x", c.next, flags)
		}
		if flags&flagPad != 0 {
			toEnd := c.g.capacity - i
			if pads > 0 || i == 0 || flags != flagPad || uint64(length) != toEnd-RecordHeaderSize || toEnd > avail {
				return 0, 0, nil, false, c.fail("bad padding record at %d (length %d, %d bytes to the end, %d published)", c.next, length, toEnd, avail)
			}
			c.next += toEnd
			c.head = c.next
			publish(c.g.headp, c.head)
			// The producer may be waiting for exactly this space.
			if wakePeer(c.g.spaceBell) {
				c.w.c.wakes.Add(1)
			}
			if c.next == c.tail {
				return 0, 0, nil, false, nil
			}
			continue
		}
		if uint64(length) > c.g.maxRecord {
			return 0, 0, nil, false, c.fail("record at %d of %d bytes exceeds the maximum %d", c.next, length, c.g.maxRecord)
		}
		sz := align8(RecordHeaderSize + uint64(length))
		if sz > avail || sz > c.g.capacity-i {
			return 0, 0, nil, false, c.fail("record at %d of %d bytes overruns (%d published, %d to the end)", c.next, length, avail, c.g.capacity-i)
		}
		c.next += sz
		start := i + RecordHeaderSize
		return typ, flags, c.g.data[start : start+uint64(length) : start+uint64(length)], true, nil
	}
}

// fragment appends one fragment to the message being reassembled and reports
// whether it was the last. Every size is checked against the declared total and
// MaxMessage before anything grows.
func (c *Consumer) fragment(typ, flags uint16, payload []byte) (bool, error) {
	first := flags&flagCont == 0
	// Every fragment but the last fills its record (the producer writes them
	// so): a peer cannot stretch one message over more than
	// total/MaxRecord+1 records with empty or tiny fragments.
	if flags&flagMore != 0 && uint64(len(payload)) != c.g.maxRecord {
		return false, c.fail("a fragment other than the last carries %d bytes, not a full record of %d", len(payload), c.g.maxRecord)
	}
	if first {
		if c.asmTot != 0 {
			return false, c.fail("new fragmented message before the previous one ended")
		}
		if len(payload) < fragHeader {
			return false, c.fail("first fragment of %d bytes has no length", len(payload))
		}
		total := binary.LittleEndian.Uint64(payload)
		payload = payload[fragHeader:]
		if total > c.maxMsg {
			return false, c.fail("fragmented message of %d bytes exceeds the maximum %d", total, c.maxMsg)
		}
		if total <= uint64(len(payload)) || flags&flagMore == 0 {
			return false, c.fail("first fragment inconsistent with total %d", total)
		}
		c.asmTot, c.asmTyp, c.asmN = total, typ, 0
		if uint64(cap(c.asm)) < min(total, retainLimit) {
			c.asm = make([]byte, 0, min(total, retainLimit))
		}
	} else if c.asmTot == 0 {
		return false, c.fail("continuation fragment without a first fragment")
	} else if typ != c.asmTyp {
		return false, c.fail("fragment type %d inside a message of type %d", typ, c.asmTyp)
	}
	n := uint64(len(payload))
	if n > c.asmTot-c.asmN {
		return false, c.fail("fragments exceed the declared total %d", c.asmTot)
	}
	last := flags&flagMore == 0
	if last != (c.asmN+n == c.asmTot) {
		return false, c.fail("fragments end at %d of a declared %d bytes", c.asmN+n, c.asmTot)
	}
	c.asm = append(c.asm[:c.asmN], payload...)
	c.asmN += n
	return last, nil
}

// releaseRecord frees the space of the records up to c.next and wakes the
// producer if it sleeps waiting for space. whole counts a finished message.
func (c *Consumer) releaseRecord(whole bool) {
	c.head = c.next
	publish(c.g.headp, c.head)
	if wakePeer(c.g.spaceBell) {
		c.w.c.wakes.Add(1)
	}
	c.w.c.records.Add(1)
	if whole {
		c.w.c.messages.Add(1)
		c.w.c.bytes.Add(c.heldN)
	}
}

// Release frees the record returned by the last Peek. Its Data must not be
// used afterwards.
func (c *Consumer) Release() error {
	if !c.held {
		return fmt.Errorf("%w: Release without Peek", ErrState)
	}
	c.held = false
	if c.asmDone {
		// Fragments were released as they were copied.
		c.w.c.messages.Add(1)
		c.w.c.bytes.Add(c.heldN)
		c.asmTot, c.asmN, c.asmDone = 0, 0, false
		if cap(c.asm) > retainLimit {
			c.asm = nil
		}
		return nil
	}
	c.releaseRecord(true)
	return nil
}

// Read copies the next message into buf and returns its type and length. If
// buf is too short it returns io.ErrShortBuffer and the needed length, and the
// message stays in the ring for a later call.
func (c *Consumer) Read(buf []byte) (typ uint16, n int, err error) {
	r, err := c.Peek()
	if err != nil {
		return 0, 0, err
	}
	if len(r.Data) > len(buf) {
		c.unpeek()
		return r.Type, len(r.Data), io.ErrShortBuffer
	}
	n = copy(buf, r.Data)
	return r.Type, n, c.Release()
}

// unpeek returns the held record to the ring without releasing it.
func (c *Consumer) unpeek() {
	c.held = false
	if !c.asmDone {
		c.next = c.head
		return
	}
	// A reassembled message stays complete (asmDone); the next TryPeek
	// returns it again.
}

// Pair tells c that its records answer those of p, a producer on the ring
// going the other way between the same two sides: while c waits, the thread
// it waits for is the peer's consumer of p's ring, and c's waits yield
// their CPU when that thread has been stuck behind them on it (see
// docs/ring.md, "Spin only where the peer can run"). Call it before c and p
// are in use.
func (c *Consumer) Pair(p *Producer) { c.w.peer = p.g.dataCPU }

// SetDeadline bounds how long Peek and Read wait. The zero time removes the
// bound. It may be called from any goroutine, also while a reader waits.
func (c *Consumer) SetDeadline(t time.Time) { c.w.setDeadline(t) }

// Close stops the consumer: waiting and later calls return ErrClosed.
func (c *Consumer) Close() error {
	c.w.shutdown(stateClosed)
	return nil
}

// PeerGone marks the producer as dead. Messages already published can still
// be read; after them Peek returns ErrPeerGone.
func (c *Consumer) PeerGone() { c.w.shutdown(statePeerGone) }

// Stats returns the consumer's counters.
func (c *Consumer) Stats() Stats { return c.w.stats() }
