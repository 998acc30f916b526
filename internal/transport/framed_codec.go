package transport

// The framed transport's codec: the frame format and its rules, compression
// and bounded decompression, and the pooled buffers. Nothing here touches a
// net.Conn, so it can be tested and fuzzed on its own; framed.go holds the
// connection, framed_send.go and framed_recv.go its two directions.
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
// Decoding. A header is checked (frameParseHeader) before its payload is
// read. LZ4 decodes into a buffer of exactly the declared size (the decoder
// fails rather than write past it). A ZSTD payload must be one frame whose
// stated content size (if any) is the declared size; its block headers are
// walked first, so a frame that could produce more than the declared size
// plus one block is refused before decoding, and decoding runs with a
// capacity limit of that much, never growing its output.

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"runtime"
	"sync"

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

	// frameZstdBlock is the most one ZSTD block can produce; decoding gets
	// this much slack (plus the codec's 64-byte overrun margin) past the
	// declared size, so its last block never reallocates.
	frameZstdBlock = 128 << 10
	frameZstdSlack = frameZstdBlock + 64
	// framedZstdWindow bounds the ZSTD encoder's history (it keeps twice
	// this per pooled encoder); the default 8 MiB cost 16 MiB an encoder.
	framedZstdWindow = 1 << 20
)

// frameHeader is a parsed frame header.
type frameHeader struct {
	length int    // payload bytes on the wire
	typ    uint16 // the application's type
	flags  uint16 // 0 or the connection's codec flag
	raw    int    // declared raw length of a compressed payload
}

// frameParseHeader checks the header at the start of b for a connection
// using comp with messages up to maxMsg. It returns the header (its payload
// starts frameHeaderLen bytes into b; a compressed one with its raw length),
// or how many more bytes it needs first (need > 0), or the error the header
// is (ErrCorrupt or ErrTooLarge).
func frameParseHeader(b []byte, comp framedCompression, maxMsg int) (h frameHeader, need int, err error) {
	if len(b) < frameHeaderLen {
		return h, frameHeaderLen - len(b), nil
	}
	length := binary.LittleEndian.Uint32(b[0:])
	typ := binary.LittleEndian.Uint16(b[4:])
	flags := binary.LittleEndian.Uint16(b[6:])
	if flags != 0 && flags != comp.flag() {
		return h, 0, fmt.Errorf("%w: flags %#04x on a connection using %s", ErrCorrupt, flags, comp)
	}
	if uint64(length) > uint64(maxMsg) {
		return h, 0, fmt.Errorf("%w: frame of %d bytes, limit %d", ErrTooLarge, length, maxMsg)
	}
	raw := 0
	if flags != 0 {
		if length <= frameRawLen {
			return h, 0, fmt.Errorf("%w: compressed frame of %d bytes", ErrCorrupt, length)
		}
		if len(b) < frameHeaderLen+frameRawLen {
			return h, frameHeaderLen + frameRawLen - len(b), nil
		}
		r := binary.LittleEndian.Uint32(b[frameHeaderLen:])
		if r == 0 {
			return h, 0, fmt.Errorf("%w: compressed frame declares 0 raw bytes", ErrCorrupt)
		}
		if uint64(r) > uint64(maxMsg) {
			return h, 0, fmt.Errorf("%w: compressed frame declares %d raw bytes, limit %d", ErrTooLarge, r, maxMsg)
		}
		raw = int(r)
	}
	return frameHeader{length: int(length), typ: typ, flags: flags, raw: raw}, 0, nil
}

// framePutHeader writes a frame header for a payload of length wire bytes
// into h[:8]; a compressed payload's raw length goes into h[8:12].
func framePutHeader(h []byte, length int, typ, flags uint16, raw int) {
	binary.LittleEndian.PutUint32(h[0:], uint32(length))
	binary.LittleEndian.PutUint16(h[4:], typ)
	binary.LittleEndian.PutUint16(h[6:], flags)
	if flags != 0 {
		binary.LittleEndian.PutUint32(h[8:], uint32(raw))
	}
}

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

// frameCompress compresses data with comp into a pooled buffer, after off
// bytes left free for the frame's header, or returns nil when that would not
// make the frame shorter.
func frameCompress(comp framedCompression, data []byte, off int) *[]byte {
	limit := len(data) - frameRawLen - 1 // the compressed body must fit in this
	if limit <= 0 {
		return nil
	}
	switch comp {
	case framedCompLZ4:
		p := frameGet(off + limit)
		lc := frameLZ4Pool.Get().(*lz4.Compressor)
		n, err := lc.CompressBlock(data, (*p)[off:off+limit])
		frameLZ4Pool.Put(lc)
		if err != nil || n <= 0 || n > limit {
			framePut(p)
			return nil
		}
		*p = (*p)[:off+n]
		return p
	case framedCompZstd:
		enc, err := frameZstdEncs.get()
		if err != nil {
			return nil
		}
		// Room for incompressible input, so EncodeAll never reallocates.
		p := frameGet(off + len(data) + len(data)>>7 + 1024)
		out := enc.EncodeAll(data, (*p)[:off])
		frameZstdEncs.put(enc)
		if len(out)-off > limit || cap(out) != cap(*p) {
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
