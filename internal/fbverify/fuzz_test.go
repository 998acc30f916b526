package fbverify

import (
	"bytes"
	"testing"
)

// FuzzVerify walks arbitrary bytes as a FlatBuffer with every check: none
// panics, every refusal is an *Error, and what is accepted lies inside the
// buffer as promised.
func FuzzVerify(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{4, 0, 0, 0, 0, 0, 0, 0})
	f.Add(rawTable())
	f.Add(builtTable())
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		walk(t, b, 0)
		if !bytes.Equal(in, b) {
			t.Fatal("the checks changed their input")
		}
	})
}

// walk reads the root table of b (depth 0) or, recursively, tables in
// vectors of tables, through every check, failing t on a broken promise.
func walk(t *testing.T, b []byte, depth int) {
	t.Helper()
	v := New(b)
	tab, err := v.Root()
	if err != nil {
		mustError(t, err)
		return
	}
	walkTable(t, v, tab, depth)
}

func walkTable(t *testing.T, v Buffer, tab Table, depth int) {
	t.Helper()
	n := uint64(len(v.b))
	for slot := range 8 {
		for _, size := range []uint64{1, 2, 4, 8} {
			at, err := tab.Field(slot, size)
			if err != nil {
				mustError(t, err)
				continue
			}
			if at != 0 && (at%size != 0 || at+size > n || at < tab.pos+4) {
				t.Fatalf("Field(%d, %d) = %d, outside or misaligned", slot, size, at)
			}
		}
		for _, str := range []bool{false, true} {
			for _, limit := range []uint64{0, 3, NoLimit} {
				s, err := tab.Bytes(slot, str, limit)
				if err != nil {
					mustError(t, err)
					continue
				}
				if uint64(len(s)) > limit || cap(s) != len(s) {
					t.Fatalf("Bytes(%d) is %d bytes (cap %d), limit %d", slot, len(s), cap(s), limit)
				}
			}
		}
		for _, size := range []uint64{1, 4, 8} {
			start, count, err := tab.Vector(slot, size, true, NoLimit)
			if err != nil {
				mustError(t, err)
				continue
			}
			if start != 0 && (start+count*size >= n || v.b[start+count*size] != 0) {
				t.Fatalf("Vector(%d, %d): %d elements at %d, outside or unterminated", slot, size, count, start)
			}
		}
		if depth >= 2 {
			continue
		}
		start, count, err := tab.Vector(slot, 4, false, 8)
		if err != nil {
			mustError(t, err)
			continue
		}
		for i := range count {
			pos, err := v.Offset(start + 4*i)
			if err != nil {
				mustError(t, err)
				continue
			}
			elem, err := v.Table(pos)
			if err != nil {
				mustError(t, err)
				continue
			}
			walkTable(t, v, elem, depth+1)
		}
	}
}

func mustError(t *testing.T, err error) {
	t.Helper()
	if !isError(err) {
		t.Fatalf("refusal %v (%T) is not an *Error", err, err)
	}
}
