package fbverify

import (
	"encoding/binary"
	"fmt"
	"math"
)

// NoLimit is a vector limit that no vector exceeds: its length is a uint32.
const NoLimit = math.MaxUint32

// Error is a refusal: what is wrong with the buffer, and where.
type Error struct{ msg string }

func (e *Error) Error() string { return e.msg }

func errorf(format string, args ...any) error {
	return &Error{msg: fmt.Sprintf(format, args...)}
}

// Buffer is an untrusted FlatBuffers buffer, only read. Positions in it are
// byte offsets from its start.
type Buffer struct{ b []byte }

// New returns b as a Buffer.
func New(b []byte) Buffer { return Buffer{b: b} }

func (v Buffer) len() uint64          { return uint64(len(v.b)) }
func (v Buffer) u16(at uint64) uint64 { return uint64(binary.LittleEndian.Uint16(v.b[at:])) }
func (v Buffer) u32(at uint64) uint64 { return uint64(binary.LittleEndian.Uint32(v.b[at:])) }

// Table is a checked table: its position, its vtable's, and their sizes
// (uint16 on the wire).
type Table struct {
	v      Buffer
	pos    uint64
	vt     uint64
	vtLen  uint16
	tabLen uint16
}

// Root checks the root offset at 0 and the table it points to.
func (v Buffer) Root() (Table, error) {
	if v.len() < 4 {
		return Table{}, errorf("%d bytes, too short for a FlatBuffer", v.len())
	}
	pos, err := v.Offset(0)
	if err != nil {
		return Table{}, err
	}
	return v.Table(pos)
}

// Offset follows the uoffset stored at at (which must be in bounds and
// aligned) and returns its non-zero target, still to be checked by the caller.
func (v Buffer) Offset(at uint64) (uint64, error) {
	n := v.len()
	if at%4 != 0 || at+4 > n {
		return 0, errorf("offset at %d is misaligned or outside the %d-byte buffer", at, n)
	}
	o := v.u32(at)
	if o == 0 {
		return 0, errorf("zero offset at %d", at)
	}
	return at + o, nil
}

// Table checks the table at pos and its vtable.
func (v Buffer) Table(pos uint64) (Table, error) {
	n := v.len()
	if pos%4 != 0 || pos+4 > n {
		return Table{}, errorf("table at %d is misaligned or outside the %d-byte buffer", pos, n)
	}
	vt := int64(pos) - int64(int32(binary.LittleEndian.Uint32(v.b[pos:])))
	if vt < 0 || vt%2 != 0 || uint64(vt)+4 > n {
		return Table{}, errorf("vtable of the table at %d is misaligned or outside the buffer", pos)
	}
	uvt := uint64(vt)
	vtLen, tabLen := v.u16(uvt), v.u16(uvt+2)
	if vtLen < 4 || vtLen%2 != 0 || uvt+vtLen > n {
		return Table{}, errorf("vtable at %d has a bad size %d", uvt, vtLen)
	}
	if tabLen < 4 || pos+tabLen > n {
		return Table{}, errorf("table at %d has a bad size %d", pos, tabLen)
	}
	return Table{v: v, pos: pos, vt: uvt, vtLen: uint16(vtLen), tabLen: uint16(tabLen)}, nil
}

// Field returns the absolute position of the field in slot (its index in
// the schema's table), 0 if the field is absent, after checking that size
// bytes of it (1, 2, 4 or 8) lie inside the table, aligned.
func (t *Table) Field(slot int, size uint64) (uint64, error) {
	vo := 4 + 2*uint64(slot)
	if vo+2 > uint64(t.vtLen) {
		return 0, nil
	}
	fo := t.v.u16(t.vt + vo)
	if fo == 0 {
		return 0, nil
	}
	at := t.pos + fo
	if fo < 4 || fo+size > uint64(t.tabLen) || at%size != 0 {
		return 0, errorf("field %d of the table at %d is misplaced", slot, t.pos)
	}
	return at, nil
}

// Vector checks the vector that the offset field in slot points to, with
// elements of size bytes (1, 2, 4 or 8; str: a string, NUL-terminated) and at
// most limit of them, and returns where its elements start and how many there
// are; start is 0 if the field is absent.
func (t *Table) Vector(slot int, size uint64, str bool, limit uint64) (start, count uint64, err error) {
	at, err := t.Field(slot, 4)
	if err != nil || at == 0 {
		return 0, 0, err
	}
	v := t.v
	pos, err := v.Offset(at)
	if err != nil {
		return 0, 0, err
	}
	n := v.len()
	if pos%4 != 0 || pos+4 > n {
		return 0, 0, errorf("vector at %d (field %d) is misaligned or outside the %d-byte buffer", pos, slot, n)
	}
	count, start = v.u32(pos), pos+4
	if count > limit {
		return 0, 0, errorf("field %d is %d bytes, at most %d", slot, count*size, limit*size)
	}
	end := start + count*size
	if end > n || (str && (end >= n || v.b[end] != 0)) {
		return 0, 0, errorf("vector at %d (field %d) of %d bytes runs outside the buffer", pos, slot, count*size)
	}
	return start, count, nil
}

// Bytes returns the elements of the byte vector (str: the string, without
// its NUL) that the offset field in slot points to, nil if the field is
// absent. A vector over limit bytes is refused. The result aliases the
// buffer, its capacity cut to its length.
func (t *Table) Bytes(slot int, str bool, limit uint64) ([]byte, error) {
	start, count, err := t.Vector(slot, 1, str, limit)
	if err != nil || start == 0 {
		return nil, err
	}
	end := start + count
	return t.v.b[start:end:end], nil
}
