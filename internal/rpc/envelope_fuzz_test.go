package rpc

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParseCall: the call decoder never panics, never returns views outside
// its input, and what it accepts re-encodes to the same bytes.
func FuzzParseCall(f *testing.F) {
	f.Add(appendCall(nil, 1, 0, 0, 0, "", "echo", []byte("hi")))
	f.Add(appendCall(nil, 7, 1e9, 3, flagObject, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "kv.Get", nil))
	f.Add(appendCall(nil, 9, 0, 2, flagCallback, "", "", bytes.Repeat([]byte{0xff}, 100)))
	f.Add([]byte{})
	f.Add(make([]byte, callHeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseCall(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not match ErrCorrupt", err)
			}
			return
		}
		if len(h.trace) > maxTraceparent || h.flags&^knownFlags != 0 || h.timeout < 0 {
			t.Fatalf("accepted an invalid header: %+v", h)
		}
		again := appendCall(nil, h.id, h.timeout, h.aux, h.flags, string(h.trace), string(h.method), h.body)
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, b)
		}
	})
}

// FuzzParseID: id-prefixed messages.
func FuzzParseID(f *testing.F) {
	f.Add(appendID(nil, 42))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, rest, err := parseID(b)
		if err != nil {
			if len(b) >= idSize || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("refused %d bytes: %v", len(b), err)
			}
			return
		}
		if !bytes.Equal(append(appendID(nil, id), rest...), b) {
			t.Fatal("split does not rebuild the input")
		}
	})
}
