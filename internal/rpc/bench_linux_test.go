package rpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/ringwire/ringwire/internal/transport"
)

// Cross-process RPC benchmarks: the parent calls "echo" on a child process
// serving over shared memory or framed Unix; rawunix is a hand-written
// length-prefix echo over the same kind of socket, in the same run.
//
//	go test -run '^$' -bench 'Call' -benchmem -count 6 ./protocol

var benchSizes = []struct {
	name string
	n    int
}{{"10B", 10}, {"1KiB", 1 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}}

func BenchmarkCall(b *testing.B) {
	for _, mode := range []string{"shm", "framed"} {
		b.Run("transport="+mode, func(b *testing.B) {
			p, _ := peerWithChild(b, mode)
			for _, sz := range benchSizes {
				req := bytes.Repeat([]byte{'x'}, sz.n)
				b.Run("form=bytes/size="+sz.name, func(b *testing.B) {
					ctx := context.Background()
					b.SetBytes(int64(sz.n))
					b.ReportAllocs()
					s0 := p.Stats()
					for b.Loop() {
						if _, err := p.Call(ctx, "echo", req); err != nil {
							b.Fatal(err)
						}
					}
					reportWaits(b, p, s0)
				})
				b.Run("form=view/size="+sz.name, func(b *testing.B) {
					ctx := context.Background()
					b.SetBytes(int64(sz.n))
					b.ReportAllocs()
					s0 := p.Stats()
					check := func(r []byte) error {
						if len(r) != sz.n {
							return io.ErrShortBuffer
						}
						return nil
					}
					for b.Loop() {
						if err := p.CallView(ctx, "echoview", req, check); err != nil {
							b.Fatal(err)
						}
					}
					reportWaits(b, p, s0)
				})
				b.Run("form=into/size="+sz.name, func(b *testing.B) {
					ctx, cancel := context.WithTimeout(context.Background(), time.Hour) // a deadline costs nothing per call
					defer cancel()
					dst := make([]byte, 0, sz.n)
					b.SetBytes(int64(sz.n))
					b.ReportAllocs()
					s0 := p.Stats()
					for b.Loop() {
						out, err := p.CallInto(ctx, "echo0", req, dst[:0])
						if err != nil || len(out) != sz.n {
							b.Fatal(len(out), err)
						}
					}
					reportWaits(b, p, s0)
				})
			}
		})
	}
	b.Run("transport=rawunix", func(b *testing.B) {
		ch := startChild(b, "rawecho", "")
		for _, sz := range benchSizes {
			b.Run("form=bytes/size="+sz.name, func(b *testing.B) {
				req := bytes.Repeat([]byte{'x'}, sz.n)
				out := make([]byte, sz.n)
				var hdr [4]byte
				b.SetBytes(int64(sz.n))
				b.ReportAllocs()
				for b.Loop() {
					binary.LittleEndian.PutUint32(hdr[:], uint32(sz.n))
					bufs := net.Buffers{hdr[:], req}
					if _, err := bufs.WriteTo(ch.nc); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(ch.nc, hdr[:]); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(ch.nc, out); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	})
}

// BenchmarkParallelCalls: 8 concurrent callers on one connection; calls/s is
// the total.
func BenchmarkParallelCalls(b *testing.B) {
	for _, bc := range []struct{ mode, handler, method string }{
		{"shm", "inline", "echo0"}, {"shm", "view", "echoview"}, {"framed", "inline", "echo0"},
	} {
		mode, method := bc.mode, bc.method
		b.Run("transport="+mode+"/handler="+bc.handler+"/callers=8/size=10B", func(b *testing.B) {
			p, _ := peerWithChild(b, mode)
			shared, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			req := bytes.Repeat([]byte{'x'}, 10)
			b.SetBytes(10)
			b.ReportAllocs()
			b.SetParallelism(4) // x GOMAXPROCS=2: 8 callers
			b.RunParallel(func(pb *testing.PB) {
				// Every caller shares one context with a deadline, as a
				// request-scoped context would be.
				ctx := shared
				dst := make([]byte, 0, 16)
				for pb.Next() {
					if _, err := p.CallInto(ctx, method, req, dst[:0]); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
}

// reportWaits reports the caller side's futex sleeps and wake-ups per call:
// 0 while both sides keep up.
func reportWaits(b *testing.B, p *Peer, s0 transport.Stats) {
	s := p.Stats()
	if p.Info().Kind != transport.KindShm || b.N == 0 {
		return
	}
	b.ReportMetric(float64(s.Parks-s0.Parks)/float64(b.N), "parks/op")
	b.ReportMetric(float64(s.Wakes-s0.Wakes)/float64(b.N), "wakes/op")
	b.ReportMetric(float64(s.Handoffs-s0.Handoffs)/float64(b.N), "handoffs/op")

}

// BenchmarkPing: a round trip through the peer's reading loop, no handler.
func BenchmarkPing(b *testing.B) {
	p, _ := peerWithChild(b, "shm")
	ctx := context.Background()
	b.ReportAllocs()
	s0 := p.Stats()
	for b.Loop() {
		if err := p.Ping(ctx); err != nil {
			b.Fatal(err)
		}
	}
	reportWaits(b, p, s0)
}

// BenchmarkConnEcho: the bare transport round trip in the same harness, the
// floor under every RPC figure.
func BenchmarkConnEcho(b *testing.B) {
	c, _ := connWithChild(b, "connecho", "shm")
	defer c.Close()
	for _, sz := range benchSizes {
		b.Run("size="+sz.name, func(b *testing.B) {
			msg := make([]byte, sz.n)
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Send(1, msg); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Recv(); err != nil {
					b.Fatal(err)
				}
				c.Release()
			}
		})
	}
}

// BenchmarkTyped: typed methods (Method) against the []byte calls they
// wrap, sequential, across processes:
//
//	go test -run '^$' -bench 'Typed' -count 6 ./protocol
func BenchmarkTyped(b *testing.B) {
	p, _ := peerWithChild(b, "shm")
	ctx := context.Background()
	for _, sz := range benchSizes[:2] {
		req := bytes.Repeat([]byte{'x'}, sz.n)
		fbb := flatbuffers.NewBuilder(sz.n + 64)
		fbReq := fbError(fbb, 1, string(req))
		js := note{Text: string(req), N: 1}
		dst := make([]byte, 0, sz.n+64)
		forms := []struct {
			name       string
			call, into func() error
		}{
			{"bytes",
				func() error { _, err := p.Call(ctx, "echo", req); return err },
				func() (err error) { dst, err = p.CallInto(ctx, "echo0", req, dst[:0]); return }},
			{"raw",
				func() error { _, err := tRaw.Call(ctx, p, req); return err },
				func() (err error) { _, dst, err = tRaw.CallInto(ctx, p, req, dst[:0]); return }},
			{"flatbuffers",
				func() error { _, err := tFB.Call(ctx, p, fbReq); return err },
				func() (err error) { _, dst, err = tFB.CallInto(ctx, p, fbReq, dst[:0]); return }},
			{"json",
				func() error { _, err := tJSON.Call(ctx, p, js); return err },
				func() (err error) { _, dst, err = tJSON.CallInto(ctx, p, js, dst[:0]); return }},
		}
		for _, f := range forms {
			for _, call := range []struct {
				form string
				fn   func() error
			}{{"call", f.call}, {"into", f.into}} {
				b.Run("codec="+f.name+"/form="+call.form+"/size="+sz.name, func(b *testing.B) {
					b.SetBytes(int64(sz.n))
					b.ReportAllocs()
					for b.Loop() {
						if err := call.fn(); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
