package transport

// The framed transport's send path.
//
// Sending. Concurrent senders are coalesced by group commit: each encodes its
// frames (header in a small scratch buffer, payload referenced, not copied,
// unless compressed), queues them, and either becomes the writer, if no write
// is in flight, or waits. The writer writes everything queued with one
// net.Buffers.WriteTo (one writev on *net.UnixConn and *net.TCPConn; other
// conns such as TLS get the small pieces copied into one staging buffer per
// write), reports to every sender it carried, and hands the writer role to
// the first sender that queued meanwhile, which writes the next batch. A
// sender thus returns once its own frames are on the socket, and no
// goroutine writes more than one batch for others.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

const (
	// framedStageBuf is the staging buffer for conns without writev; pieces
	// at least framedGatherDirect long are written from the caller's memory.
	framedStageBuf     = 64 << 10
	framedGatherDirect = 16 << 10
)

// Signals a waiting sender receives on its request's channel.
const (
	frameSigDone uint8 = iota + 1 // your frames were written (or failed): see err
	frameSigLead                  // become the writer for what is queued
)

// frameReq is one Send or SendBatch call on its way to the socket.
type frameReq struct {
	hdr  []byte     // 12 bytes of header scratch per frame
	bufs [][]byte   // pieces to write, in order
	comp []*[]byte  // pooled compressed payloads to give back
	wire int        // bytes of bufs
	msgs int        // frames
	raw  int        // payload bytes before compression
	err  error      // outcome, set by the writer before frameSigDone
	done chan uint8 // frameSigDone or frameSigLead
}

var frameReqPool = sync.Pool{New: func() any {
	return &frameReq{done: make(chan uint8, 1)}
}}

// Send sends one message; data may be reused when Send returns.
func (c *framedConn) Send(typ uint16, data []byte) error {
	if err := c.sendErr(); err != nil {
		return err
	}
	if len(data) > c.max {
		return fmt.Errorf("%w: message of %d bytes, limit %d", ErrTooLarge, len(data), c.max)
	}
	r := c.newReq(1)
	c.encode(r, r.hdr[:12], typ, data)
	err := c.submit(r)
	c.freeReq(r)
	return err
}

// SendParts sends head and body as one frame: header, head and body go out
// in one writev. A frame to be compressed is joined first (the codecs take one
// slice).
func (c *framedConn) SendParts(typ uint16, head, body []byte) error {
	n := len(head) + len(body)
	if c.flag != 0 && n >= c.thresh || len(head) == 0 || len(body) == 0 {
		if len(head) == 0 {
			return c.Send(typ, body)
		}
		if len(body) == 0 {
			return c.Send(typ, head)
		}
		p := frameGet(n)
		msg := append(append((*p)[:0], head...), body...)
		err := c.Send(typ, msg)
		framePut(p)
		return err
	}
	if err := c.sendErr(); err != nil {
		return err
	}
	if n > c.max {
		return fmt.Errorf("%w: message of %d bytes, limit %d", ErrTooLarge, n, c.max)
	}
	r := c.newReq(1)
	h := r.hdr[:12]
	r.msgs++
	r.raw += n
	framePutHeader(h, n, typ, 0, 0)
	r.bufs = append(r.bufs, h[:frameHeaderLen], head, body)
	r.wire += frameHeaderLen + n
	err := c.submit(r)
	c.freeReq(r)
	return err
}

// SendBatch sends msgs in order, queued together so one write carries them.
// If any message is too large, none is sent.
func (c *framedConn) SendBatch(msgs []Message) error {
	if err := c.sendErr(); err != nil {
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
		c.encode(r, r.hdr[12*i:12*i+12], msgs[i].Type, msgs[i].Data)
	}
	err := c.submit(r)
	c.freeReq(r)
	return err
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
	for _, p := range r.comp {
		framePut(p)
	}
	clear(r.comp)
	clear(r.bufs) // drop references to the caller's memory
	r.comp, r.bufs = r.comp[:0], r.bufs[:0]
	r.wire, r.msgs, r.raw, r.err = 0, 0, 0, nil
	frameReqPool.Put(r)
}

// encode appends one frame to r; h is its 12 bytes of header scratch.
func (c *framedConn) encode(r *frameReq, h []byte, typ uint16, data []byte) {
	r.msgs++
	r.raw += len(data)
	if c.flag != 0 && len(data) >= c.thresh {
		if p := frameCompress(c.comp, data); p != nil {
			body := *p
			framePutHeader(h, frameRawLen+len(body), typ, c.flag, len(data))
			r.bufs = append(r.bufs, h[:12], body)
			r.comp = append(r.comp, p)
			r.wire += 12 + len(body)
			return
		}
	}
	framePutHeader(h, len(data), typ, 0, 0)
	r.bufs = append(r.bufs, h[:frameHeaderLen])
	if len(data) > 0 {
		r.bufs = append(r.bufs, data)
	}
	r.wire += frameHeaderLen + len(data)
}

// submit queues r and returns when its frames are written (group commit).
func (c *framedConn) submit(r *frameReq) error {
	c.wmu.Lock()
	if err := c.sendErr(); err != nil {
		c.wmu.Unlock()
		return err
	}
	c.pending = append(c.pending, r)
	if c.writing {
		c.wmu.Unlock()
		if <-r.done == frameSigDone {
			return r.err
		}
		c.wmu.Lock() // handed the writer role; r is still queued
	} else {
		c.writing = true
	}
	batch := c.pending
	c.pending = c.spare[:0]
	c.wmu.Unlock()

	c.writeBatch(batch, r)

	c.wmu.Lock()
	clear(batch)
	c.spare = batch[:0]
	switch {
	case len(c.pending) == 0:
		c.writing = false
	case c.sendErr() != nil:
		err := c.sendErr()
		for _, q := range c.pending {
			q.err = err
			q.done <- frameSigDone
		}
		clear(c.pending)
		c.pending = c.pending[:0]
		c.writing = false
	default:
		c.pending[0].done <- frameSigLead
	}
	if !c.writing && c.stage != nil && c.sendErr() != nil {
		framePut(c.stage) // no writer will come again
		c.stage = nil
	}
	c.wmu.Unlock()
	return r.err
}

// writeBatch writes the frames of batch, sets each request's outcome and
// wakes every request but self.
func (c *framedConn) writeBatch(batch []*frameReq, self *frameReq) {
	var n int
	var err error
	res := c.residue
	if c.writev {
		bufs := c.wbufs[:0]
		if len(res) > 0 {
			bufs = append(bufs, res)
		}
		for _, q := range batch {
			bufs = append(bufs, q.bufs...)
		}
		c.wbufs = bufs
		c.wview = bufs
		var n64 int64
		n64, err = c.wview.WriteTo(c.nc)
		n = int(n64)
		c.writes.Add(1)
		clear(bufs)
		c.wview = nil
	} else {
		n, err = c.gatherWrite(res, batch)
	}
	c.wireSent.Add(uint64(n))
	if len(res) > 0 {
		// The frame cut short by an earlier deadline comes first.
		done := min(n, len(res))
		c.residue = res[done:]
		n -= done
		if len(c.residue) == 0 {
			c.residue = nil
		}
	}
	if err != nil {
		err = c.writeErr(err, batch, n)
	}
	end := 0
	for _, q := range batch {
		end += q.wire
		if err == nil || end <= n {
			q.err = nil
			c.msgsSent.Add(uint64(q.msgs))
			c.bytesSent.Add(uint64(q.raw))
		} else {
			q.err = err
		}
		if q != self {
			q.done <- frameSigDone // q may be reused from here on
		}
	}
}

// writeErr maps a write error after n bytes of batch were written to what
// the unwritten requests return, and breaks the conn when the stream cannot
// go on.
func (c *framedConn) writeErr(err error, batch []*frameReq, n int) error {
	if st := c.sendErr(); st != nil {
		return st
	}
	if frameIsTimeout(err) {
		if c.timeoutBreaks {
			c.fail(fmt.Errorf("%w: a write deadline passed on a TLS connection, which cannot write after that (%v)", ErrClosed, err))
			return fmt.Errorf("%w: connection closed (%v)", ErrTimeout, err)
		}
		if len(c.residue) == 0 {
			// Keep the rest of a frame cut in the middle: it goes out
			// first with the next write. Frames after it were not sent.
			c.residue = frameTail(batch, n)
		}
		return fmt.Errorf("%w (%v)", ErrTimeout, err)
	}
	if frameIsPeerGone(err) {
		// The peer stopped reading, but what it sent before may still be
		// waiting: sends fail from now on, Recv goes on until the end.
		e := fmt.Errorf("%w: %w", ErrPeerGone, err)
		c.wfailure.CompareAndSwap(nil, &e)
		return c.sendErr()
	}
	if errors.Is(err, net.ErrClosed) {
		return c.fail(fmt.Errorf("%w: %w", ErrClosed, err))
	}
	return c.fail(fmt.Errorf("transport: framed write: %w", err))
}

// frameTail copies the unwritten rest of the frame of batch in which the
// write stopped after n bytes, or returns nil if it stopped between frames.
// Every frame starts with a header piece whose first word is the payload
// length on the wire, so frame ends are found by walking the pieces.
func frameTail(batch []*frameReq, n int) []byte {
	var tail []byte
	off, frameEnd := 0, 0
	for _, q := range batch {
		for _, b := range q.bufs {
			if off == frameEnd {
				if off >= n {
					return tail // n fell on a frame boundary
				}
				frameEnd = off + frameHeaderLen + int(binary.LittleEndian.Uint32(b))
			}
			if end := off + len(b); end > n {
				tail = append(tail, b[max(n-off, 0):]...)
			}
			off += len(b)
			if off == frameEnd && off > n {
				return tail
			}
		}
	}
	return tail
}

// gatherWrite writes res and then batch on a conn without writev: small
// pieces are copied into the staging buffer, large ones written in place.
func (c *framedConn) gatherWrite(res []byte, batch []*frameReq) (int, error) {
	if c.stage == nil {
		c.stage = frameGet(framedStageBuf)
	}
	stage := *c.stage
	written, staged := 0, 0
	write := func(b []byte) error {
		n, err := c.nc.Write(b)
		c.writes.Add(1)
		written += n
		if err == nil && n < len(b) {
			err = io.ErrShortWrite
		}
		return err
	}
	if len(res) > 0 {
		if err := write(res); err != nil {
			return written, err
		}
	}
	for _, q := range batch {
		for _, b := range q.bufs {
			if staged > 0 && (len(b) >= framedGatherDirect || staged+len(b) > len(stage)) {
				if err := write(stage[:staged]); err != nil {
					return written, err
				}
				staged = 0
			}
			if len(b) >= framedGatherDirect {
				if err := write(b); err != nil {
					return written, err
				}
				continue
			}
			staged += copy(stage[staged:], b)
		}
	}
	if staged > 0 {
		if err := write(stage[:staged]); err != nil {
			return written, err
		}
	}
	return written, nil
}
