package rpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/ringwire/ringwire/internal/rpc/internal/fb"
)

func TestErrorBodyRoundTrip(t *testing.T) {
	maxMsg := strings.Repeat("m", int(ctrlMaxMessage))
	maxDetails := bytes.Repeat([]byte{0xd5}, int(ctrlMaxDetails))
	cases := []struct {
		name    string
		code    uint32
		msg     string
		details []byte
		// what parses back, when the encoder cuts or drops
		wantMsg     string
		wantDetails []byte
		cut         bool
	}{
		{name: "empty"},
		{name: "code only", code: 7},
		{name: "max code", code: math.MaxUint32, msg: "x", details: []byte{1}},
		{name: "message only", msg: "no such method"},
		{name: "details only", details: []byte{0, 1, 2, 0, 0}},
		{name: "unicode", code: 3, msg: "résumé ✓ 日本語 🚀", details: []byte("δ")},
		{name: "NUL inside", msg: "a\x00b", details: []byte{0}},
		{name: "max sizes", code: 12, msg: maxMsg, details: maxDetails},
		{name: "message cut", code: 2, msg: maxMsg + "overflow", details: []byte{9},
			wantMsg: maxMsg, wantDetails: []byte{9}, cut: true},
		{name: "message cut at a rune start", msg: strings.Repeat("a", int(ctrlMaxMessage)-1) + "€",
			wantMsg: strings.Repeat("a", int(ctrlMaxMessage)-1), cut: true},
		{name: "oversized details dropped", code: 5, msg: "m", details: append(maxDetails, 1),
			wantMsg: "m", wantDetails: nil, cut: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantMsg, wantDetails := c.msg, c.details
			if c.cut {
				wantMsg, wantDetails = c.wantMsg, c.wantDetails
			}
			prefix := []byte("hdr")
			out := appendErrorBody(append([]byte(nil), prefix...), c.code, c.msg, c.details)
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf("dst's bytes were not kept: %q", out[:len(prefix)])
			}
			body := out[len(prefix):]
			if len(body) > maxControlBody {
				t.Fatalf("body is %d bytes", len(body))
			}
			code, msg, details, err := parseErrorBody(body)
			if err != nil {
				t.Fatal(err)
			}
			if code != c.code || msg != wantMsg || !bytes.Equal(details, wantDetails) {
				t.Fatalf("got (%d, %d-byte %.40q, %d-byte details), want (%d, %d-byte %.40q, %d-byte details)",
					code, len(msg), msg, len(details), c.code, len(wantMsg), wantMsg, len(wantDetails))
			}
			if len(wantDetails) == 0 && details != nil {
				t.Fatalf("empty details decode as %#v, want nil", details)
			}
			if !utf8.ValidString(msg) {
				t.Fatalf("message %q is not valid UTF-8", msg)
			}
			// A strict prefix of a body is refused, unless all it leaves out
			// is the builder's zero padding.
			for i := range len(body) {
				pc, pm, pd, err := parseErrorBody(body[:i])
				if err == nil && (!ctrlZeros(body[i:]) || pc != code || pm != msg || !bytes.Equal(pd, details)) {
					t.Fatalf("%d-byte prefix of a %d-byte body parses as (%d, %.40q, %d-byte details)", i, len(body), pc, pm, len(pd))
				}
				if err != nil && !errors.Is(err, errCorruptControl) {
					t.Fatalf("%d-byte prefix of a %d-byte body: err = %v", i, len(body), err)
				}
			}
		})
	}
}

func TestGoAwayBodyRoundTrip(t *testing.T) {
	maxReason := strings.Repeat("r", int(ctrlMaxReason))
	cases := []struct {
		name       string
		reason     string
		lastCall   uint64
		wantReason string
		cut        bool
	}{
		{name: "empty"},
		{name: "last call only", lastCall: 41},
		{name: "max last call", reason: "shutting down", lastCall: math.MaxUint64},
		{name: "unicode", reason: "arrêt — 再见 👋", lastCall: 1 << 40},
		{name: "max size", reason: maxReason, lastCall: 3},
		{name: "reason cut", reason: maxReason + "more", lastCall: 3, wantReason: maxReason, cut: true},
		{name: "reason cut at a rune start", reason: strings.Repeat("r", int(ctrlMaxReason)-2) + "日",
			wantReason: strings.Repeat("r", int(ctrlMaxReason)-2), cut: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := c.reason
			if c.cut {
				want = c.wantReason
			}
			prefix := []byte{0xee, 0xee}
			out := appendGoAwayBody(append([]byte(nil), prefix...), c.reason, c.lastCall)
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf("dst's bytes were not kept: %x", out[:len(prefix)])
			}
			body := out[len(prefix):]
			reason, lastCall, err := parseGoAwayBody(body)
			if err != nil {
				t.Fatal(err)
			}
			if reason != want || lastCall != c.lastCall {
				t.Fatalf("got (%d-byte %.40q, %d), want (%d-byte %.40q, %d)",
					len(reason), reason, lastCall, len(want), want, c.lastCall)
			}
			for i := range len(body) {
				pr, pl, err := parseGoAwayBody(body[:i])
				if err == nil && (!ctrlZeros(body[i:]) || pr != reason || pl != lastCall) {
					t.Fatalf("%d-byte prefix of a %d-byte body parses as (%.40q, %d)", i, len(body), pr, pl)
				}
				if err != nil && !errors.Is(err, errCorruptControl) {
					t.Fatalf("%d-byte prefix of a %d-byte body: err = %v", i, len(body), err)
				}
			}
		})
	}
}

func ctrlZeros(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// The decoded values must not alias the input, which may be shared memory.
func TestControlBodiesAreCopied(t *testing.T) {
	body := appendErrorBody(nil, 1, "message", []byte("details"))
	_, msg, details, err := parseErrorBody(body)
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 'X'
	}
	if msg != "message" || string(details) != "details" {
		t.Fatalf("decoded values changed with the input: %q %q", msg, details)
	}

	body = appendGoAwayBody(nil, "reason", 9)
	reason, _, err := parseGoAwayBody(body)
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 'X'
	}
	if reason != "reason" {
		t.Fatalf("decoded reason changed with the input: %q", reason)
	}
}

// Fields a later schema appends are skipped, and the other table's body is
// refused or read harmlessly, never misread into a crash.
func TestControlBodyNewerSchema(t *testing.T) {
	b := flatbuffers.NewBuilder(0)
	extra := b.CreateString("from the future")
	msg := b.CreateString("hi")
	b.StartObject(5)
	b.PrependUOffsetTSlot(4, extra, 0)
	b.PrependUint64Slot(3, 77, 0)
	fb.ErrorAddMessage(b, msg)
	fb.ErrorAddCode(b, 4)
	b.Finish(b.EndObject())
	code, m, details, err := parseErrorBody(b.FinishedBytes())
	if err != nil || code != 4 || m != "hi" || details != nil {
		t.Fatalf("got (%d, %q, %v, %v), want (4, \"hi\", nil, nil)", code, m, details, err)
	}
}

// ctrlRawError builds an Error without appendErrorBody's bounds.
func ctrlRawError(code uint32, msg string, details []byte) []byte {
	b := flatbuffers.NewBuilder(0)
	var d, m flatbuffers.UOffsetT
	if details != nil {
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
	return b.FinishedBytes()
}

func ctrlRawGoAway(reason string, lastCall uint64) []byte {
	b := flatbuffers.NewBuilder(0)
	r := b.CreateString(reason)
	fb.GoAwayStart(b)
	fb.GoAwayAddLastCall(b, lastCall)
	fb.GoAwayAddReason(b, r)
	b.Finish(fb.GoAwayEnd(b))
	return b.FinishedBytes()
}

// ctrlLayout locates the parts of a body built by the Go builder, to corrupt
// them: the root table, its vtable, and the absolute position of each field.
type ctrlLayout struct {
	root, vt uint32
	field    []uint32 // 0: absent
}

func ctrlLocate(t *testing.T, b []byte) ctrlLayout {
	t.Helper()
	var l ctrlLayout
	l.root = binary.LittleEndian.Uint32(b)
	l.vt = uint32(int64(l.root) - int64(int32(binary.LittleEndian.Uint32(b[l.root:]))))
	vtLen := binary.LittleEndian.Uint16(b[l.vt:])
	for vo := uint32(4); vo < uint32(vtLen); vo += 2 {
		fo := uint32(binary.LittleEndian.Uint16(b[l.vt+vo:]))
		if fo != 0 {
			fo += l.root
		}
		l.field = append(l.field, fo)
	}
	return l
}

// target is where the offset field at at points.
func (l ctrlLayout) target(b []byte, at uint32) uint32 {
	return at + binary.LittleEndian.Uint32(b[at:])
}

func TestControlBodyRefusals(t *testing.T) {
	valid := appendErrorBody(nil, 0x0102, "message", []byte("details"))
	validGA := appendGoAwayBody(nil, "reason", 1<<33)
	if _, _, _, err := parseErrorBody(valid); err != nil {
		t.Fatal(err)
	}
	if _, _, err := parseGoAwayBody(validGA); err != nil {
		t.Fatal(err)
	}
	type mutation struct {
		name   string
		goaway bool // else error
		mutate func(t *testing.T, b []byte) []byte
	}
	le := binary.LittleEndian
	muts := []mutation{
		{name: "nil", mutate: func(*testing.T, []byte) []byte { return nil }},
		{name: "empty", goaway: true, mutate: func(*testing.T, []byte) []byte { return []byte{} }},
		{name: "3 bytes", mutate: func(*testing.T, []byte) []byte { return []byte{4, 0, 0} }},
		{name: "zero root offset", mutate: func(_ *testing.T, b []byte) []byte { le.PutUint32(b, 0); return b }},
		{name: "root offset past the end", mutate: func(_ *testing.T, b []byte) []byte {
			le.PutUint32(b, uint32(len(b)))
			return b
		}},
		{name: "root offset max", goaway: true, mutate: func(_ *testing.T, b []byte) []byte {
			le.PutUint32(b, math.MaxUint32)
			return b
		}},
		{name: "misaligned root", mutate: func(_ *testing.T, b []byte) []byte { le.PutUint32(b, le.Uint32(b)+1); return b }},
		{name: "vtable before the buffer", mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint32(b[l.root:], l.root+2)
			return b
		}},
		{name: "vtable past the end", goaway: true, mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint32(b[l.root:], uint32(-int32(len(b))))
			return b
		}},
		{name: "vtable offset int32 min", mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint32(b[l.root:], 1<<31)
			return b
		}},
		{name: "misaligned vtable", mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint32(b[l.root:], le.Uint32(b[l.root:])+1)
			return b
		}},
		{name: "vtable size 2", goaway: true, mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint16(b[l.vt:], 2)
			return b
		}},
		{name: "odd vtable size", mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint16(b[l.vt:], le.Uint16(b[l.vt:])+1)
			return b
		}},
		{name: "vtable size past the end", mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint16(b[l.vt:], 0xfffe)
			return b
		}},
		{name: "table size past the end", goaway: true, mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint16(b[l.vt+2:], 0xffff)
			return b
		}},
		{name: "table size 0", mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint16(b[l.vt+2:], 0)
			return b
		}},
		{name: "field offset past the table", mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint16(b[l.vt+4:], le.Uint16(b[l.vt+2:])) // code at the table's end
			return b
		}},
		{name: "field offset inside the vtable offset", goaway: true, mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint16(b[l.vt+6:], 2) // last_call
			return b
		}},
		{name: "misaligned u64 field", goaway: true, mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint16(b[l.vt+6:], le.Uint16(b[l.vt+6:])-4)
			return b
		}},
		{name: "string offset zero", mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint32(b[l.field[1]:], 0)
			return b
		}},
		{name: "string offset past the end", goaway: true, mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint32(b[l.field[0]:], uint32(len(b)))
			return b
		}},
		{name: "string offset max", mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint32(b[l.field[1]:], math.MaxUint32)
			return b
		}},
		{name: "misaligned string", mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint32(b[l.field[1]:], le.Uint32(b[l.field[1]:])+1)
			return b
		}},
		{name: "string without its NUL", goaway: true, mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			s := l.target(b, l.field[0])
			b[s+4+le.Uint32(b[s:])] = '!'
			return b
		}},
		{name: "string length past the end", mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint32(b[l.target(b, l.field[1]):], uint32(len(b)))
			return b
		}},
		{name: "string length max", goaway: true, mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint32(b[l.target(b, l.field[0]):], math.MaxUint32)
			return b
		}},
		{name: "vector length past the end", mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint32(b[l.target(b, l.field[2]):], uint32(len(b)))
			return b
		}},
		{name: "vector length max", mutate: func(t *testing.T, b []byte) []byte {
			l := ctrlLocate(t, b)
			le.PutUint32(b[l.target(b, l.field[2]):], math.MaxUint32)
			return b
		}},
		{name: "over maxControlBody", mutate: func(_ *testing.T, b []byte) []byte {
			return append(b, make([]byte, maxControlBody+1-len(b))...)
		}},
		{name: "over maxControlBody", goaway: true, mutate: func(_ *testing.T, b []byte) []byte {
			return append(b, make([]byte, maxControlBody+1-len(b))...)
		}},
		{name: "message over its bound", mutate: func(*testing.T, []byte) []byte {
			return ctrlRawError(1, strings.Repeat("m", int(ctrlMaxMessage)+1), nil)
		}},
		{name: "details over their bound", mutate: func(*testing.T, []byte) []byte {
			return ctrlRawError(1, "m", make([]byte, ctrlMaxDetails+1))
		}},
		{name: "reason over its bound", goaway: true, mutate: func(*testing.T, []byte) []byte {
			return ctrlRawGoAway(strings.Repeat("r", int(ctrlMaxReason)+1), 1)
		}},
	}
	for _, m := range muts {
		kind := "error"
		if m.goaway {
			kind = "goaway"
		}
		t.Run(kind+"/"+m.name, func(t *testing.T) {
			var err error
			if m.goaway {
				b := m.mutate(t, bytes.Clone(validGA))
				var reason string
				reason, _, err = parseGoAwayBody(b)
				if err == nil {
					t.Fatalf("accepted, reason %q", reason)
				}
			} else {
				b := m.mutate(t, bytes.Clone(valid))
				var msg string
				_, msg, _, err = parseErrorBody(b)
				if err == nil {
					t.Fatalf("accepted, message %q", msg)
				}
			}
			if !errors.Is(err, errCorruptControl) {
				t.Fatalf("err = %v, does not wrap errCorruptControl", err)
			}
			t.Log(err)
		})
	}
	// Exactly at the bounds is fine.
	if _, _, _, err := parseErrorBody(ctrlRawError(1, strings.Repeat("m", int(ctrlMaxMessage)), make([]byte, ctrlMaxDetails))); err != nil {
		t.Errorf("message and details at their bounds: %v", err)
	}
	if _, _, err := parseGoAwayBody(ctrlRawGoAway(strings.Repeat("r", int(ctrlMaxReason)), 1)); err != nil {
		t.Errorf("reason at its bound: %v", err)
	}
}

// Random bytes, and valid bodies with random bytes changed, never panic, and
// any refusal wraps errCorruptControl.
func TestControlBodyGarbage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	bodies := [][]byte{
		appendErrorBody(nil, 9, "some message", []byte{1, 2, 3, 4, 5}),
		appendGoAwayBody(nil, "going away", 1234),
	}
	check := func(b []byte) {
		if _, _, _, err := parseErrorBody(b); err != nil && !errors.Is(err, errCorruptControl) {
			t.Fatalf("parseErrorBody(%x): %v", b, err)
		}
		if _, _, err := parseGoAwayBody(b); err != nil && !errors.Is(err, errCorruptControl) {
			t.Fatalf("parseGoAwayBody(%x): %v", b, err)
		}
	}
	for range 20000 {
		b := make([]byte, rng.IntN(96))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		check(b)

		v := bytes.Clone(bodies[rng.IntN(len(bodies))])
		for range 1 + rng.IntN(3) {
			v[rng.IntN(len(v))] = byte(rng.Uint32())
		}
		check(v)
	}
}

// The encoders allocate nothing but dst's growth (see ReportAllocs).
func BenchmarkControlBody(b *testing.B) {
	details := []byte("some details")
	b.Run("op=appendError", func(b *testing.B) {
		b.ReportAllocs()
		dst := make([]byte, 0, 256)
		for b.Loop() {
			dst = appendErrorBody(dst[:0], 5, "no such method: echo.Echo", details)
		}
	})
	b.Run("op=parseError", func(b *testing.B) {
		body := appendErrorBody(nil, 5, "no such method: echo.Echo", details)
		b.ReportAllocs()
		for b.Loop() {
			if _, _, _, err := parseErrorBody(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("op=appendGoAway", func(b *testing.B) {
		b.ReportAllocs()
		dst := make([]byte, 0, 256)
		for b.Loop() {
			dst = appendGoAwayBody(dst[:0], "shutting down", 1234)
		}
	})
}
