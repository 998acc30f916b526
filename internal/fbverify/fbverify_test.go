package fbverify

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	flatbuffers "github.com/google/flatbuffers/go"
)

// rawTable is a hand-laid buffer whose root table has a uint32 in slot 0 and
// a string in slot 1:
//
//	 0: root uoffset 12
//	 4: vtable: size 8, table size 12, slot 0 at +4, slot 1 at +8
//	12: table: soffset 8 (vtable at 4)
//	16: slot 0: 0xdeadbeef
//	20: slot 1: uoffset 4 (string at 24)
//	24: string: length 3, "abc", NUL
func rawTable() []byte {
	b := make([]byte, 32)
	le := binary.LittleEndian
	le.PutUint32(b[0:], 12)
	le.PutUint16(b[4:], 8)
	le.PutUint16(b[6:], 12)
	le.PutUint16(b[8:], 4)
	le.PutUint16(b[10:], 8)
	le.PutUint32(b[12:], 8)
	le.PutUint32(b[16:], 0xdeadbeef)
	le.PutUint32(b[20:], 4)
	le.PutUint32(b[24:], 3)
	copy(b[28:], "abc\x00")
	return b
}

// builtTable is a builder-made buffer: slot 0 a uint16, 1 a string, 2 a
// [ubyte], 3 a uint64, 4 a vector of two tables holding a string in slot 0,
// 5 an empty string; slot 6 is absent.
func builtTable() []byte {
	b := flatbuffers.NewBuilder(0)
	var elems [2]flatbuffers.UOffsetT
	for i, s := range []string{"one", "two"} {
		o := b.CreateString(s)
		b.StartObject(1)
		b.PrependUOffsetTSlot(0, o, 0)
		elems[i] = b.EndObject()
	}
	b.StartVector(4, len(elems), 4)
	for i := len(elems) - 1; i >= 0; i-- {
		b.PrependUOffsetT(elems[i])
	}
	vec := b.EndVector(len(elems))
	str := b.CreateString("hello")
	raw := b.CreateByteVector([]byte{1, 2, 3})
	empty := b.CreateString("")
	b.StartObject(7)
	b.PrependUint64Slot(3, 1<<40+5, 0)
	b.PrependUOffsetTSlot(1, str, 0)
	b.PrependUOffsetTSlot(2, raw, 0)
	b.PrependUOffsetTSlot(4, vec, 0)
	b.PrependUOffsetTSlot(5, empty, 0)
	b.PrependUint16Slot(0, 0x1234, 0)
	b.Finish(b.EndObject())
	return b.FinishedBytes()
}

func TestRaw(t *testing.T) {
	b := rawTable()
	tab, err := New(b).Root()
	if err != nil {
		t.Fatal(err)
	}
	at, err := tab.Field(0, 4)
	if err != nil || at != 16 || binary.LittleEndian.Uint32(b[at:]) != 0xdeadbeef {
		t.Fatalf("Field(0, 4) = %d, %v", at, err)
	}
	s, err := tab.Bytes(1, true, 3)
	if err != nil || string(s) != "abc" || cap(s) != 3 {
		t.Fatalf("Bytes(1) = %q (cap %d), %v", s, cap(s), err)
	}
	// Slots past the vtable are absent.
	if at, err := tab.Field(2, 8); at != 0 || err != nil {
		t.Fatalf("Field(2) = %d, %v; want absent", at, err)
	}
	if s, err := tab.Bytes(2, false, NoLimit); s != nil || err != nil {
		t.Fatalf("Bytes(2) = %q, %v; want absent", s, err)
	}
}

func TestBuilt(t *testing.T) {
	b := builtTable()
	v := New(b)
	tab, err := v.Root()
	if err != nil {
		t.Fatal(err)
	}
	if at, err := tab.Field(0, 2); err != nil || binary.LittleEndian.Uint16(b[at:]) != 0x1234 {
		t.Fatalf("slot 0: %d, %v", at, err)
	}
	if at, err := tab.Field(3, 8); err != nil || binary.LittleEndian.Uint64(b[at:]) != 1<<40+5 {
		t.Fatalf("slot 3: %d, %v", at, err)
	}
	if s, err := tab.Bytes(1, true, NoLimit); err != nil || string(s) != "hello" {
		t.Fatalf("slot 1: %q, %v", s, err)
	}
	if s, err := tab.Bytes(2, false, 3); err != nil || !bytes.Equal(s, []byte{1, 2, 3}) {
		t.Fatalf("slot 2: %v, %v", s, err)
	}
	// A present empty string is empty but not nil; an absent one is nil.
	if s, err := tab.Bytes(5, true, 0); err != nil || s == nil || len(s) != 0 {
		t.Fatalf("slot 5: %q (nil %t), %v", s, s == nil, err)
	}
	if s, err := tab.Bytes(6, true, 0); err != nil || s != nil {
		t.Fatalf("slot 6: %q, %v", s, err)
	}
	start, count, err := tab.Vector(4, 4, false, 2)
	if err != nil || count != 2 {
		t.Fatalf("slot 4: %d elements, %v", count, err)
	}
	for i, want := range []string{"one", "two"} {
		pos, err := v.Offset(start + 4*uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		elem, err := v.Table(pos)
		if err != nil {
			t.Fatal(err)
		}
		if s, err := elem.Bytes(0, true, NoLimit); err != nil || string(s) != want {
			t.Fatalf("element %d: %q, %v", i, s, err)
		}
	}
	// Limits: count == limit passes, one over is refused.
	if _, err := tab.Bytes(1, true, 4); !isError(err) {
		t.Fatalf("5-byte string under limit 4: %v", err)
	}
	if _, _, err := tab.Vector(4, 4, false, 1); !isError(err) {
		t.Fatalf("2 tables under limit 1: %v", err)
	}
}

func isError(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Error() != ""
}

// Each bad buffer is refused with an *Error by the check that reads it.
func TestRefusals(t *testing.T) {
	le := binary.LittleEndian
	for _, tc := range []struct {
		name   string
		mutate func(b []byte) []byte
		read   func(Table) error // after Root; nil: Root refuses
	}{
		{name: "too short", mutate: func(b []byte) []byte { return b[:3] }},
		{name: "zero root offset", mutate: func(b []byte) []byte { le.PutUint32(b, 0); return b }},
		{name: "root outside", mutate: func(b []byte) []byte { le.PutUint32(b, 32); return b }},
		{name: "table misaligned", mutate: func(b []byte) []byte { le.PutUint32(b, 14); return b }},
		{name: "vtable before the buffer", mutate: func(b []byte) []byte { le.PutUint32(b[12:], 16); return b }},
		{name: "vtable after the buffer", mutate: func(b []byte) []byte { le.PutUint32(b[12:], 0xffffffe0); return b }},
		{name: "vtable misaligned", mutate: func(b []byte) []byte { le.PutUint32(b[12:], 7); return b }},
		{name: "vtable size under 4", mutate: func(b []byte) []byte { le.PutUint16(b[4:], 2); return b }},
		{name: "vtable size odd", mutate: func(b []byte) []byte { le.PutUint16(b[4:], 7); return b }},
		{name: "vtable size outside", mutate: func(b []byte) []byte { le.PutUint16(b[4:], 30); return b }},
		{name: "table size under 4", mutate: func(b []byte) []byte { le.PutUint16(b[6:], 3); return b }},
		{name: "table size outside", mutate: func(b []byte) []byte { le.PutUint16(b[6:], 24); return b }},
		{name: "field inside the soffset", mutate: func(b []byte) []byte { le.PutUint16(b[8:], 2); return b },
			read: func(t Table) error { _, err := t.Field(0, 2); return err }},
		{name: "field past the table", mutate: func(b []byte) []byte { le.PutUint16(b[8:], 12); return b },
			read: func(t Table) error { _, err := t.Field(0, 4); return err }},
		{name: "field misaligned", mutate: func(b []byte) []byte { le.PutUint16(b[8:], 6); return b },
			read: func(t Table) error { _, err := t.Field(0, 4); return err }},
		{name: "zero vector offset", mutate: func(b []byte) []byte { le.PutUint32(b[20:], 0); return b },
			read: func(t Table) error { _, err := t.Bytes(1, true, NoLimit); return err }},
		{name: "vector outside", mutate: func(b []byte) []byte { le.PutUint32(b[20:], 12); return b },
			read: func(t Table) error { _, err := t.Bytes(1, true, NoLimit); return err }},
		{name: "vector misaligned", mutate: func(b []byte) []byte { le.PutUint32(b[20:], 5); return b },
			read: func(t Table) error { _, err := t.Bytes(1, true, NoLimit); return err }},
		{name: "vector runs outside", mutate: func(b []byte) []byte { le.PutUint32(b[24:], 5); return b },
			read: func(t Table) error { _, err := t.Bytes(1, false, NoLimit); return err }},
		{name: "huge vector", mutate: func(b []byte) []byte { le.PutUint32(b[24:], 0xffffffff); return b },
			read: func(t Table) error { _, _, err := t.Vector(1, 8, false, NoLimit); return err }},
		{name: "string without NUL", mutate: func(b []byte) []byte { b[31] = 'x'; return b },
			read: func(t Table) error { _, err := t.Bytes(1, true, NoLimit); return err }},
		{name: "string NUL outside", mutate: func(b []byte) []byte { le.PutUint32(b[24:], 4); return b },
			read: func(t Table) error { _, err := t.Bytes(1, true, NoLimit); return err }},
		{name: "over limit", mutate: func(b []byte) []byte { return b },
			read: func(t Table) error { _, err := t.Bytes(1, true, 2); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mutate(rawTable())
			tab, err := New(b).Root()
			if tc.read == nil {
				if !isError(err) {
					t.Fatalf("Root: %v, want an *Error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Root: %v", err)
			}
			if err := tc.read(tab); !isError(err) {
				t.Fatalf("got %v, want an *Error", err)
			}
		})
	}
	// The same string without a NUL check is fine.
	b := rawTable()
	b[31] = 'x'
	tab, err := New(b).Root()
	if err != nil {
		t.Fatal(err)
	}
	if s, err := tab.Bytes(1, false, NoLimit); err != nil || string(s) != "abc" {
		t.Fatalf("bytes: %q, %v", s, err)
	}
}

// No prefix of a valid buffer makes a check panic or return anything but an
// *Error.
func TestTruncated(t *testing.T) {
	b := builtTable()
	for i := range len(b) {
		walk(t, b[:i:i], 0)
	}
}

// A successful walk allocates nothing.
func TestNoAllocs(t *testing.T) {
	b := builtTable()
	if n := testing.AllocsPerRun(100, func() {
		tab, err := New(b).Root()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tab.Field(3, 8); err != nil {
			t.Fatal(err)
		}
		if _, err := tab.Bytes(1, true, NoLimit); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations, want 0", n)
	}
}
