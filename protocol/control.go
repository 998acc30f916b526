package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/ringwire/ringwire/protocol/internal/fb"
)

// Control bodies (control.fbs): the FlatBuffers Error and GoAway tables that
// follow the fixed envelope header of kindError and kindGoAway messages.

// maxControlBody bounds a control body, checked before anything else.
const maxControlBody = 64 << 10

// Bounds of the fields. A longer message or reason is cut (at a UTF-8 rune
// boundary) when sent; longer details are left out when sent. A received body
// over any bound is refused.
const (
	ctrlMaxMessage ctrlLimit = 4096
	ctrlMaxDetails ctrlLimit = 16 << 10
	ctrlMaxReason  ctrlLimit = 1024
)

// errCorruptControl is wrapped by every error of parseErrorBody and
// parseGoAwayBody.
var errCorruptControl = errors.New("protocol: corrupt control message")

// ctrlBuilders recycles FlatBuffers builders, so that encoding a control body
// allocates nothing but the growth of dst.
var ctrlBuilders = ctrlPool{sync.Pool{New: func() any { return flatbuffers.NewBuilder(256) }}}

type ctrlPool struct{ pool sync.Pool }

// get returns a reset builder.
func (p *ctrlPool) get() *flatbuffers.Builder {
	b := p.pool.Get().(*flatbuffers.Builder)
	b.Reset()
	return b
}

// put returns b to the pool unless it grew unusually large.
func (p *ctrlPool) put(b *flatbuffers.Builder) {
	if cap(b.Bytes) <= maxControlBody {
		p.pool.Put(b)
	}
}

// appendErrorBody appends one FlatBuffers buffer whose root is an Error to dst.
// msg is cut to ctrlMaxMessage bytes; details over ctrlMaxDetails are dropped
// (cut opaque bytes would be worse than none). Empty fields are left out.
func appendErrorBody(dst []byte, code uint32, msg string, details []byte) []byte {
	msg = ctrlMaxMessage.cut(msg)
	if len(details) > int(ctrlMaxDetails) {
		details = nil
	}
	b := ctrlBuilders.get()
	var m, d flatbuffers.UOffsetT
	if len(details) > 0 {
		d = b.CreateByteVector(details)
	}
	if msg != "" {
		m = b.CreateString(msg)
	}
	fb.ErrorStart(b)
	if d != 0 {
		fb.ErrorAddDetails(b, d)
	}
	if m != 0 {
		fb.ErrorAddMessage(b, m)
	}
	fb.ErrorAddCode(b, code)
	b.Finish(fb.ErrorEnd(b))
	dst = append(dst, b.FinishedBytes()...)
	ctrlBuilders.put(b)
	return dst
}

// parseErrorBody checks and decodes an Error body. b may be shared with the
// peer: it is bounds-checked completely before use, every offset in it is read
// once, and msg and details are copies.
func parseErrorBody(b []byte) (code uint32, msg string, details []byte, err error) {
	v := ctrlBuf{b: b, n: uint64(len(b)), what: "error"}
	t, err := v.root()
	if err != nil {
		return 0, "", nil, err
	}
	at, err := t.scalar(0, 4)
	if err != nil {
		return 0, "", nil, err
	}
	if at != 0 {
		code = binary.LittleEndian.Uint32(b[at:])
	}
	m, err := t.vector(1, true, ctrlMaxMessage)
	if err != nil {
		return 0, "", nil, err
	}
	d, err := t.vector(2, false, ctrlMaxDetails)
	if err != nil {
		return 0, "", nil, err
	}
	if len(d) > 0 {
		details = append([]byte(nil), d...)
	}
	return code, string(m), details, nil
}

// appendGoAwayBody appends one FlatBuffers buffer whose root is a GoAway to
// dst. reason is cut to ctrlMaxReason bytes.
func appendGoAwayBody(dst []byte, reason string, lastCall uint64) []byte {
	reason = ctrlMaxReason.cut(reason)
	b := ctrlBuilders.get()
	var r flatbuffers.UOffsetT
	if reason != "" {
		r = b.CreateString(reason)
	}
	fb.GoAwayStart(b)
	fb.GoAwayAddLastCall(b, lastCall)
	if r != 0 {
		fb.GoAwayAddReason(b, r)
	}
	b.Finish(fb.GoAwayEnd(b))
	dst = append(dst, b.FinishedBytes()...)
	ctrlBuilders.put(b)
	return dst
}

// parseGoAwayBody checks and decodes a GoAway body, like parseErrorBody.
func parseGoAwayBody(b []byte) (reason string, lastCall uint64, err error) {
	v := ctrlBuf{b: b, n: uint64(len(b)), what: "goaway"}
	t, err := v.root()
	if err != nil {
		return "", 0, err
	}
	r, err := t.vector(0, true, ctrlMaxReason)
	if err != nil {
		return "", 0, err
	}
	at, err := t.scalar(1, 8)
	if err != nil {
		return "", 0, err
	}
	if at != 0 {
		lastCall = binary.LittleEndian.Uint64(b[at:])
	}
	return string(r), lastCall, nil
}

// ctrlLimit is a field's bound in bytes.
type ctrlLimit int

// cut returns s cut to at most l bytes, backing off to the start of a UTF-8
// rune so that a valid string stays valid.
func (l ctrlLimit) cut(s string) string {
	n := int(l)
	if len(s) <= n {
		return s
	}
	for i := 0; i < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return s[:n]
}

// The Go FlatBuffers runtime has no verifier, and its generated accessors
// index the buffer directly and re-read every offset from it: a hostile
// buffer could make them panic, and so could a peer that rewrites shared
// memory between a check and an accessor. So the control bodies are not read
// through the accessors: ctrlBuf checks the root table, its vtable and each
// field it is asked for the way FlatBuffers' C++ Verifier does (inside the
// buffer, aligned, strings NUL-terminated), reading every offset and length
// exactly once, and hands out only what it checked. Slot numbers are field
// indexes in control.fbs. Arithmetic is in uint64 on values below 2^32, so it
// cannot overflow.
type ctrlBuf struct {
	b    []byte
	n    uint64
	what string // "error", "goaway": for the error text
}

// ctrlTable is a checked table: its position, its vtable's, and their sizes.
type ctrlTable struct {
	v      *ctrlBuf
	pos    uint64
	vt     uint64
	vtLen  uint64
	tabLen uint64
}

func (v *ctrlBuf) bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s body: %s", errCorruptControl, v.what, fmt.Sprintf(format, args...))
}

func (v *ctrlBuf) u16(at uint64) uint64 { return uint64(binary.LittleEndian.Uint16(v.b[at:])) }
func (v *ctrlBuf) u32(at uint64) uint64 { return uint64(binary.LittleEndian.Uint32(v.b[at:])) }

// root checks the size of the buffer and its root table.
func (v *ctrlBuf) root() (ctrlTable, error) {
	if v.n > maxControlBody {
		return ctrlTable{}, v.bad("%d bytes, at most %d", v.n, maxControlBody)
	}
	if v.n < 4 {
		return ctrlTable{}, v.bad("%d bytes, too short for a FlatBuffer", v.n)
	}
	pos, err := v.offset(0)
	if err != nil {
		return ctrlTable{}, err
	}
	return v.table(pos)
}

// offset follows the uoffset stored at at and returns its non-zero target,
// still to be checked by the caller.
func (v *ctrlBuf) offset(at uint64) (uint64, error) {
	if at%4 != 0 || at+4 > v.n {
		return 0, v.bad("offset at %d is misaligned or outside the %d-byte buffer", at, v.n)
	}
	o := v.u32(at)
	if o == 0 {
		return 0, v.bad("zero offset at %d", at)
	}
	return at + o, nil
}

func (v *ctrlBuf) table(pos uint64) (ctrlTable, error) {
	if pos%4 != 0 || pos+4 > v.n {
		return ctrlTable{}, v.bad("table at %d is misaligned or outside the %d-byte buffer", pos, v.n)
	}
	vt := int64(pos) - int64(int32(binary.LittleEndian.Uint32(v.b[pos:])))
	if vt < 0 || vt%2 != 0 || uint64(vt)+4 > v.n {
		return ctrlTable{}, v.bad("vtable of the table at %d is misaligned or outside the buffer", pos)
	}
	t := ctrlTable{v: v, pos: pos, vt: uint64(vt)}
	t.vtLen, t.tabLen = v.u16(t.vt), v.u16(t.vt+2)
	if t.vtLen < 4 || t.vtLen%2 != 0 || t.vt+t.vtLen > v.n {
		return ctrlTable{}, v.bad("vtable at %d has a bad size %d", t.vt, t.vtLen)
	}
	if t.tabLen < 4 || pos+t.tabLen > v.n {
		return ctrlTable{}, v.bad("table at %d has a bad size %d", pos, t.tabLen)
	}
	return t, nil
}

// scalar returns the position of the size-byte field in slot, 0 if the field
// is absent, after checking that it lies inside the table, aligned.
func (t ctrlTable) scalar(slot int, size uint64) (uint64, error) {
	vo := 4 + 2*uint64(slot)
	if vo+2 > t.vtLen {
		return 0, nil
	}
	fo := t.v.u16(t.vt + vo)
	if fo == 0 {
		return 0, nil
	}
	at := t.pos + fo
	if fo < 4 || fo+size > t.tabLen || at%size != 0 {
		return 0, t.v.bad("field %d of the table at %d is misplaced", slot, t.pos)
	}
	return at, nil
}

// vector returns the elements of the byte vector (str: the string, without
// its NUL) that the offset field in slot points to, nil if the field is
// absent. A vector over limit bytes is refused.
func (t ctrlTable) vector(slot int, str bool, limit ctrlLimit) ([]byte, error) {
	at, err := t.scalar(slot, 4)
	if err != nil || at == 0 {
		return nil, err
	}
	pos, err := t.v.offset(at)
	if err != nil {
		return nil, err
	}
	v := t.v
	if pos%4 != 0 || pos+4 > v.n {
		return nil, v.bad("vector at %d (field %d) is misaligned or outside the %d-byte buffer", pos, slot, v.n)
	}
	count, start := v.u32(pos), pos+4
	if count > uint64(limit) {
		return nil, v.bad("field %d is %d bytes, at most %d", slot, count, limit)
	}
	end := start + count
	if end > v.n || (str && (end >= v.n || v.b[end] != 0)) {
		return nil, v.bad("vector at %d (field %d) of %d bytes runs outside the buffer", pos, slot, count)
	}
	return v.b[start:end:end], nil
}
