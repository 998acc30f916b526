package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/ringwire/ringwire/plugin"
	"github.com/ringwire/ringwire/protocol"
	"github.com/ringwire/ringwire/transport"
)

// echoMux is what the ringwire plugin serves; the host derives the contract
// from it too.
//
//	echo      Handle: the reply is a new slice (form=bytes)
//	echo0     HandleReply: the reply is written into the transport's buffer (form=into, callers=8)
//	echoview  HandleView: the request in the connection's memory is the reply (form=view)
func echoMux() *protocol.Mux {
	m := protocol.NewMux()
	m.Handle("echo", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	m.HandleReply("echo0", func(ctx context.Context, req []byte, w *protocol.Reply) error {
		_, err := w.Write(req)
		return err
	})
	m.HandleView("echoview", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	return m
}

// serveRingwire is the plugin process: plugin.Serve until the host goes away.
func serveRingwire() int {
	err := plugin.Serve(&plugin.Plugin{Name: "echo", Version: "bench", Mux: echoMux(), Logger: logger})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ringwire plugin:", err)
		return 1
	}
	return 0
}

// launchRingwire starts this binary as a ringwire plugin; cleanup stops and
// reaps it.
func launchRingwire(tb testing.TB) *plugin.Client {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cl, err := plugin.Launch(ctx, &plugin.Config{
		Name:         "echo",
		Path:         executable(tb),
		Args:         []string{"-test.run=^$"},
		Contract:     echoMux().Contract(),
		StartTimeout: startTimeout,
		StopTimeout:  stopTimeout,
		Logger:       logger,
	})
	if err != nil {
		tb.Fatalf("plugin.Launch: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*stopTimeout)
		defer cancel()
		if err := cl.Stop(ctx); err != nil {
			tb.Logf("stopping the ringwire plugin: %v", err)
		}
	})
	if k := cl.Info().Transport.Kind; k != transport.KindShm {
		tb.Logf("note: ringwire negotiated %v, not shared memory", k)
	}
	return cl
}

func benchRingwire(b *testing.B) {
	cl := launchRingwire(b)
	peer := cl.Peer()
	for _, sz := range sizes {
		req := payload(sz.n)
		b.Run("form=bytes/size="+sz.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), callBudget)
			defer cancel()
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			s0 := peer.Stats()
			for b.Loop() {
				out, err := cl.Call(ctx, "echo", req)
				if err != nil || len(out) != sz.n {
					b.Fatal(len(out), err)
				}
			}
			reportWaits(b, peer, s0)
		})
		b.Run("form=into/size="+sz.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), callBudget)
			defer cancel()
			dst := make([]byte, 0, sz.n)
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			s0 := peer.Stats()
			for b.Loop() {
				out, err := cl.CallInto(ctx, "echo0", req, dst[:0])
				if err != nil || len(out) != sz.n {
					b.Fatal(len(out), err)
				}
			}
			reportWaits(b, peer, s0)
		})
		b.Run("form=view/size="+sz.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), callBudget)
			defer cancel()
			check := func(reply []byte) error {
				if len(reply) != sz.n {
					return fmt.Errorf("reply of %d bytes, want %d", len(reply), sz.n)
				}
				return nil
			}
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			s0 := peer.Stats()
			for b.Loop() {
				if err := peer.CallView(ctx, "echoview", req, check); err != nil {
					b.Fatal(err)
				}
			}
			reportWaits(b, peer, s0)
		})
	}
	// 8 concurrent callers (SetParallelism 4 x GOMAXPROCS 2) on one
	// connection; calls/s is the total.
	b.Run("form=into/callers=8/size=10B", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), callBudget)
		defer cancel()
		req := payload(10)
		b.SetBytes(10)
		b.ReportAllocs()
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			dst := make([]byte, 0, 16)
			for pb.Next() {
				out, err := cl.CallInto(ctx, "echo0", req, dst[:0])
				if err != nil || len(out) != 10 {
					b.Error(len(out), err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
}

// reportWaits reports the host side's futex sleeps and wake-ups per call on
// shared memory: 0 while both sides keep up (spinning); about 1 when every
// call sleeps, as it does when other load takes the CPUs.
func reportWaits(b *testing.B, p *protocol.Peer, s0 transport.Stats) {
	if p.Info().Kind != transport.KindShm || b.N == 0 {
		return
	}
	s := p.Stats()
	b.ReportMetric(float64(s.Parks-s0.Parks)/float64(b.N), "parks/op")
	b.ReportMetric(float64(s.Wakes-s0.Wakes)/float64(b.N), "wakes/op")
}

// echoRingwire checks one call of each form.
func echoRingwire(t *testing.T, req []byte) {
	cl := launchRingwire(t)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	t.Logf("ringwire transport: %v", cl.Info().Transport.Kind)
	out, err := cl.Call(ctx, "echo", req)
	if err != nil || !bytes.Equal(out, req) {
		t.Fatalf("form=bytes: %d bytes, %v", len(out), err)
	}
	dst := make([]byte, 0, len(req))
	out, err = cl.CallInto(ctx, "echo0", req, dst)
	if err != nil || !bytes.Equal(out, req) {
		t.Fatalf("form=into: %d bytes, %v", len(out), err)
	}
	if len(req) > 0 && &out[0] != &dst[:1][0] {
		t.Errorf("form=into: the reply was not written into dst")
	}
	var seen bool
	err = cl.Peer().CallView(ctx, "echoview", req, func(reply []byte) error {
		seen = bytes.Equal(reply, req)
		return nil
	})
	if err != nil || !seen {
		t.Fatalf("form=view: equal %v, %v", seen, err)
	}
}
