package transport

// The framed transport: messages over any byte stream (Unix socket, TCP, TLS).
//
// Wire format. Every message is one frame, an 8-byte header and its payload;
// all integers are little-endian:
//
//	 0               4       6       8
//	+---------------+-------+-------+----------------------------+
//	|  length u32   | type  | flags |  payload (length bytes)    |
//	+---------------+-------+-------+----------------------------+
//
//	length  payload bytes on the wire; never above the negotiated MaxMessage
//	type    the application's message type, carried untouched
//	flags   bit 0: payload is one LZ4 block; bit 1: payload is one ZSTD frame;
//	        at most one of them, and only the codec this connection
//	        negotiated; any other bit set is ErrCorrupt
//
// A compressed payload starts with the message's raw length:
//
//	+---------------+----------------------------------+
//	| raw length u32|  LZ4 block / ZSTD frame bytes     |
//	+---------------+----------------------------------+
//
// The raw length must be in 1..MaxMessage (0 is ErrCorrupt, above is
// ErrTooLarge) and the codec bytes must decode to exactly that many bytes,
// no more and no fewer (else ErrCorrupt). A sender compresses a payload only
// when it is at least the threshold long and the compressed frame is shorter
// than the raw one, so the wire length of any frame is also at most
// MaxMessage; the receiver enforces that before it allocates anything.
//
// Receiving. A header is checked before its payload is read. Small frames
// (up to framedInlineMax) are read with read-ahead into a per-connection
// buffer and returned as views into it. Larger payloads go into a pooled
// buffer that starts at framedFirstChunk and doubles only as bytes arrive,
// so a header that lies about its length costs about what the peer really
// sent. LZ4 decodes into a buffer of exactly the declared size (the decoder
// fails rather than write past it). A ZSTD payload must be one frame whose
// stated content size (if any) is the declared size; its block headers are
// walked first, so a frame that could produce more than the declared size
// plus one block is refused before decoding, and decoding runs with a
// capacity limit of that much, never growing its output.
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
//
// Errors. A header or payload that breaks the rules above is ErrCorrupt or
// ErrTooLarge; EOF or a reset from the peer is ErrPeerGone, also when the
// stream ends inside a frame (the peer died mid-send; the bytes seen were
// not malformed). All of these are sticky: the connection closes and every
// later call returns the same error (ErrClosed once Close was called). A
// write that finds the peer gone (EPIPE, reset) fails that and every later
// Send with ErrPeerGone but leaves Recv to drain what the peer sent before
// it left.
// A read deadline that passes returns ErrTimeout and keeps any partial frame,
// so the next Recv resumes where the last stopped. A write deadline that
// passes returns ErrTimeout and leaves the connection usable: if it cut a
// frame in two, the rest of that frame is kept (copied) and written first by
// the next writer, so the stream stays framed and the cut message arrives
// whole; frames queued after it were not sent. ErrTimeout from Send thus
// means "not known to be delivered", as with any timed-out call. Over TLS a
// write timeout breaks crypto/tls for good, so there it closes the
// connection.

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// framedCompression is the codec a framed connection may use for its frames.
// The lead maps the negotiated name onto it.
type framedCompression uint8

const (
	framedCompNone framedCompression = iota
	framedCompLZ4
	framedCompZstd
)

func (c framedCompression) String() string {
	switch c {
	case framedCompLZ4:
		return "lz4"
	case framedCompZstd:
		return "zstd"
	}
	return "none"
}

// flag is the frame flag that marks a payload compressed with c.
func (c framedCompression) flag() uint16 {
	switch c {
	case framedCompLZ4:
		return frameFlagLZ4
	case framedCompZstd:
		return frameFlagZstd
	}
	return 0
}

const (
	frameHeaderLen = 8 // length u32, type u16, flags u16
	frameRawLen    = 4 // raw length u32 in front of a compressed payload

	frameFlagLZ4  uint16 = 1 << 0
	frameFlagZstd uint16 = 1 << 1

	// framedDefaultMax is the largest message when the options name none.
	framedDefaultMax = 128 << 20
	// framedMaxLimit caps MaxMessage so lengths and buffer classes stay small.
	framedMaxLimit = 1 << 30
	// The default thresholds are the smallest payloads worth compressing.
	// LZ4 compresses and decompresses 1 KiB of JSON in ~1.3 µs, saving half
	// of it (~0.7 µs at TLS loopback speed, far more on a real network);
	// ZSTD has a fixed ~5 µs cost per frame, which pays from ~4 KiB (there
	// ~25 µs for 3.3 KiB saved). See BenchmarkFramed/op=codec.
	framedDefaultThresholdLZ4  = 1 << 10
	framedDefaultThresholdZstd = 4 << 10

	// framedReadBuf is the per-connection read-ahead buffer; frames up to
	// framedInlineMax are returned as views into it.
	framedReadBuf   = 64 << 10
	framedInlineMax = 32 << 10
	// framedFirstChunk is the most a large frame gets before its bytes
	// arrive; the buffer then doubles as they do.
	framedFirstChunk = 1 << 20
	// framedStageBuf is the staging buffer for conns without writev; pieces
	// at least framedGatherDirect long are written from the caller's memory.
	framedStageBuf     = 64 << 10
	framedGatherDirect = 16 << 10

	// frameZstdBlock is the most one ZSTD block can produce; decoding gets
	// this much slack (plus the codec's 64-byte overrun margin) past the
	// declared size, so its last block never reallocates.
	frameZstdBlock = 128 << 10
	frameZstdSlack = frameZstdBlock + 64
	// framedZstdWindow bounds the ZSTD encoder's history (it keeps twice
	// this per pooled encoder); the default 8 MiB cost 16 MiB an encoder.
	framedZstdWindow = 1 << 20
)

// Signals a waiting sender receives on its request's channel.
const (
	frameSigDone uint8 = iota + 1 // your frames were written (or failed): see err
	frameSigLead                  // become the writer for what is queued
)

// framedOptions configures newFramed.
type framedOptions struct {
	Kind        Kind              // KindUnix or KindTCP, reported in Info
	Compression framedCompression // the negotiated codec
	Threshold   int               // compress payloads at least this long (0: 1 KiB for LZ4, 4 KiB for ZSTD)
	MaxMessage  int               // largest message either way (0: 128 MiB; at most 1 GiB)
	Info        Info              // peer, version, TLS; Kind, Compression, MaxMessage are set here
}

// framedConn is a Conn over a net.Conn; see the wire format above.
type framedConn struct {
	nc     net.Conn
	info   Info
	comp   framedCompression
	flag   uint16
	thresh int
	max    int
	writev bool // nc writes net.Buffers with one writev
	// timeoutBreaks: a write timeout leaves nc unusable (crypto/tls), so a
	// write deadline that passes closes the connection.
	timeoutBreaks bool

	closed   atomic.Bool
	failure  atomic.Pointer[error] // first fatal error; the conn is closed then
	wfailure atomic.Pointer[error] // the peer stopped reading: sends fail, Recv drains

	// Send side: the queue of senders and the writer role.
	wmu     sync.Mutex
	writing bool        // a writer holds the role (or is being handed it)
	pending []*frameReq // queued, not yet taken by a writer
	spare   []*frameReq // the other queue array, swapped with pending
	// Writer-owned.
	wbufs net.Buffers // backing array of the batch's pieces
	wview net.Buffers // what WriteTo consumes
	stage *[]byte     // gather buffer for conns without writev
	// residue is the unwritten tail of a frame a write deadline cut short;
	// the next writer sends it first so the stream stays framed.
	residue []byte

	// Recv side, owned by the reading goroutine.
	rbuf   *[]byte // read-ahead buffer; unread bytes are rbuf[rr:rw]
	rr, rw int
	rhave  bool // header of the current frame parsed
	rlen   int  // its payload length on the wire
	rtyp   uint16
	rflags uint16
	rraw   int     // its declared raw length if compressed
	big    *[]byte // payload of a large frame being read
	bigN   int
	held   *[]byte // pooled memory of the message last returned

	msgsSent, msgsRecv   atomic.Uint64
	bytesSent, bytesRecv atomic.Uint64
	wireSent, wireRecv   atomic.Uint64
	writes               atomic.Uint64
}

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

// newFramed wraps nc, which the framed connection owns from now on.
func newFramed(nc net.Conn, o framedOptions) *framedConn {
	maxMsg := o.MaxMessage
	if maxMsg <= 0 {
		maxMsg = framedDefaultMax
	}
	maxMsg = min(maxMsg, framedMaxLimit)
	comp := o.Compression
	if comp > framedCompZstd {
		comp = framedCompNone
	}
	thresh := o.Threshold
	if thresh <= 0 {
		thresh = framedDefaultThresholdLZ4
		if comp == framedCompZstd {
			thresh = framedDefaultThresholdZstd
		}
	}
	c := &framedConn{
		nc:     nc,
		comp:   comp,
		flag:   comp.flag(),
		thresh: thresh,
		max:    maxMsg,
		info:   o.Info,
	}
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
		c.writev = true
	case *tls.Conn:
		c.timeoutBreaks = true
	}
	c.info.Kind = o.Kind
	c.info.Compression = comp.String()
	c.info.MaxMessage = maxMsg
	return c
}

// Info reports what was negotiated.
func (c *framedConn) Info() Info { return c.info }

// Stats returns the connection's counters.
func (c *framedConn) Stats() Stats {
	return Stats{
		MessagesSent:  c.msgsSent.Load(),
		MessagesRecv:  c.msgsRecv.Load(),
		BytesSent:     c.bytesSent.Load(),
		BytesRecv:     c.bytesRecv.Load(),
		WireBytesSent: c.wireSent.Load(),
		WireBytesRecv: c.wireRecv.Load(),
		Writes:        c.writes.Load(),
	}
}

// SetReadDeadline bounds pending and future Recv calls.
func (c *framedConn) SetReadDeadline(t time.Time) error {
	return c.deadlineErr(c.nc.SetReadDeadline(t))
}

// SetWriteDeadline bounds pending and future Send calls.
func (c *framedConn) SetWriteDeadline(t time.Time) error {
	return c.deadlineErr(c.nc.SetWriteDeadline(t))
}

func (c *framedConn) deadlineErr(err error) error {
	if err == nil {
		return nil
	}
	if st := c.stateErr(); st != nil {
		return st
	}
	return fmt.Errorf("transport: framed deadline: %w", err)
}

// Close closes the connection; pending calls return ErrClosed. A message
// still held from Recv stays valid until Release.
func (c *framedConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	closedErr := ErrClosed
	if !c.failure.CompareAndSwap(nil, &closedErr) {
		return nil // already failed, and nc closed then
	}
	nc := c.nc
	if tc, ok := nc.(*tls.Conn); ok {
		// crypto/tls would wait up to 5 s to send close_notify to a peer
		// that may not read; the framing already tells a cut stream apart.
		nc = tc.NetConn()
	}
	if err := nc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("transport: framed close: %w", err)
	}
	return nil
}

// stateErr is the error every call returns once the conn is closed or broken.
func (c *framedConn) stateErr() error {
	if c.closed.Load() {
		return ErrClosed
	}
	if p := c.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// sendErr is the error every Send returns once sending is over.
func (c *framedConn) sendErr() error {
	if err := c.stateErr(); err != nil {
		return err
	}
	if p := c.wfailure.Load(); p != nil {
		return *p
	}
	return nil
}

// fail makes err the connection's sticky error (unless one is set already),
// closes the socket and returns the sticky error.
func (c *framedConn) fail(err error) error {
	if c.failure.CompareAndSwap(nil, &err) {
		if tc, ok := c.nc.(*tls.Conn); ok {
			// No close_notify on a broken stream: crypto/tls would wait up
			// to 5 s to write it to a peer that may not read.
			_ = tc.NetConn().Close()
		} else {
			_ = c.nc.Close()
		}
	}
	return c.stateErr()
}

// frameIsTimeout reports whether err is a passed deadline.
func frameIsTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// frameIsPeerGone reports whether err means the other side hung up.
func frameIsPeerGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.ErrClosedPipe) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}

// ---- Send ----

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
	binary.LittleEndian.PutUint32(h[0:], uint32(n))
	binary.LittleEndian.PutUint16(h[4:], typ)
	binary.LittleEndian.PutUint16(h[6:], 0)
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
			binary.LittleEndian.PutUint32(h[0:], uint32(frameRawLen+len(body)))
			binary.LittleEndian.PutUint16(h[4:], typ)
			binary.LittleEndian.PutUint16(h[6:], c.flag)
			binary.LittleEndian.PutUint32(h[8:], uint32(len(data)))
			r.bufs = append(r.bufs, h[:12], body)
			r.comp = append(r.comp, p)
			r.wire += 12 + len(body)
			return
		}
	}
	binary.LittleEndian.PutUint32(h[0:], uint32(len(data)))
	binary.LittleEndian.PutUint16(h[4:], typ)
	binary.LittleEndian.PutUint16(h[6:], 0)
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

// ---- Recv ----

// Recv returns the next message, a view valid until Release or the next Recv.
func (c *framedConn) Recv() (Message, error) {
	c.Release()
	if err := c.stateErr(); err != nil {
		c.recvShutdown()
		return Message{}, err
	}
	if c.rbuf == nil {
		c.rbuf = frameGet(framedReadBuf)
	}
	buf := (*c.rbuf)[:framedReadBuf]
	for !c.rhave {
		need, err := c.parseHeader(buf[c.rr:c.rw])
		if err != nil {
			return Message{}, c.recvFail(err)
		}
		if need == 0 {
			break
		}
		if err := c.fill(buf); err != nil {
			return Message{}, err
		}
	}
	var payload []byte
	if c.rlen <= framedInlineMax {
		for c.rw-c.rr < c.rlen {
			if err := c.fill(buf); err != nil {
				return Message{}, err
			}
		}
		payload = buf[c.rr : c.rr+c.rlen]
		c.rr += c.rlen
	} else {
		if err := c.readBig(buf); err != nil {
			return Message{}, err
		}
		payload = (*c.big)[:c.rlen]
	}
	c.rhave = false
	msg := Message{Type: c.rtyp, Data: payload}
	if c.rflags != 0 {
		dst, err := frameDecompress(c.rflags, payload[frameRawLen:], c.rraw)
		if err != nil {
			return Message{}, c.recvFail(err)
		}
		if c.big != nil {
			framePut(c.big)
			c.big = nil
		}
		c.held = dst
		msg.Data = (*dst)[:c.rraw]
	} else if c.big != nil {
		c.held, c.big = c.big, nil
	}
	c.msgsRecv.Add(1)
	c.bytesRecv.Add(uint64(len(msg.Data)))
	return msg, nil
}

// Release hands the last received message's memory back.
func (c *framedConn) Release() {
	if c.held != nil {
		framePut(c.held)
		c.held = nil
	}
}

// parseHeader checks the header at the start of b. It returns how many more
// bytes it needs first (0 once the header is parsed into c.r*), or the error
// that the header is.
func (c *framedConn) parseHeader(b []byte) (int, error) {
	if len(b) < frameHeaderLen {
		return frameHeaderLen - len(b), nil
	}
	length := binary.LittleEndian.Uint32(b[0:])
	typ := binary.LittleEndian.Uint16(b[4:])
	flags := binary.LittleEndian.Uint16(b[6:])
	if flags != 0 && flags != c.flag {
		return 0, fmt.Errorf("%w: flags %#04x on a connection using %s", ErrCorrupt, flags, c.comp)
	}
	if uint64(length) > uint64(c.max) {
		return 0, fmt.Errorf("%w: frame of %d bytes, limit %d", ErrTooLarge, length, c.max)
	}
	raw := 0
	if flags != 0 {
		if length <= frameRawLen {
			return 0, fmt.Errorf("%w: compressed frame of %d bytes", ErrCorrupt, length)
		}
		if len(b) < frameHeaderLen+frameRawLen {
			return frameHeaderLen + frameRawLen - len(b), nil
		}
		r := binary.LittleEndian.Uint32(b[frameHeaderLen:])
		if r == 0 {
			return 0, fmt.Errorf("%w: compressed frame declares 0 raw bytes", ErrCorrupt)
		}
		if uint64(r) > uint64(c.max) {
			return 0, fmt.Errorf("%w: compressed frame declares %d raw bytes, limit %d", ErrTooLarge, r, c.max)
		}
		raw = int(r)
	}
	c.rhave, c.rlen, c.rtyp, c.rflags, c.rraw = true, int(length), typ, flags, raw
	c.rr += frameHeaderLen
	return 0, nil
}

// fill reads more bytes into the read-ahead buffer.
func (c *framedConn) fill(buf []byte) error {
	if c.rr > 0 {
		c.rw = copy(buf, buf[c.rr:c.rw])
		c.rr = 0
	}
	return c.read(buf[c.rw:], &c.rw)
}

// readBig reads the rest of a large payload into c.big, growing it as bytes
// arrive.
func (c *framedConn) readBig(buf []byte) error {
	if c.big == nil {
		c.big = frameGet(min(c.rlen, framedFirstChunk))
		c.bigN = copy(*c.big, buf[c.rr:c.rr+min(c.rw-c.rr, c.rlen)])
		c.rr += c.bigN
	}
	for c.bigN < c.rlen {
		b := *c.big
		if c.bigN == len(b) {
			nb := frameGet(min(2*len(b), c.rlen))
			copy(*nb, b)
			framePut(c.big)
			c.big = nb
			b = *nb
		}
		if err := c.read(b[c.bigN:min(len(b), c.rlen)], &c.bigN); err != nil {
			return err
		}
	}
	return nil
}

// read does one Read into b, adds what arrived to *n, and maps the error.
// A timeout keeps all state, so the next Recv resumes.
func (c *framedConn) read(b []byte, n *int) error {
	for tries := 0; ; tries++ {
		k, err := c.nc.Read(b)
		if k > 0 {
			*n += k
			c.wireRecv.Add(uint64(k))
			return nil
		}
		switch {
		case err == nil:
			if tries < 100 {
				continue
			}
			err = io.ErrNoProgress
		case frameIsTimeout(err) && c.stateErr() == nil:
			return fmt.Errorf("%w (%v)", ErrTimeout, err)
		}
		if st := c.stateErr(); st != nil {
			c.recvShutdown()
			return st
		}
		if frameIsPeerGone(err) {
			if c.rhave || c.rw > c.rr {
				err = fmt.Errorf("%w: stream ended inside a frame: %w", ErrPeerGone, io.ErrUnexpectedEOF)
			} else {
				err = fmt.Errorf("%w: %w", ErrPeerGone, err)
			}
		} else {
			err = fmt.Errorf("transport: framed read: %w", err)
		}
		return c.recvFail(err)
	}
}

// recvFail breaks the conn with err and returns the sticky error.
func (c *framedConn) recvFail(err error) error {
	err = c.fail(err)
	c.recvShutdown()
	return err
}

// recvShutdown gives the reader's buffers back once the conn is dead.
func (c *framedConn) recvShutdown() {
	if c.big != nil {
		framePut(c.big)
		c.big = nil
	}
	if c.rbuf != nil {
		framePut(c.rbuf)
		c.rbuf = nil
	}
	c.rr, c.rw, c.rhave = 0, 0, false
}

// ---- compression ----

var frameLZ4Pool = sync.Pool{New: func() any { return new(lz4.Compressor) }}

// ZSTD coders are kept on free lists rather than in sync.Pools: an encoder
// holds megabytes of history that a GC would otherwise throw away and the
// next message reallocate. The lists hold at most one coder per CPU.
var (
	frameZstdEncs = frameFreeList[*zstd.Encoder]{newf: func() (*zstd.Encoder, error) {
		return zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(false),
			zstd.WithWindowSize(framedZstdWindow))
	}}
	frameZstdDecs = frameFreeList[*zstd.Decoder]{newf: func() (*zstd.Decoder, error) {
		return zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(framedMaxLimit+frameZstdSlack),
			zstd.WithDecodeAllCapLimit(true))
	}}
)

// frameFreeList is a small bounded stack of reusable coders.
type frameFreeList[T any] struct {
	mu   sync.Mutex
	free []T
	newf func() (T, error)
}

func (l *frameFreeList[T]) get() (T, error) {
	l.mu.Lock()
	if n := len(l.free); n > 0 {
		v := l.free[n-1]
		l.free = l.free[:n-1]
		l.mu.Unlock()
		return v, nil
	}
	l.mu.Unlock()
	return l.newf()
}

func (l *frameFreeList[T]) put(v T) {
	l.mu.Lock()
	if len(l.free) < frameFreeMax {
		l.free = append(l.free, v)
	}
	l.mu.Unlock()
}

var frameFreeMax = max(2, runtime.NumCPU())

// frameCompress compresses data with comp into a pooled buffer, or returns
// nil when that would not make the frame shorter.
func frameCompress(comp framedCompression, data []byte) *[]byte {
	limit := len(data) - frameRawLen - 1 // the compressed body must fit in this
	if limit <= 0 {
		return nil
	}
	switch comp {
	case framedCompLZ4:
		p := frameGet(limit)
		lc := frameLZ4Pool.Get().(*lz4.Compressor)
		n, err := lc.CompressBlock(data, (*p)[:limit])
		frameLZ4Pool.Put(lc)
		if err != nil || n <= 0 || n > limit {
			framePut(p)
			return nil
		}
		*p = (*p)[:n]
		return p
	case framedCompZstd:
		enc, err := frameZstdEncs.get()
		if err != nil {
			return nil
		}
		// Room for incompressible input, so EncodeAll never reallocates.
		p := frameGet(len(data) + len(data)>>7 + 1024)
		out := enc.EncodeAll(data, (*p)[:0])
		frameZstdEncs.put(enc)
		if len(out) > limit || cap(out) != cap(*p) {
			framePut(p)
			return nil
		}
		*p = out
		return p
	}
	return nil
}

// frameDecompress decodes a compressed payload that must yield exactly raw
// bytes, into a pooled buffer, never allocating more than raw plus one ZSTD
// block.
func frameDecompress(flags uint16, src []byte, raw int) (*[]byte, error) {
	switch flags {
	case frameFlagLZ4:
		// An LZ4 block expands at most about 255 times: a tiny block that
		// declares a huge size is refused before raw bytes are allocated.
		if raw > 255*len(src)+16 {
			return nil, fmt.Errorf("%w: %d-byte lz4 block cannot decode to its %d declared bytes", ErrCorrupt, len(src), raw)
		}
		p := frameGet(raw)
		n, err := lz4.UncompressBlock(src, (*p)[:raw])
		if err != nil || n != raw {
			framePut(p)
			if err == nil {
				err = fmt.Errorf("%d bytes", n)
			}
			return nil, fmt.Errorf("%w: lz4 block does not decode to its %d declared bytes: %v", ErrCorrupt, raw, err)
		}
		return p, nil
	case frameFlagZstd:
		if err := frameZstdCheck(src, raw); err != nil {
			return nil, err
		}
		dec, err := frameZstdDecs.get()
		if err != nil {
			return nil, fmt.Errorf("%w: zstd decoder: %v", ErrCorrupt, err)
		}
		p := frameGet(raw + frameZstdSlack)
		dst := (*p)[: 0 : raw+frameZstdSlack]
		out, err := dec.DecodeAll(src, dst)
		frameZstdDecs.put(dec)
		if err != nil || len(out) != raw || (raw > 0 && &out[0] != &dst[:1][0]) {
			framePut(p)
			if err == nil {
				err = fmt.Errorf("%d bytes", len(out))
			}
			return nil, fmt.Errorf("%w: zstd frame does not decode to its %d declared bytes: %v", ErrCorrupt, raw, err)
		}
		return p, nil
	}
	return nil, fmt.Errorf("%w: flags %#04x", ErrCorrupt, flags)
}

// frameZstdCheck walks the block headers of the ZSTD frame src: it must be
// one standard frame without dictionary that ends exactly at the end of src
// and cannot produce more than raw plus one block. With a content size, that
// size must be raw (the decoder stops within one block of it); without one
// (our encoder omits it below 256 bytes), every compressed block counts as a
// full one. Raw and RLE blocks count their exact size. So decoding into
// raw+frameZstdSlack of capacity never has to grow its buffer.
func frameZstdCheck(src []byte, raw int) error {
	var h zstd.Header
	if err := h.Decode(src); err != nil {
		return fmt.Errorf("%w: zstd frame header: %v", ErrCorrupt, err)
	}
	switch {
	case h.Skippable:
		return fmt.Errorf("%w: skippable zstd frame", ErrCorrupt)
	case h.DictionaryID != 0:
		return fmt.Errorf("%w: zstd frame needs dictionary %d", ErrCorrupt, h.DictionaryID)
	case h.HasFCS && h.FrameContentSize != uint64(raw):
		return fmt.Errorf("%w: zstd frame holds %d bytes, frame declares %d", ErrCorrupt, h.FrameContentSize, raw)
	}
	pos, exact, bound := h.HeaderSize, 0, 0
	for {
		if len(src)-pos < 3 {
			return fmt.Errorf("%w: zstd frame truncated", ErrCorrupt)
		}
		bh := int(src[pos]) | int(src[pos+1])<<8 | int(src[pos+2])<<16
		pos += 3
		last, typ, size := bh&1 != 0, (bh>>1)&3, bh>>3
		if size > frameZstdBlock {
			return fmt.Errorf("%w: zstd block of %d bytes", ErrCorrupt, size)
		}
		switch typ {
		case 0: // raw
			exact += size
			bound += size
		case 1: // RLE: one byte repeated size times
			exact += size
			bound += size
			size = 1
		case 2: // compressed: up to one full block out
			bound += frameZstdBlock
		default:
			return fmt.Errorf("%w: reserved zstd block type", ErrCorrupt)
		}
		if len(src)-pos < size {
			return fmt.Errorf("%w: zstd frame truncated", ErrCorrupt)
		}
		pos += size
		if exact > raw || !h.HasFCS && bound > raw+frameZstdBlock {
			return fmt.Errorf("%w: zstd frame can decode past its %d declared bytes", ErrCorrupt, raw)
		}
		if last {
			break
		}
	}
	if h.HasCheckSum {
		pos += 4
	}
	if pos != len(src) {
		return fmt.Errorf("%w: zstd frame is %d bytes, payload %d", ErrCorrupt, pos, len(src))
	}
	if bound < raw {
		// Its blocks cannot produce the declared size: refuse before the
		// caller allocates raw bytes for a frame of a few bytes.
		return fmt.Errorf("%w: zstd frame can decode at most %d of its %d declared bytes", ErrCorrupt, bound, raw)
	}
	return nil
}

// ---- buffer pool ----

// Pooled byte slices in size classes: 4 KiB, then four classes per power of
// two (2^k·{1.25, 1.5, 1.75, 2}), so a buffer wastes under a quarter.
const (
	frameMinShift = 12
	frameClasses  = (31-frameMinShift)*4 + 1
)

var framePools [frameClasses]sync.Pool

// frameClass returns the pool index and buffer size for n bytes.
func frameClass(n int) (int, int) {
	if n <= 1<<frameMinShift {
		return 0, 1 << frameMinShift
	}
	k := bits.Len(uint(n-1)) - 1 // 2^k < n <= 2^(k+1)
	step := 1 << (k - 2)
	m := (n - 1<<k + step - 1) / step
	return (k-frameMinShift)*4 + m, 1<<k + m*step
}

// frameGet returns a pooled slice of at least n bytes (its len is its class
// size).
func frameGet(n int) *[]byte {
	i, size := frameClass(n)
	if i < frameClasses {
		if p, ok := framePools[i].Get().(*[]byte); ok {
			return p
		}
	}
	b := make([]byte, size)
	return &b
}

// framePut gives p back to its pool.
func framePut(p *[]byte) {
	*p = (*p)[:cap(*p)]
	i, size := frameClass(cap(*p))
	if i < frameClasses && size == cap(*p) {
		framePools[i].Put(p)
	}
}
