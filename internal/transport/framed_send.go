package transport

// The framed transport's send path: every send is bounded, the socket write
// is not.
//
// A send encodes its frames (header in a small scratch buffer, payload
// referenced, or compressed into a pooled buffer) and then either writes
// them itself or hands them to the connection's send queue (a large frame
// to be compressed first waits for room for its raw size and compresses
// within that room, so senders waiting for room are not compressing):
//
//   - Direct. When nothing is queued, no write is in progress and nc is a
//     Unix or TCP socket, the sender makes ONE non-blocking writev of its
//     frames, zero-copy. What the socket did not take (all of it on EAGAIN)
//     is copied into the front of the queue for the writer goroutine. The
//     uncontended path thus costs one syscall and no goroutine hand-off.
//   - Queued. Otherwise the frames are copied into the queue (small ones
//     packed into shared chunks, large ones into a buffer of their own;
//     compressed payloads are handed over without a copy). The queue holds
//     at most framedSendBuf bytes: a send waits for room (queued + its bytes
//     within the budget, or the queue empty, so one message larger than the
//     budget is taken whole when the queue is empty), in arrival order, and
//     only until its deadline, its cancel channel or the write deadline;
//     then it fails with ErrTimeout or ErrCanceled having sent nothing.
//
// Once a send's frames are written or queued they belong to the connection
// and the send returns nil. One writer goroutine a connection, started when
// something is queued and gone when the queue is empty, drains the queue
// with blocking writes (writev on sockets, Write on TLS and other conns);
// the socket never gets a write deadline, so a frame is never cut and TLS
// stays usable. A peer that stops reading thus costs a sender at most its
// bound, and the connection at most framedSendBuf plus one send (one
// message, or one batch) of buffered bytes (wheld counts them).

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/ringwire/ringwire/internal/sendparts"
)

const (
	// framedSendBuf is the send queue's budget in bytes.
	framedSendBuf = 4 << 20
	// framedChunk is the size of the shared chunks that small frames are
	// packed into; sends of at most framedSmallCopy bytes go there, larger
	// ones get a buffer of their own.
	framedChunk     = 64 << 10
	framedSmallCopy = 16 << 10
	// framedWriteMax is the most the writer hands one Write on conns
	// without writev, so room in the queue frees as the peer reads.
	framedWriteMax = 256 << 10
)

// frameReq is one send's frames on their way to the socket.
type frameReq struct {
	hdr    []byte       // 12 bytes of header scratch per frame
	bufs   [][]byte     // pieces to write, in order
	own    []*[]byte    // per piece: the pooled buffer holding it (compressed frames), else nil
	chunks []frameChunk // scratch for the queued copy
	wire   int          // bytes of bufs
	msgs   int          // frames
	raw    int          // payload bytes before compression
}

// frameChunk is a pooled buffer in the send queue; b is its unwritten part.
type frameChunk struct {
	p *[]byte
	b []byte
}

// frameWaiter is a send waiting for room in the queue.
type frameWaiter struct {
	ready chan struct{} // poked (capacity 1) when the sender should look again
}

var frameReqPool = sync.Pool{New: func() any { return new(frameReq) }}

// Send sends one message; data may be reused when Send returns. Only the
// write deadline bounds it.
func (c *framedConn) Send(typ uint16, data []byte) error {
	return c.SendPartsUntil(time.Time{}, nil, typ, data, nil)
}

// SendParts sends head and body as one frame; header, head and body go out
// in one writev. A frame to be compressed is joined first (the codecs take
// one slice). Only the write deadline bounds it.
func (c *framedConn) SendParts(typ uint16, head, body []byte) error {
	return c.SendPartsUntil(time.Time{}, nil, typ, head, body)
}

// SendPartsUntil sends head and body as one frame, as sendparts.BoundedSender
// specifies: it waits for room in the send queue until deadline, while
// cancel is open and until the write deadline; if it gives up, it returns
// ErrTimeout or ErrCanceled and nothing was sent. A deadline in the past or a
// cancel channel closed already make one attempt without waiting (as
// transport.SendPartsUntil does for a TrySender); a write deadline in the
// past fails it at once.
func (c *framedConn) SendPartsUntil(deadline time.Time, cancel <-chan struct{}, typ uint16, head, body []byte) error {
	if err := c.sendCheck(); err != nil {
		return err
	}
	if n := len(head) + len(body); n > c.max {
		return fmt.Errorf("%w: message of %d bytes, limit %d", ErrTooLarge, n, c.max)
	}
	r := c.newReq(1)
	var err error
	if n := len(head) + len(body); c.flag != 0 && n >= c.thresh && n > framedSmallCopy {
		err = c.sendCompressed(r, deadline, cancel, typ, head, body)
	} else {
		c.encode(r, r.hdr[:12], typ, head, body)
		err = c.send(r, deadline, cancel)
	}
	c.freeReq(r)
	return err
}

// sendCompressed sends a large frame that is to be compressed: it first
// waits for room for the most the frame can take on the wire (its raw size
// plus a header: a body that does not shrink is sent plain), holds that room
// while it compresses, then sends what the compression made in its place.
// Compression's buffers (a joined copy, the output, the coder's window)
// thus exist for at most the queue's budget worth of sends at a time, not
// for every sender waiting, and a send that gives up compresses nothing.
func (c *framedConn) sendCompressed(r *frameReq, deadline time.Time, cancel <-chan struct{}, typ uint16, head, body []byte) error {
	bound := frameHeaderLen + len(head) + len(body)
	c.wmu.Lock()
	if err := c.sendErr(); err != nil {
		c.wmu.Unlock()
		return err
	}
	if len(c.waiters) > 0 || !c.fitsLocked(bound) {
		if err := c.waitRoom(bound, deadline, cancel); err != nil {
			c.wmu.Unlock()
			return err
		}
	}
	c.addHeld(bound)
	c.wmu.Unlock()
	c.encode(r, r.hdr[:12], typ, head, body)
	c.wmu.Lock()
	c.wheld -= bound
	if err := c.sendErr(); err != nil {
		// Closed or broken while we compressed: nothing of r went out.
		c.wakeHeadLocked()
		c.wmu.Unlock()
		return err
	}
	return c.admitLocked(r)
}

// SendBatch sends msgs in order, queued together so one write carries them.
// If any message is too large, none is sent. Only the write deadline bounds
// it; the batch counts as one send against the queue's budget.
func (c *framedConn) SendBatch(msgs []Message) error {
	if err := c.sendCheck(); err != nil {
		return err
	}
	for i := range msgs {
		if len(msgs[i].Data) > c.max {
			return fmt.Errorf("%w: message %d of %d bytes, limit %d", ErrTooLarge, i, len(msgs[i].Data), c.max)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	r := c.newReq(len(msgs))
	for i := range msgs {
		c.encode(r, r.hdr[12*i:12*i+12], msgs[i].Type, msgs[i].Data, nil)
	}
	err := c.send(r, time.Time{}, nil)
	c.freeReq(r)
	return err
}

// sendCheck fails a send before any work: a dead connection, a write
// deadline in the past.
func (c *framedConn) sendCheck() error {
	if err := c.sendErr(); err != nil {
		return err
	}
	if ncExpired(c.wdeadline.Load()) {
		return errFrameWriteDeadline
	}
	return nil
}

func (c *framedConn) newReq(frames int) *frameReq {
	r := frameReqPool.Get().(*frameReq)
	if cap(r.hdr) < 12*frames {
		r.hdr = make([]byte, 12*frames)
	}
	r.hdr = r.hdr[:12*frames]
	return r
}

func (c *framedConn) freeReq(r *frameReq) {
	for _, p := range r.own {
		if p != nil {
			framePut(p)
		}
	}
	clear(r.own)
	clear(r.bufs) // drop references to the caller's memory
	clear(r.chunks)
	r.own, r.bufs, r.chunks = r.own[:0], r.bufs[:0], r.chunks[:0]
	r.wire, r.msgs, r.raw = 0, 0, 0
	frameReqPool.Put(r)
}

// add appends one piece to r; p is the pooled buffer holding it, if any.
func (r *frameReq) add(b []byte, p *[]byte) {
	r.bufs = append(r.bufs, b)
	r.own = append(r.own, p)
	r.wire += len(b)
}

// encode appends the frame of head+body to r; h is its 12 bytes of header
// scratch.
func (c *framedConn) encode(r *frameReq, h []byte, typ uint16, head, body []byte) {
	n := len(head) + len(body)
	r.msgs++
	r.raw += n
	if c.flag != 0 && n >= c.thresh {
		data, joined := head, (*[]byte)(nil)
		switch {
		case len(head) == 0:
			data = body
		case len(body) > 0:
			joined = frameGet(n)
			data = append(append((*joined)[:0], head...), body...)
		}
		p := frameCompress(c.comp, data, frameHeaderLen+frameRawLen)
		if joined != nil {
			framePut(joined)
		}
		if p != nil {
			// The header goes in front of the compressed bytes: one piece.
			framePutHeader(*p, len(*p)-frameHeaderLen, typ, c.flag, n)
			r.add(*p, p)
			return
		}
	}
	framePutHeader(h, n, typ, 0, 0)
	r.add(h[:frameHeaderLen], nil)
	if len(head) > 0 {
		r.add(head, nil)
	}
	if len(body) > 0 {
		r.add(body, nil)
	}
}

// send writes r directly or queues it, waiting for room within its bounds.
func (c *framedConn) send(r *frameReq, deadline time.Time, cancel <-chan struct{}) error {
	c.wmu.Lock()
	if err := c.sendErr(); err != nil {
		c.wmu.Unlock()
		return err
	}
	if len(c.waiters) > 0 || !c.fitsLocked(r.wire) {
		if err := c.waitRoom(r.wire, deadline, cancel); err != nil {
			c.wmu.Unlock()
			return err
		}
	}
	return c.admitLocked(r)
}

// admitLocked writes r directly or queues it; it is called with wmu held,
// once r may go in, and returns with it released.
func (c *framedConn) admitLocked(r *frameReq) error {
	// Waiters left behind us may stay behind a direct write too.
	if c.raw != nil && !c.writing && c.wheld == 0 {
		c.writing = true
		c.addHeld(r.wire)
		c.wmu.Unlock()
		return c.sendDirect(r)
	}
	return c.enqueue(r)
}

// fitsLocked reports whether n more bytes may enter the queue.
func (c *framedConn) fitsLocked(n int) bool {
	return c.wheld == 0 || c.wheld+n <= framedSendBuf
}

func (c *framedConn) addHeld(n int) {
	c.wheld += n
	c.wpeak = max(c.wpeak, c.wheld)
}

// waitRoom waits, with wmu held (and released while it sleeps), until a send
// of need bytes may enter the queue, in arrival order. It returns with wmu
// held: nil once the send may go in, else why not.
func (c *framedConn) waitRoom(need int, deadline time.Time, cancel <-chan struct{}) error {
	// The one attempt, made by the caller, failed: no waiting past a bound
	// that has ended already.
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		return errFrameSendDeadline
	}
	select {
	case <-cancel:
		return ErrCanceled
	default:
	}
	w := &frameWaiter{ready: make(chan struct{}, 1)}
	c.waiters = append(c.waiters, w)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if err := c.sendErr(); err != nil {
			c.removeWaiterLocked(w)
			return err
		}
		wd := c.wdeadline.Load()
		if ncExpired(wd) {
			c.removeWaiterLocked(w)
			return errFrameWriteDeadline
		}
		if c.waiters[0] == w && c.fitsLocked(need) {
			c.removeWaiterLocked(w) // and wakes the next one, which may fit too
			return nil
		}
		now := time.Now()
		if !deadline.IsZero() && !now.Before(deadline) {
			c.removeWaiterLocked(w)
			return errFrameSendDeadline
		}
		// Sleep until poked, cancelled, or the nearer deadline.
		until := deadline
		if wd != ncNoDeadline && (until.IsZero() || wd < until.UnixNano()) {
			until = time.Unix(0, wd)
		}
		var expired <-chan time.Time
		if !until.IsZero() {
			if timer == nil {
				timer = time.NewTimer(until.Sub(now))
			} else {
				timer.Reset(until.Sub(now))
			}
			expired = timer.C
		}
		c.wmu.Unlock()
		select {
		case <-w.ready:
		case <-expired:
		case <-cancel:
			c.wmu.Lock()
			c.removeWaiterLocked(w)
			return ErrCanceled
		}
		c.wmu.Lock()
	}
}

// removeWaiterLocked takes w off the waiters; the new first one, if w was
// first, is poked to look again.
func (c *framedConn) removeWaiterLocked(w *frameWaiter) {
	i := slices.Index(c.waiters, w)
	if i < 0 {
		return
	}
	c.waiters = slices.Delete(c.waiters, i, i+1)
	if i == 0 {
		c.wakeHeadLocked()
	}
}

// wakeHeadLocked pokes the first waiting sender: there may be room now.
func (c *framedConn) wakeHeadLocked() {
	if len(c.waiters) > 0 {
		select {
		case c.waiters[0].ready <- struct{}{}:
		default:
		}
	}
}

// wakeAllLocked pokes every waiting sender: the state or a deadline changed.
func (c *framedConn) wakeAllLocked() {
	for _, w := range c.waiters {
		select {
		case w.ready <- struct{}{}:
		default:
		}
	}
}

// enqueue copies r into the queue; it is called with wmu held, after room
// was found, and returns with it released. Small sends are packed into the
// last chunk under the lock; large ones reserve their room and are copied
// outside it.
func (c *framedConn) enqueue(r *frameReq) error {
	if r.wire <= framedSmallCopy {
		c.packLocked(r)
		c.addHeld(r.wire)
		c.kickLocked()
		c.wmu.Unlock()
		c.msgsSent.Add(uint64(r.msgs))
		c.bytesSent.Add(uint64(r.raw))
		return nil
	}
	c.addHeld(r.wire)
	c.wmu.Unlock()
	chunks := c.chunksFrom(r, 0)
	c.wmu.Lock()
	if err := c.sendErr(); err != nil {
		// Closed or broken while we copied: nothing of r went out.
		c.wheld -= r.wire
		c.wakeHeadLocked()
		c.wmu.Unlock()
		frameDropChunks(chunks)
		return err
	}
	c.queue = append(c.queue, chunks...)
	c.kickLocked()
	c.wmu.Unlock()
	c.msgsSent.Add(uint64(r.msgs))
	c.bytesSent.Add(uint64(r.raw))
	return nil
}

// packLocked copies r's pieces into the queue's last chunk, or a new one.
func (c *framedConn) packLocked(r *frameReq) {
	if k := len(c.queue); k > 0 {
		if t := &c.queue[k-1]; cap(t.b)-len(t.b) >= r.wire {
			for _, b := range r.bufs {
				t.b = append(t.b, b...)
			}
			return
		}
	}
	p := frameGet(max(r.wire, framedChunk))
	b := (*p)[:0]
	for _, piece := range r.bufs {
		b = append(b, piece...)
	}
	c.queue = append(c.queue, frameChunk{p: p, b: b})
}

// chunksFrom turns r's pieces, from byte skip on, into queue chunks: pooled
// compressed buffers are handed over as they are, runs of the caller's
// memory are copied into one new buffer each. The result lives in r.chunks.
func (c *framedConn) chunksFrom(r *frameReq, skip int) []frameChunk {
	out := r.chunks[:0]
	var cur *frameChunk // the copy chunk being filled
	off := 0
	for i, b := range r.bufs {
		end := off + len(b)
		if end <= skip {
			off = end
			continue
		}
		b = b[max(skip-off, 0):]
		off = end
		if p := r.own[i]; p != nil {
			out = append(out, frameChunk{p: p, b: b})
			r.own[i] = nil // the queue owns it now
			cur = nil
			continue
		}
		if cur == nil {
			size := len(b)
			for j := i + 1; j < len(r.bufs) && r.own[j] == nil; j++ {
				size += len(r.bufs[j])
			}
			p := frameGet(size)
			out = append(out, frameChunk{p: p, b: (*p)[:0]})
			cur = &out[len(out)-1]
		}
		cur.b = append(cur.b, b...)
	}
	r.chunks = out
	return out
}

// frameDropChunks gives queue chunks back to the pool.
func frameDropChunks(chunks []frameChunk) {
	for i := range chunks {
		if chunks[i].p != nil {
			framePut(chunks[i].p)
		}
		chunks[i] = frameChunk{}
	}
}

// sendDirect makes one non-blocking writev of r (the caller took the writing
// role and counted r in wheld) and queues what the socket did not take.
func (c *framedConn) sendDirect(r *frameReq) error {
	c.wvec = append(c.wvec[:0], r.bufs[:min(len(r.bufs), framedMaxIov)]...)
	c.wn, c.werr = 0, nil
	if err := c.raw.Write(c.rawOnce); err != nil && c.werr == nil {
		c.werr = err // the socket is closed
	}
	n, werr := c.wn, c.werr
	clear(c.wvec)
	if werr != nil {
		// Nothing went out. Settle the error before others may write.
		err := c.writeFailed(werr)
		c.wmu.Lock()
		c.wheld -= r.wire
		c.releaseWritingLocked()
		c.wmu.Unlock()
		return err
	}
	c.wireSent.Add(uint64(n))
	c.msgsSent.Add(uint64(r.msgs))
	c.bytesSent.Add(uint64(r.raw))
	var rest []frameChunk
	if n < r.wire {
		// Still ours alone: nobody else writes or takes the queue's front
		// while we hold the writing role.
		rest = c.chunksFrom(r, n)
	}
	c.wmu.Lock()
	c.wheld -= n
	if len(rest) > 0 {
		c.queue = slices.Insert(c.queue, 0, rest...)
	}
	c.releaseWritingLocked()
	c.wmu.Unlock()
	return nil
}

// releaseWritingLocked ends a direct write or the writer goroutine: the
// writer goroutine starts if anything is queued, the socket closes if the
// connection was closed meanwhile, and waiting senders look for room.
func (c *framedConn) releaseWritingLocked() {
	c.writing = false
	c.kickLocked()
	if !c.writing && c.closed.Load() {
		if c.linger != nil {
			c.linger.Stop()
		}
		_ = c.closeSocket()
	}
	c.wakeHeadLocked()
}

// kickLocked starts the writer goroutine if frames are queued and nobody
// writes.
func (c *framedConn) kickLocked() {
	if !c.writing && len(c.queue) > 0 {
		c.writing = true
		go c.writeLoop()
	}
}

// writeLoop is the writer goroutine: it writes what is queued, batch after
// batch, with blocking writes, and ends when the queue is empty or nothing
// more can be written.
func (c *framedConn) writeLoop() {
	c.wmu.Lock()
	for len(c.queue) > 0 && !c.writeStopped() {
		batch := c.queue
		c.queue, c.spare = c.spare[:0], nil
		c.wmu.Unlock()
		rest, err := c.writeBatch(batch)
		if err != nil {
			// Stop: the connection is closed, broken, or its peer gone.
			// Settle that first (we still hold the writing role), then drop
			// what can no longer be written.
			if c.closed.Load() {
				_ = c.closeSocket() // the linger's end, or a peer gone meanwhile
			} else {
				_ = c.writeFailed(err)
			}
			c.wmu.Lock()
			c.dropLocked(rest)
			c.dropLocked(c.queue)
			c.queue = c.queue[:0]
			c.releaseWritingLocked()
			c.wmu.Unlock()
			return
		}
		c.wmu.Lock()
		c.spare = batch[:0]
	}
	if c.writeStopped() {
		c.dropLocked(c.queue)
		c.queue = c.queue[:0]
	}
	c.releaseWritingLocked()
	c.wmu.Unlock()
}

// writeStopped reports that nothing more can be sent: the peer is gone or
// the socket is closed. (Close alone does not stop the writer: it finishes
// what was accepted, within the linger.)
func (c *framedConn) writeStopped() bool {
	return c.wfailure.Load() != nil || c.sockClosed.Load()
}

// dropLocked gives back chunks that will never be written.
func (c *framedConn) dropLocked(chunks []frameChunk) {
	for i := range chunks {
		c.wheld -= len(chunks[i].b)
	}
	frameDropChunks(chunks)
}

// writeBatch writes batch in order, giving each chunk back once written and
// freeing its room in the queue as it goes. On an error it returns the
// chunks not (fully) written.
func (c *framedConn) writeBatch(batch []frameChunk) ([]frameChunk, error) {
	for len(batch) > 0 {
		var n int
		var err error
		if c.raw != nil {
			c.wvec = c.wvec[:0]
			for i := 0; i < len(batch) && i < framedMaxIov; i++ {
				c.wvec = append(c.wvec, batch[i].b)
			}
			c.wn, c.werr = 0, nil
			if err := c.raw.Write(c.rawWait); err != nil && c.werr == nil {
				c.werr = err
			}
			n, err = c.wn, c.werr
			clear(c.wvec)
		} else {
			b := batch[0].b
			b = b[:min(len(b), framedWriteMax)]
			n, err = c.nc.Write(b)
			c.writes.Add(1)
			n = max(n, 0)
			if err == nil && n < len(b) {
				err = io.ErrShortWrite
			}
		}
		if n > 0 {
			c.wireSent.Add(uint64(n))
			for done := n; done > 0; {
				k := min(done, len(batch[0].b))
				batch[0].b = batch[0].b[k:]
				done -= k
				if len(batch[0].b) == 0 {
					framePut(batch[0].p)
					batch[0] = frameChunk{}
					batch = batch[1:]
				}
			}
			c.wmu.Lock()
			c.wheld -= n
			c.wakeHeadLocked()
			c.wmu.Unlock()
		}
		if err != nil {
			return batch, err
		}
	}
	return nil, nil
}

// writevOnce is the direct write: one writev attempt, whatever it does.
func (c *framedConn) writevOnce(fd uintptr) bool {
	n, _, err := frameWritev(fd, c.wvec)
	c.writes.Add(1)
	c.wn, c.werr = n, err
	return true
}

// writevWait is the writer goroutine's write: one writev, or, if the socket
// is full, false, so RawConn.Write waits until it can take more.
func (c *framedConn) writevWait(fd uintptr) bool {
	n, again, err := frameWritev(fd, c.wvec)
	c.writes.Add(1)
	if again {
		return false
	}
	if n == 0 && err == nil {
		err = io.ErrNoProgress // a stream socket takes a byte or fails; never spin
	}
	c.wn, c.werr = n, err
	return true
}

// writeFailed maps a write error to what sends return from now on: a peer
// gone leaves Recv to drain; anything else breaks the connection. The caller
// must not hold wmu.
func (c *framedConn) writeFailed(err error) error {
	if st := c.sendErr(); st != nil {
		return st
	}
	if frameIsPeerGone(err) {
		e := fmt.Errorf("%w: %w", ErrPeerGone, err)
		if c.wfailure.CompareAndSwap(nil, &e) {
			c.wmu.Lock()
			c.wakeAllLocked()
			c.wmu.Unlock()
		}
		return c.sendErr()
	}
	if errors.Is(err, net.ErrClosed) {
		return c.fail(fmt.Errorf("%w: %w", ErrClosed, err))
	}
	return c.fail(fmt.Errorf("transport: framed write: %w", err))
}

var _ sendparts.BoundedSender = (*framedConn)(nil)
