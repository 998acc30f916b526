package rpc

import (
	"bytes"
	"context"
	"testing"

	flatbuffers "github.com/google/flatbuffers/go"
)

// loopback is a Caller that answers every call with its request, at once:
// what is left of a call is the typed layer's own work.
type loopback struct{ mux *Mux }

func (l loopback) Call(ctx context.Context, method string, req []byte) ([]byte, error) {
	m := l.mux.lookup([]byte(method))
	if m.rh != nil {
		r := Reply{}
		err := m.rh(ctx, req, &r)
		return r.b, err
	}
	return m.h(ctx, req)
}

func (l loopback) CallInto(ctx context.Context, method string, req, dst []byte) ([]byte, error) {
	out, err := l.Call(ctx, method, req)
	return append(dst, out...), err
}

func (l loopback) CallView(ctx context.Context, method string, req []byte, f func([]byte) error) error {
	out, err := l.Call(ctx, method, req)
	if err != nil {
		return err
	}
	return f(out)
}

// BenchmarkTypedOverhead: what a typed call adds to the []byte call it
// wraps, both sides together (encode, the serving wrapper, decode), with
// the transport replaced by a direct call so that nothing else varies:
//
//	go test -run '^$' -bench 'TypedOverhead' -count 6 ./protocol
func BenchmarkTypedOverhead(b *testing.B) {
	mux := NewMux()
	addTyped(mux)
	mux.Handle("echo", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	c := loopback{mux}
	ctx := context.Background()
	for _, n := range []int{10, 1024} {
		size := "10B"
		if n == 1024 {
			size = "1KiB"
		}
		req := bytes.Repeat([]byte{'x'}, n)
		fbb := flatbuffers.NewBuilder(n + 64)
		fbReq := fbError(fbb, 1, string(req))
		js := note{Text: string(req), N: 1}
		dst := make([]byte, 0, n+64)
		for _, f := range []struct {
			name string
			fn   func() error
		}{
			{"bytes", func() (err error) { dst, err = c.CallInto(ctx, "echo", req, dst[:0]); return }},
			{"raw", func() (err error) { _, dst, err = tRaw.CallInto(ctx, c, req, dst[:0]); return }},
			{"flatbuffers", func() (err error) { _, dst, err = tFB.CallInto(ctx, c, fbReq, dst[:0]); return }},
			{"json", func() (err error) { _, dst, err = tJSON.CallInto(ctx, c, js, dst[:0]); return }},
		} {
			b.Run("codec="+f.name+"/size="+size, func(b *testing.B) {
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					if err := f.fn(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
