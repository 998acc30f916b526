package rpc

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/ringwire/ringwire/internal/rpc/internal/fb"
	"github.com/ringwire/ringwire/internal/transport"
)

// Typed methods the test child serves (see echoMux), each an echo.
type note struct {
	Text string `json:"text"`
	N    int    `json:"n"`
}

var (
	tRaw  = NewMethod("t.raw", Raw(), Raw())
	tFB   = NewMethod("t.fb", FlatBuffers[fb.Error](), FlatBuffers[fb.Error]())
	tJSON = NewMethod("t.json", JSON[note](), JSON[note]())
	// tShout has a JSON request and a raw reply.
	tShout = NewMethod("t.shout", JSON[note](), Raw())

	typedService = NewService("typed", "1.0.0", tRaw, tFB, tJSON, tShout)
)

func addTyped(m *Mux) {
	tRaw.Handle(m, func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	tFB.Handle(m, func(ctx context.Context, req fb.Error) (fb.Error, error) { return req, nil })
	tJSON.Handle(m, func(ctx context.Context, req note) (note, error) { return req, nil })
	tShout.Handle(m, func(ctx context.Context, req note) ([]byte, error) {
		if req.N < 0 {
			return nil, Errorf(CodeInvalidArgument, "n must not be negative, got %d", req.N)
		}
		return []byte(strings.Repeat(strings.ToUpper(req.Text), req.N)), nil
	})
}

// fbError builds a finished fb.Error buffer with b and returns its root.
func fbError(b *flatbuffers.Builder, code uint32, msg string) fb.Error {
	b.Reset()
	m := b.CreateString(msg)
	fb.ErrorStart(b)
	fb.ErrorAddCode(b, code)
	fb.ErrorAddMessage(b, m)
	b.Finish(fb.ErrorEnd(b))
	return FlatBuffersRoot[fb.Error](b.FinishedBytes())
}

func TestTypedMethods(t *testing.T) {
	for _, mode := range []transport.Mode{transport.ModeShm, transport.ModeFramed} {
		t.Run(mode.String(), func(t *testing.T) {
			host, _ := peerPair(t, mode, nil, echoMux())
			ctx := context.Background()

			got, err := tRaw.Call(ctx, host, []byte("hello"))
			if err != nil || string(got) != "hello" {
				t.Fatalf("raw Call = %q, %v", got, err)
			}
			got, buf, err := tRaw.CallInto(ctx, host, []byte("into"), make([]byte, 0, 64))
			if err != nil || string(got) != "into" || cap(buf) != 64 {
				t.Fatalf("raw CallInto = %q (buffer cap %d), %v", got, cap(buf), err)
			}
			err = tRaw.CallView(ctx, host, []byte("view"), func(r []byte) error {
				if string(r) != "view" {
					t.Errorf("raw CallView got %q", r)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}

			n, err := tJSON.Call(ctx, host, note{Text: "a", N: 3})
			if err != nil || n != (note{Text: "a", N: 3}) {
				t.Fatalf("json Call = %+v, %v", n, err)
			}
			s, err := tShout.Call(ctx, host, note{Text: "ab", N: 2})
			if err != nil || string(s) != "ABAB" {
				t.Fatalf("shout = %q, %v", s, err)
			}
			_, err = tShout.Call(ctx, host, note{N: -1})
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != CodeInvalidArgument || !strings.Contains(pe.Message, "got -1") {
				t.Fatalf("shout with n=-1: %v, want CodeInvalidArgument naming the value", err)
			}

			b := flatbuffers.NewBuilder(64)
			e, err := tFB.Call(ctx, host, fbError(b, 7, "seven"))
			if err != nil || e.Code() != 7 || string(e.Message()) != "seven" {
				t.Fatalf("flatbuffers Call = %d %q, %v", e.Code(), e.Message(), err)
			}
			e, _, err = tFB.CallInto(ctx, host, fbError(b, 8, "eight"), nil)
			if err != nil || e.Code() != 8 || string(e.Message()) != "eight" {
				t.Fatalf("flatbuffers CallInto = %d %q, %v", e.Code(), e.Message(), err)
			}
		})
	}
}

func TestTypedBadInput(t *testing.T) {
	host, _ := peerPair(t, transport.ModeShm, nil, echoMux())
	ctx := context.Background()

	// A request its codec cannot decode never reaches the handler.
	for _, m := range []string{"t.json", "t.fb"} {
		_, err := host.Call(ctx, m, []byte("{not json, not a table"))
		var pe *Error
		if !errors.As(err, &pe) || pe.Code != CodeInvalidArgument || !strings.Contains(pe.Message, m+": the request: protocol: cannot decode") {
			t.Errorf("%s with garbage: %v, want CodeInvalidArgument saying it cannot decode", m, err)
		}
	}
	// A reply the caller's codec cannot decode is ErrDecode.
	bad := NewMethod("echo", Raw(), JSON[note]())
	if _, err := bad.Call(ctx, host, []byte("]")); !errors.Is(err, ErrDecode) || !strings.Contains(err.Error(), "echo: the reply") {
		t.Errorf("undecodable reply: %v, want ErrDecode naming the method", err)
	}
	badFB := NewMethod("echo", Raw(), FlatBuffers[fb.Error]())
	if _, err := badFB.Call(ctx, host, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}); !errors.Is(err, ErrDecode) {
		t.Errorf("undecodable table: %v, want ErrDecode", err)
	}
	// A table that is not the root of its buffer cannot be encoded.
	var notRoot fb.Error
	notRoot.Init([]byte{12, 0, 0, 0, 0, 0, 0, 0}, 4)
	if _, err := tFB.Call(ctx, host, notRoot); err == nil || !strings.Contains(err.Error(), "not the root") {
		t.Errorf("encoding a non-root table: %v", err)
	}
}

// TestTypedZeroAlloc: with the raw and FlatBuffers codecs a typed CallInto
// (encoding, the serving wrapper, decoding) allocates nothing. The
// transport is replaced by a direct call (loopback, typed_bench_linux_test.go)
// so that only the typed layer counts: across a connection, in one process,
// both sides' allocations would count, and they vary with scheduling.
func TestTypedZeroAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes values escape: allocation counts mean nothing under -race")
	}
	mux := NewMux()
	addTyped(mux)
	c := loopback{mux}
	ctx := context.Background()
	req := bytes.Repeat([]byte{'x'}, 1024)
	buf := make([]byte, 0, 2048)
	b := flatbuffers.NewBuilder(128)
	fbReq := fbError(b, 1, "one")
	for _, k := range []struct {
		name string
		call func() error
	}{
		{"raw", func() (err error) { _, buf, err = tRaw.CallInto(ctx, c, req, buf[:0]); return }},
		{"flatbuffers", func() (err error) { _, buf, err = tFB.CallInto(ctx, c, fbReq, buf[:0]); return }},
		{"raw Call (reply aside)", func() (err error) { _, err = tRaw.Call(ctx, c, req); return }},
	} {
		if err := k.call(); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(200, func() { _ = k.call() }); n != 0 {
			t.Errorf("%s allocates %.2f times a call, want 0", k.name, n)
		}
	}
}

func TestCheckServed(t *testing.T) {
	m := NewMux()
	addTyped(m)
	if err := CheckServed(typedService, m); err != nil {
		t.Fatal(err)
	}

	partial := NewMux()
	tRaw.Handle(partial, func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	partial.Handle("t.json", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	other := NewMethod("t.shout", Raw(), Raw())
	other.Handle(partial, func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	err := CheckServed(typedService, partial)
	want := "protocol: service typed 1.0.0: no handler for t.fb; other signature: " +
		"t.json (declared json:rpc.note -> json:rpc.note, registered untyped); " +
		"t.shout (declared json:rpc.note -> raw, registered raw -> raw)"
	if err == nil || err.Error() != want {
		t.Errorf("CheckServed = %v\nwant %s", err, want)
	}
}

func TestServiceDuplicate(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), `declares method "t.raw" twice`) {
			t.Errorf("recover() = %v", r)
		}
	}()
	NewService("dup", "1", tRaw, tRaw)
}

func FuzzFlatBuffersDecode(f *testing.F) {
	b := flatbuffers.NewBuilder(64)
	fbError(b, 3, "three")
	f.Add(bytes.Clone(b.FinishedBytes()))
	f.Add([]byte{})
	f.Add([]byte{4, 0, 0, 0, 250, 255, 255, 255})
	c := FlatBuffers[fb.Error]()
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := c.Decode(data); err != nil && !errors.Is(err, ErrDecode) {
			t.Fatalf("Decode error %v is not ErrDecode", err)
		}
	})
}
