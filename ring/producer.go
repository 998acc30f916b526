package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ringwire/ringwire/internal/streamcopy"
)

// Producer is the writing side of a ring. It is not safe for concurrent use:
// one goroutine writes at a time (serialise with a mutex if needed). Close and
// PeerGone may be called from any goroutine.
type Producer struct {
	g geometry
	w waiter

	tail  uint64 // private end of written records, staged ones included
	pub   uint64 // tail as last published to the consumer
	head  uint64 // consumer position as last read and validated
	res   uint64 // position of the open reservation
	resN  uint64 // payload size of the open reservation
	open  bool   // a reservation is open
	nrecs uint64 // staged records not yet published
	nmsgs uint64 // staged whole messages not yet published
	nbyte uint64 // staged payload bytes not yet published
	err   error  // sticky corruption

	// A fragmented message that StagePartsUntil left open: its first
	// fragment is published, fragLeft bytes of it are still to come (0: none).
	// Only Resume may write until they are.
	fragTyp  uint16
	fragLeft uint64
}

// NewProducer attaches the writing side to an initialised ring in mem.
// Everything in the header is validated once; the producer's position is taken
// from the shared counters, which must be consistent.
func NewProducer(mem []byte, o *Options) (*Producer, error) {
	g, err := attach(mem)
	if err != nil {
		return nil, err
	}
	p := &Producer{g: g}
	p.w.init(g.spaceBell, o.withDefaults())
	p.w.peer = g.dataCPU
	t, h := atomic.LoadUint64(g.tailp), atomic.LoadUint64(g.headp)
	if t%RecordAlign != 0 || h%RecordAlign != 0 || t-h > g.capacity {
		return nil, fmt.Errorf("%w: counters tail=%d head=%d", ErrCorrupt, t, h)
	}
	p.tail, p.pub, p.head = t, t, h
	return p, nil
}

// MaxRecord is the largest payload Reserve accepts.
func (p *Producer) MaxRecord() int { return int(p.g.maxRecord) }

// Capacity is the size of the data area.
func (p *Producer) Capacity() int { return int(p.g.capacity) }

func (p *Producer) fail(err error) error {
	if p.err == nil {
		p.err = err
		p.w.state.CompareAndSwap(stateOpen, stateCorrupt)
	}
	return p.err
}

// refreshHead reads and validates the consumer's position. The consumer can
// only have released what we published, and never goes backwards.
func (p *Producer) refreshHead() error {
	h := atomic.LoadUint64(p.g.headp)
	if h%RecordAlign != 0 || h-p.head > p.pub-p.head {
		return p.fail(fmt.Errorf("%w: consumer position %d outside [%d, %d]", ErrCorrupt, h, p.head, p.pub))
	}
	p.head = h
	return nil
}

// need is the number of free bytes a record of size sz needs at the current
// tail, counting the padding record if it does not fit before the end.
func (p *Producer) need(sz uint64) uint64 {
	if toEnd := p.g.capacity - p.tail&p.g.mask; sz > toEnd {
		return toEnd + sz
	}
	return sz
}

func (p *Producer) free() uint64 { return p.g.capacity - (p.tail - p.head) }

// Reserve opens a record of n payload bytes and returns its payload to fill in
// place. It blocks, spinning then parking, while the ring is full; staged
// records are published before it waits. Finish with Commit (or Abort).
func (p *Producer) Reserve(n int) ([]byte, error) {
	return p.reserve(n, true, limit{})
}

// TryReserve is Reserve that returns ErrFull instead of waiting.
func (p *Producer) TryReserve(n int) ([]byte, error) {
	return p.reserve(n, false, limit{})
}

// ReserveUntil is Reserve with a bound of its own: it waits for room only
// until deadline (the zero time: no bound beyond SetDeadline's) and only while
// cancel (nil: never) is open, and otherwise returns ErrTimeout or ErrCanceled
// with nothing reserved. A deadline that has passed allows one look and no
// waiting. With a cancel channel the waiter sleeps at most CancelPoll at a
// time, so a cancel is noticed within about that long. If there is room it
// neither reads the clock nor looks at cancel.
func (p *Producer) ReserveUntil(n int, deadline time.Time, cancel <-chan struct{}) ([]byte, error) {
	if deadline.IsZero() && cancel == nil {
		return p.reserve(n, true, limit{})
	}
	return p.reserve(n, true, limit{deadline: deadlineNanos(deadline), cancel: cancel})
}

func (p *Producer) reserve(n int, block bool, l limit) ([]byte, error) {
	if p.fragLeft != 0 {
		return nil, p.unfinished()
	}
	return p.reserveRecord(n, block, l)
}

// unfinished is the error for a write while a fragmented message is open.
func (p *Producer) unfinished() error {
	if p.err != nil {
		return p.err
	}
	if st := p.w.state.Load(); st != stateOpen {
		return p.w.stateErr(st) // what ended the message's Resume
	}
	return fmt.Errorf("%w: %d bytes of a fragmented message are still to be written (Resume)", ErrState, p.fragLeft)
}

// reserveRecord is reserve without the check for an open fragmented message
// (the fragment writers use it).
func (p *Producer) reserveRecord(n int, block bool, l limit) ([]byte, error) {
	if p.err != nil {
		return nil, p.err
	}
	if st := p.w.state.Load(); st != stateOpen {
		return nil, p.w.stateErr(st)
	}
	if p.open {
		return nil, fmt.Errorf("%w: Reserve with a reservation open", ErrState)
	}
	if n < 0 || uint64(n) > p.g.maxRecord {
		return nil, fmt.Errorf("%w: record of %d bytes, max %d", ErrTooLarge, n, p.g.maxRecord)
	}
	sz := align8(RecordHeaderSize + uint64(n))
	if need := p.need(sz); need > p.free() {
		if err := p.refreshHead(); err != nil {
			return nil, err
		}
		if need > p.free() {
			if !block {
				return nil, ErrFull
			}
			if err := p.waitFree(need, l); err != nil {
				return nil, err
			}
		}
	}
	if i := p.tail & p.g.mask; sz > p.g.capacity-i {
		// Fill the end with a padding record; the record starts at index 0.
		pad := p.g.capacity - i
		putRecordHeader(p.g.data, i, uint32(pad-RecordHeaderSize), 0, flagPad)
		p.tail += pad
	}
	i := p.tail & p.g.mask
	p.res, p.resN, p.open = p.tail, uint64(n), true
	start := i + RecordHeaderSize
	return p.g.data[start : start+uint64(n) : start+uint64(n)], nil
}

// waitFree publishes what is staged (the consumer cannot free space for records
// it cannot see) and waits until need bytes are free.
func (p *Producer) waitFree(need uint64, l limit) error {
	p.Flush()
	err := p.w.wait(func() bool {
		if p.refreshHead() != nil {
			return true
		}
		return need <= p.free()
	}, l)
	if p.err != nil {
		return p.err
	}
	if errors.Is(err, ErrCorrupt) {
		// The waiter's verdict on our bell sticks like any other.
		return p.fail(err)
	}
	return err
}

// Commit closes the open reservation as a record of type typ holding the first
// n bytes of the reserved payload. The record is staged: the consumer sees it
// at the next Flush, so several commits can be published with one store and
// at most one wake-up.
func (p *Producer) Commit(typ uint16, n int) error {
	return p.commit(typ, n, 0, true)
}

func (p *Producer) commit(typ uint16, n int, flags uint16, whole bool) error {
	if !p.open {
		return fmt.Errorf("%w: Commit without Reserve", ErrState)
	}
	if n < 0 || uint64(n) > p.resN {
		return fmt.Errorf("%w: Commit of %d bytes, reserved %d", ErrState, n, p.resN)
	}
	putRecordHeader(p.g.data, p.res&p.g.mask, uint32(n), typ, flags)
	p.tail = p.res + align8(RecordHeaderSize+uint64(n))
	p.open = false
	p.nrecs++
	if whole {
		p.nmsgs++
	}
	p.nbyte += uint64(n)
	return nil
}

// Abort drops the open reservation. Padding written for it stays staged and
// is harmless.
func (p *Producer) Abort() {
	p.open = false
}

// Flush publishes every staged record with one store of the tail and wakes the
// consumer if, and only if, it announced that it is asleep.
func (p *Producer) Flush() {
	if p.tail == p.pub || p.err != nil {
		return
	}
	publish(p.g.tailp, p.tail)
	p.pub = p.tail
	if wakePeer(p.g.dataBell) {
		p.w.c.wakes.Add(1)
	}
	p.w.c.records.Add(p.nrecs)
	p.w.c.messages.Add(p.nmsgs)
	p.w.c.bytes.Add(p.nbyte)
	p.nrecs, p.nmsgs, p.nbyte = 0, 0, 0
}

// Write copies msg into the ring as one message of type typ and publishes it.
// A message larger than MaxRecord is split into fragments that the consumer
// reassembles; each fragment is published as soon as it is written, so the
// consumer copies out while we copy in.
func (p *Producer) Write(typ uint16, msg []byte) error {
	if err := p.Stage(typ, msg); err != nil {
		return err
	}
	p.Flush()
	return nil
}

// Stage is Write without the final Flush: whole records stay staged so a batch
// of small messages is published together. Fragments of a large message are
// still published as they are written. If waiting for room fails after the
// first fragment went out, the producer is unusable from then on (the rest of
// the message can no longer follow, and another message after half of one
// would break the stream); StagePartsUntil is the form that can be resumed.
func (p *Producer) Stage(typ uint16, msg []byte) error {
	if p.fragLeft != 0 {
		return p.unfinished()
	}
	sent, err := p.stageParts(typ, msg, nil, limit{})
	if err != nil && sent > 0 && p.err == nil {
		p.err = fmt.Errorf("%w (in the middle of a fragmented message: the ring is unusable)", err)
	}
	return err
}

// StagePartsUntil stages head followed by body as one message of type typ, as
// Stage does, waiting for room for each record only within the bound of
// ReserveUntil (deadline, cancel, and SetDeadline's deadline). It returns how
// many bytes of the message went out.
//
// When the bound ends before the first record is reserved, it returns 0 and
// ErrTimeout or ErrCanceled and nothing changed. When it ends after part of a
// fragmented message was published, it returns that part's size and the
// error, and the message stays open: until Resume has written the rest (the
// message from the returned offset on), every other write fails with
// ErrState, so the consumer never sees another message inside this one.
func (p *Producer) StagePartsUntil(typ uint16, head, body []byte, deadline time.Time, cancel <-chan struct{}) (int, error) {
	if p.fragLeft != 0 {
		return 0, p.unfinished()
	}
	return p.stageParts(typ, head, body, limit{deadline: deadlineNanos(deadline), cancel: cancel})
}

// Resume writes rest, the end of the fragmented message that StagePartsUntil
// left open, and publishes it. It waits for room as long as it takes: no
// deadline applies, not even SetDeadline's; only Close, PeerGone or
// corruption end it, and the ring is then unusable anyway.
func (p *Producer) Resume(rest []byte) error {
	if p.fragLeft == 0 || uint64(len(rest)) != p.fragLeft {
		return fmt.Errorf("%w: Resume with %d bytes, %d expected", ErrState, len(rest), p.fragLeft)
	}
	_, err := p.fragments(rest, nil, 0, limit{noSide: true})
	p.Flush()
	return err
}

// Unfinished is the number of bytes still to be written (by Resume) of a
// fragmented message that StagePartsUntil left open; 0 if there is none.
func (p *Producer) Unfinished() int { return int(p.fragLeft) }

// stageParts stages head+body as one message, fragmented if it exceeds a
// record, and returns how many of its bytes went out.
func (p *Producer) stageParts(typ uint16, head, body []byte, l limit) (int, error) {
	n := len(head) + len(body)
	if uint64(n) <= p.g.maxRecord {
		buf, err := p.reserveRecord(n, true, l)
		if err != nil {
			return 0, err
		}
		streamcopy.Copy(buf[streamcopy.Copy(buf, head):], body)
		return n, p.Commit(typ, n)
	}
	// The first fragment carries the total.
	buf, err := p.reserveRecord(int(p.g.maxRecord), true, l)
	if err != nil {
		return 0, err
	}
	binary.LittleEndian.PutUint64(buf, uint64(n))
	k := copyParts(buf[fragHeader:], head, body, 0)
	if err := p.commit(typ, fragHeader+k, flagMore, false); err != nil {
		return 0, err
	}
	p.Flush()
	p.fragTyp, p.fragLeft = typ, uint64(n-k)
	return p.fragments(head, body, k, l)
}

// fragments writes the continuation fragments of the open message from offset
// off of head+body, publishing each but the last as soon as it is written. It
// returns the offset reached.
func (p *Producer) fragments(head, body []byte, off int, l limit) (int, error) {
	for p.fragLeft > 0 {
		k := int(min(p.g.maxRecord, p.fragLeft))
		buf, err := p.reserveRecord(k, true, l)
		if err != nil {
			return off, err
		}
		copyParts(buf, head, body, off)
		off += k
		p.fragLeft -= uint64(k)
		flags := flagCont
		if p.fragLeft > 0 {
			flags |= flagMore
		}
		if err := p.commit(p.fragTyp, k, flags, p.fragLeft == 0); err != nil {
			return off, err
		}
		if p.fragLeft == 0 {
			p.nbyte -= fragHeader // count payload bytes of the message only
			break
		}
		p.Flush()
	}
	return off, nil
}

// copyParts copies head+body, from offset off on, into dst and returns the
// number of bytes copied.
func copyParts(dst, head, body []byte, off int) int {
	n := 0
	if off < len(head) {
		n = streamcopy.Copy(dst, head[off:])
		off = len(head)
	}
	return n + streamcopy.Copy(dst[n:], body[off-len(head):])
}

// SetDeadline bounds how long Reserve and Write wait for space. The zero time
// removes the bound. It may be called from any goroutine, also while a writer
// waits.
func (p *Producer) SetDeadline(t time.Time) { p.w.setDeadline(t) }

// Close stops the producer: waiting and later calls return ErrClosed.
func (p *Producer) Close() error {
	p.w.shutdown(stateClosed)
	return nil
}

// PeerGone marks the consumer as dead: waiting and later calls return
// ErrPeerGone. Liveness watchers call it.
func (p *Producer) PeerGone() { p.w.shutdown(statePeerGone) }

// Stats returns the producer's counters.
func (p *Producer) Stats() Stats { return p.w.stats() }
