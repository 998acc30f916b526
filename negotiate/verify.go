package negotiate

import (
	"encoding/binary"

	"github.com/ringwire/ringwire/negotiate/internal/fb"
)

// The Go FlatBuffers runtime has no verifier and its accessors index the
// buffer directly, so a hostile buffer could make them panic. verifyEnvelope
// checks, before any accessor runs, every table, vtable, offset, vector and
// string that Decode will read, the way FlatBuffers' C++ Verifier does: inside
// the buffer, aligned, strings NUL-terminated. Field layouts below mirror
// handshake.fbs (a field's slot is its index in the table).

type fieldKind uint8

const (
	fScalar fieldKind = iota // inline value of size bytes
	fBytes                   // offset to a [ubyte] vector
	fString                  // offset to a string
	fTables                  // offset to a vector of tables of layout elem
)

type field struct {
	slot int
	kind fieldKind
	size uint64 // fScalar only
	elem *layout
}

type layout struct {
	fields []field
}

var (
	constantLayout = &layout{fields: []field{
		{slot: 0, kind: fString}, // key
		{slot: 1, kind: fString}, // value
	}}
	helloLayout = &layout{fields: []field{
		{slot: 0, kind: fScalar, size: 2}, // min_version
		{slot: 1, kind: fScalar, size: 2}, // max_version
		{slot: 2, kind: fScalar, size: 1}, // shm
		{slot: 3, kind: fBytes},           // compressions
		{slot: 4, kind: fScalar, size: 8}, // max_message
		{slot: 5, kind: fBytes},           // contract
		{slot: 6, kind: fBytes},           // token
		{slot: 7, kind: fString},          // name
		{slot: 8, kind: fString},          // app_version
		{slot: 9, kind: fTables, elem: constantLayout},
	}}
	acceptLayout = &layout{fields: []field{
		{slot: 0, kind: fScalar, size: 2}, // version
		{slot: 1, kind: fScalar, size: 1}, // transport
		{slot: 2, kind: fScalar, size: 1}, // compression
		{slot: 3, kind: fScalar, size: 4}, // ring_size
		{slot: 4, kind: fScalar, size: 8}, // max_message
		{slot: 5, kind: fBytes},           // contract
		{slot: 6, kind: fString},          // name
		{slot: 7, kind: fString},          // app_version
		{slot: 8, kind: fTables, elem: constantLayout},
	}}
	refuseLayout = &layout{fields: []field{
		{slot: 0, kind: fScalar, size: 1}, // reason
		{slot: 1, kind: fString},          // message
	}}
	ackLayout = &layout{}

	bodyLayouts = map[fb.Body]*layout{
		fb.BodyHello:  helloLayout,
		fb.BodyAccept: acceptLayout,
		fb.BodyRefuse: refuseLayout,
		fb.BodyAck:    ackLayout,
	}
)

// verifyEnvelope checks the whole buffer and returns the body's type.
func verifyEnvelope(b []byte) (fb.Body, error) {
	v := verifier{b: b, n: uint64(len(b))}
	if v.n < 4 {
		return 0, malformed("message is %d bytes, too short for a FlatBuffer", v.n)
	}
	root, err := v.offset(0)
	if err != nil {
		return 0, err
	}
	env, err := v.table(root)
	if err != nil {
		return 0, err
	}
	typeAt, err := env.field(0, 1)
	if err != nil {
		return 0, err
	}
	if typeAt == 0 {
		return 0, malformed("envelope without a body type")
	}
	kind := fb.Body(b[typeAt])
	lay, ok := bodyLayouts[kind]
	if !ok {
		return 0, malformed("unknown body type %d", kind)
	}
	bodyAt, err := env.field(1, 4)
	if err != nil {
		return 0, err
	}
	if bodyAt == 0 {
		return 0, malformed("envelope without a body")
	}
	body, err := v.offset(bodyAt)
	if err != nil {
		return 0, err
	}
	if err := v.verify(body, lay); err != nil {
		return 0, err
	}
	return kind, nil
}

type verifier struct {
	b []byte
	n uint64
}

// table is a verified table start: its position and its vtable's.
type table struct {
	v      *verifier
	pos    uint64
	vt     uint64
	vtLen  uint64
	tabLen uint64
}

func (v *verifier) u16(at uint64) uint64 { return uint64(binary.LittleEndian.Uint16(v.b[at:])) }
func (v *verifier) u32(at uint64) uint64 { return uint64(binary.LittleEndian.Uint32(v.b[at:])) }

// offset follows the uoffset stored at at (which must be in bounds and
// aligned) and returns its non-zero target, still to be checked by the caller.
func (v *verifier) offset(at uint64) (uint64, error) {
	if at%4 != 0 || at+4 > v.n {
		return 0, malformed("offset at %d is misaligned or outside the %d-byte message", at, v.n)
	}
	o := v.u32(at)
	if o == 0 {
		return 0, malformed("zero offset at %d", at)
	}
	return at + o, nil
}

func (v *verifier) table(pos uint64) (table, error) {
	if pos%4 != 0 || pos+4 > v.n {
		return table{}, malformed("table at %d is misaligned or outside the message", pos)
	}
	vt := int64(pos) - int64(int32(binary.LittleEndian.Uint32(v.b[pos:])))
	if vt < 0 || vt%2 != 0 || uint64(vt)+4 > v.n {
		return table{}, malformed("vtable of the table at %d is misaligned or outside the message", pos)
	}
	t := table{v: v, pos: pos, vt: uint64(vt)}
	t.vtLen, t.tabLen = v.u16(t.vt), v.u16(t.vt+2)
	if t.vtLen < 4 || t.vtLen%2 != 0 || t.vt+t.vtLen > v.n {
		return table{}, malformed("vtable at %d has a bad size %d", t.vt, t.vtLen)
	}
	if t.tabLen < 4 || pos+t.tabLen > v.n {
		return table{}, malformed("table at %d has a bad size %d", pos, t.tabLen)
	}
	return t, nil
}

// field returns the absolute position of the field in slot, 0 if the field is
// absent, after checking that size bytes of it lie inside the table, aligned.
func (t table) field(slot int, size uint64) (uint64, error) {
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
		return 0, malformed("field %d of the table at %d is misplaced", slot, t.pos)
	}
	return at, nil
}

// vector checks the vector at pos with elements of size bytes (and, for a
// string, its terminating NUL) and returns where its elements start and how
// many there are.
func (v *verifier) vector(pos, size uint64, str bool) (start, count uint64, err error) {
	if pos%4 != 0 || pos+4 > v.n {
		return 0, 0, malformed("vector at %d is misaligned or outside the message", pos)
	}
	count, start = v.u32(pos), pos+4
	end := start + count*size // count < 2^32, size <= 4: no overflow
	if end > v.n || (str && (end >= v.n || v.b[end] != 0)) {
		return 0, 0, malformed("vector at %d with %d elements runs outside the message", pos, count)
	}
	return start, count, nil
}

// verify checks the table at pos and every field lay declares, recursively.
func (v *verifier) verify(pos uint64, lay *layout) error {
	t, err := v.table(pos)
	if err != nil {
		return err
	}
	for _, f := range lay.fields {
		size := f.size
		if f.kind != fScalar {
			size = 4
		}
		at, err := t.field(f.slot, size)
		if err != nil {
			return err
		}
		if at == 0 || f.kind == fScalar {
			continue
		}
		target, err := v.offset(at)
		if err != nil {
			return err
		}
		switch f.kind {
		case fBytes, fString:
			if _, _, err := v.vector(target, 1, f.kind == fString); err != nil {
				return err
			}
		case fTables:
			start, count, err := v.vector(target, 4, false)
			if err != nil {
				return err
			}
			for i := range count {
				elem, err := v.offset(start + 4*i)
				if err != nil {
					return err
				}
				if err := v.verify(elem, f.elem); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
