package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/ringwire/ringwire/internal/fbverify"
	"github.com/ringwire/ringwire/internal/rpc/internal/fb"
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

// The control bodies are not read through the generated accessors, which
// would panic on a hostile buffer or on memory the peer rewrites: ctrlBuf
// checks the root table and each field it is asked for with package fbverify,
// which reads every offset and length once, and adds errCorruptControl and
// the body's name to its refusals. Slot numbers are field indexes in
// control.fbs.
type ctrlBuf struct {
	b    []byte
	n    uint64 // len(b)
	what string // "error", "goaway": for the error text
}

// ctrlTable is a checked table of a ctrlBuf. It holds what, not the
// ctrlBuf: a pointer beside the buffer would escape with the slices vector
// returns.
type ctrlTable struct {
	t    fbverify.Table
	what string
}

func (v *ctrlBuf) bad(format string, args ...any) error {
	return fmt.Errorf("%w: %s body: %s", errCorruptControl, v.what, fmt.Sprintf(format, args...))
}

// ctrlWrap returns err, an fbverify refusal of the what body or nil, as a
// control error.
func ctrlWrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return ctrlWrapErr(what, err)
}

// ctrlWrapErr is ctrlWrap's error path, apart so that ctrlWrap inlines.
func ctrlWrapErr(what string, err error) error {
	return fmt.Errorf("%w: %s body: %w", errCorruptControl, what, err)
}

func (v *ctrlBuf) buf() fbverify.Buffer { return fbverify.New(v.b[:v.n]) }

// root checks the size of the buffer and its root table.
func (v *ctrlBuf) root() (ctrlTable, error) {
	if v.n > maxControlBody {
		return ctrlTable{}, v.bad("%d bytes, at most %d", v.n, maxControlBody)
	}
	t, err := v.buf().Root()
	return ctrlTable{t: t, what: v.what}, ctrlWrap(v.what, err)
}

// offset follows the uoffset stored at at and returns its non-zero target,
// still to be checked by the caller. offset and table serve buffers whose
// root is not at 0, like BenchmarkEnvelope's size-prefixed one.
func (v *ctrlBuf) offset(at uint64) (uint64, error) {
	pos, err := v.buf().Offset(at)
	return pos, ctrlWrap(v.what, err)
}

func (v *ctrlBuf) table(pos uint64) (ctrlTable, error) {
	t, err := v.buf().Table(pos)
	return ctrlTable{t: t, what: v.what}, ctrlWrap(v.what, err)
}

// scalar returns the position of the size-byte field in slot, 0 if the field
// is absent, after checking that it lies inside the table, aligned.
func (t *ctrlTable) scalar(slot int, size uint64) (uint64, error) {
	at, err := t.t.Field(slot, size)
	return at, ctrlWrap(t.what, err)
}

// vector returns the elements of the byte vector (str: the string, without
// its NUL) that the offset field in slot points to, nil if the field is
// absent. A vector over limit bytes is refused.
func (t *ctrlTable) vector(slot int, str bool, limit ctrlLimit) ([]byte, error) {
	b, err := t.t.Bytes(slot, str, uint64(limit))
	return b, ctrlWrap(t.what, err)
}
