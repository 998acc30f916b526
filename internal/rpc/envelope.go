package rpc

import (
	"encoding/binary"
	"fmt"
)

// Message kinds, carried in the transport message's type. The layout of each
// is in docs/protocol.md.
const (
	kindCall   uint16 = 0x5201 // callHeader, traceparent, method, request
	kindReply  uint16 = 0x5202 // call id u64, reply
	kindError  uint16 = 0x5203 // call id u64, FlatBuffers Error
	kindCancel uint16 = 0x5204 // call id u64
	kindPing   uint16 = 0x5205 // ping id u64
	kindPong   uint16 = 0x5206 // ping id u64
	kindGoAway uint16 = 0x5207 // FlatBuffers GoAway
)

// Call header flags.
const (
	flagCallback uint8 = 1 << 0 // aux = the receiver's own call this one calls back into
	flagObject   uint8 = 1 << 1 // aux = object handle; method = the object's method
	flagNew      uint8 = 1 << 2 // method = object type; reply = handle u64
	flagDestroy  uint8 = 1 << 3 // aux = object handle
	knownFlags         = flagCallback | flagObject | flagNew | flagDestroy
)

// The fixed call header, little-endian:
//
//	 0      8          16     24    25     26       28
//	+------+----------+------+-----+------+--------+-------------+--------+---------+
//	| id   | timeout  | aux  |flags| mlen | tplen  | traceparent | method | request |
//	| u64  | i64 (ns) | u64  | u8  | u8   | u16    | tplen bytes | mlen   | ...     |
//	+------+----------+------+-----+------+--------+-------------+--------+---------+
//
// timeout is the caller's remaining time in nanoseconds (0: none), relative so
// that clocks need not agree. BenchmarkEnvelope decided for this fixed layout
// over a FlatBuffers table on the data path (docs/protocol.md).
const (
	callHeaderSize = 28
	idSize         = 8
	maxMethod      = 255
	maxTraceparent = 128 // W3C traceparent is 55 bytes; room for tracestate-free variants
)

type callHeader struct {
	id      uint64
	timeout int64
	aux     uint64
	flags   uint8
	trace   []byte
	method  []byte // view into the message
	body    []byte // view into the message
}

// appendCall appends a call message's bytes to dst.
func appendCall(dst []byte, id uint64, timeout int64, aux uint64, flags uint8, trace, method string, body []byte) []byte {
	var h [callHeaderSize]byte
	binary.LittleEndian.PutUint64(h[0:], id)
	binary.LittleEndian.PutUint64(h[8:], uint64(timeout))
	binary.LittleEndian.PutUint64(h[16:], aux)
	h[24] = flags
	h[25] = uint8(len(method))
	binary.LittleEndian.PutUint16(h[26:], uint16(len(trace)))
	dst = append(dst, h[:]...)
	dst = append(dst, trace...)
	dst = append(dst, method...)
	return append(dst, body...)
}

// parseCall validates a call message and returns views into it.
func parseCall(b []byte) (callHeader, error) {
	var h callHeader
	if len(b) < callHeaderSize {
		return h, fmt.Errorf("%w: %d-byte call, the header alone is %d", ErrCorrupt, len(b), callHeaderSize)
	}
	h.id = binary.LittleEndian.Uint64(b[0:])
	h.timeout = int64(binary.LittleEndian.Uint64(b[8:]))
	h.aux = binary.LittleEndian.Uint64(b[16:])
	h.flags = b[24]
	mlen := int(b[25])
	tlen := int(binary.LittleEndian.Uint16(b[26:]))
	switch {
	case h.flags&^knownFlags != 0:
		return h, fmt.Errorf("%w: unknown call flags %#x", ErrCorrupt, h.flags)
	case tlen > maxTraceparent:
		return h, fmt.Errorf("%w: %d-byte traceparent", ErrCorrupt, tlen)
	case callHeaderSize+tlen+mlen > len(b):
		return h, fmt.Errorf("%w: call header overruns its %d-byte message", ErrCorrupt, len(b))
	case h.timeout < 0:
		return h, fmt.Errorf("%w: negative timeout", ErrCorrupt)
	}
	p := callHeaderSize
	h.trace = b[p : p+tlen : p+tlen]
	p += tlen
	h.method = b[p : p+mlen : p+mlen]
	p += mlen
	h.body = b[p:]
	return h, nil
}

// appendID appends the 8-byte call id that starts replies, errors, cancels,
// pings and pongs.
func appendID(dst []byte, id uint64) []byte {
	return binary.LittleEndian.AppendUint64(dst, id)
}

// parseID splits an id-prefixed message.
func parseID(b []byte) (uint64, []byte, error) {
	if len(b) < idSize {
		return 0, nil, fmt.Errorf("%w: %d-byte message without its call id", ErrCorrupt, len(b))
	}
	return binary.LittleEndian.Uint64(b), b[idSize:], nil
}
