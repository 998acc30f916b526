package rpc

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// Seeds for both targets: valid bodies of each kind (each is garbage to the
// other target), bodies at the bounds, and short or empty inputs.
func ctrlFuzzSeeds(f *testing.F) {
	for _, b := range [][]byte{
		nil,
		{0, 0, 0, 0},
		{4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff},
		appendErrorBody(nil, 0, "", nil),
		appendErrorBody(nil, 3, "deadline exceeded", nil),
		appendErrorBody(nil, 9, "résumé ✓", []byte{0, 1, 2, 3}),
		appendErrorBody(nil, 1, strings.Repeat("m", int(ctrlMaxMessage)), []byte("d")),
		appendGoAwayBody(nil, "", 0),
		appendGoAwayBody(nil, "shutting down", 1<<40),
		appendGoAwayBody(nil, strings.Repeat("r", int(ctrlMaxReason)), 7),
	} {
		f.Add(b)
	}
}

func FuzzParseErrorBody(f *testing.F) {
	ctrlFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		code, msg, details, err := parseErrorBody(b)
		if !bytes.Equal(b, in) {
			t.Fatal("parseErrorBody changed its input")
		}
		if err != nil {
			if !errors.Is(err, errCorruptControl) {
				t.Fatalf("err = %v, does not wrap errCorruptControl", err)
			}
			return
		}
		if len(msg) > int(ctrlMaxMessage) || len(details) > int(ctrlMaxDetails) {
			t.Fatalf("accepted a %d-byte message and %d bytes of details", len(msg), len(details))
		}
		kept := bytes.Clone(details)
		for i := range b {
			b[i] ^= 0xff
		}
		if !bytes.Equal(details, kept) {
			t.Fatal("the details alias the input")
		}
		again := appendErrorBody(nil, code, msg, details)
		code2, msg2, details2, err := parseErrorBody(again)
		if err != nil {
			t.Fatalf("re-encoding of (%d, %q, %x) does not parse: %v", code, msg, details, err)
		}
		if code2 != code || msg2 != msg || !bytes.Equal(details2, details) {
			t.Fatalf("round trip: (%d, %q, %x) became (%d, %q, %x)", code, msg, details, code2, msg2, details2)
		}
	})
}

func FuzzParseGoAwayBody(f *testing.F) {
	ctrlFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		reason, lastCall, err := parseGoAwayBody(b)
		if !bytes.Equal(b, in) {
			t.Fatal("parseGoAwayBody changed its input")
		}
		if err != nil {
			if !errors.Is(err, errCorruptControl) {
				t.Fatalf("err = %v, does not wrap errCorruptControl", err)
			}
			return
		}
		if len(reason) > int(ctrlMaxReason) {
			t.Fatalf("accepted a %d-byte reason", len(reason))
		}
		again := appendGoAwayBody(nil, reason, lastCall)
		reason2, lastCall2, err := parseGoAwayBody(again)
		if err != nil {
			t.Fatalf("re-encoding of (%q, %d) does not parse: %v", reason, lastCall, err)
		}
		if reason2 != reason || lastCall2 != lastCall {
			t.Fatalf("round trip: (%q, %d) became (%q, %d)", reason, lastCall, reason2, lastCall2)
		}
	})
}
