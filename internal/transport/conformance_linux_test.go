package transport

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/rpc"
	"strings"
	"testing"
	"time"

	negotiate "github.com/ringwire/ringwire/internal/handshake"
)

// realPair connects a Listener and a dialler of the given kind in this
// process (real sockets, real shared memory) and returns both Conns.
func realPair(t *testing.T, kind Kind) (Conn, Conn) {
	t.Helper()
	l, spec := listenCombo(t, combo{kind: kind}, &Config{Logger: quietLogger})
	cfg := &Config{Name: "dialler", Logger: quietLogger, Compressions: []negotiate.Compression{}}
	switch kind {
	case KindShm:
		cfg.Mode = ModeShm
	case KindUnix:
		cfg.Mode = ModeFramed
	case KindTCP:
		tc, err := ClientConfigFromBundle(spec.TLS)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLS = tc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type res struct {
		c   Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := Dial(ctx, spec.Network, spec.Addr, cfg)
		ch <- res{c, err}
	}()
	server := accept(t, l, 10*time.Second)
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	if server.Info().Kind != kind || r.c.Info().Kind != kind {
		t.Fatalf("negotiated %v/%v, want %v", server.Info().Kind, r.c.Info().Kind, kind)
	}
	return r.c, server
}

// TestNetConnBehaviourReal runs testNetConnBehaviour over the real
// transports (TestNetTest runs the net.Conn conformance suite over them).
func TestNetConnBehaviourReal(t *testing.T) {
	for _, kind := range []Kind{KindShm, KindUnix, KindTCP} {
		t.Run("kind="+kind.String(), func(t *testing.T) {
			testNetConnBehaviour(t, func(t *testing.T) (Conn, Conn) { return realPair(t, kind) })
		})
	}
}

// Arith is a net/rpc service for TestNetRPCOverShm.
type Arith struct{}

// Args are Arith's arguments.
type Args struct{ A, B int }

// Mul multiplies.
func (Arith) Mul(a Args, r *int) error { *r = a.A * a.B; return nil }

// TestNetRPCOverShm runs net/rpc, unchanged, over shared memory.
func TestNetRPCOverShm(t *testing.T) {
	a, b := realPair(t, KindShm)
	srv := rpc.NewServer()
	if err := srv.Register(Arith{}); err != nil {
		t.Fatal(err)
	}
	go srv.ServeConn(NetConn(b))
	client := rpc.NewClient(NetConn(a))
	defer client.Close()
	errs := make(chan error, 16)
	for i := range 16 {
		go func() {
			var r int
			err := client.Call("Arith.Mul", Args{i, 7}, &r)
			if err == nil && r != i*7 {
				err = net.UnknownNetworkError("wrong product")
			}
			errs <- err
		}()
	}
	for range 16 {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("net/rpc call did not return")
		}
	}
}

// TestShmDeadlineWhileClosing sets deadlines from other goroutines while the
// connection closes: the rings' memory must not go away under them.
func TestShmDeadlineWhileClosing(t *testing.T) {
	for range 20 {
		a, _ := realPair(t, KindShm)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if a.SetReadDeadline(time.Now().Add(time.Hour)) != nil || a.SetWriteDeadline(time.Time{}) != nil {
					return // closed
				}
			}
		}()
		time.Sleep(time.Millisecond)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		close(stop)
		<-done
		if err := a.SetReadDeadline(time.Time{}); !errors.Is(err, ErrClosed) {
			t.Fatalf("SetReadDeadline after Close: %v", err)
		}
	}
}

// TestShmCloseWhileHeld: Close with a received message still held keeps its
// memory until the next Recv (or Release), which then releases everything, so
// the peer learns that we hung up.
func TestShmCloseWhileHeld(t *testing.T) {
	a, b := realPair(t, KindShm)
	if err := a.Send(1, []byte("held")); err != nil {
		t.Fatal(err)
	}
	m, err := b.Recv()
	if err != nil || string(m.Data) != "held" {
		t.Fatalf("Recv: %q, %v", m.Data, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "held" {
		t.Fatal("the held message changed after Close")
	}
	if _, err := b.Recv(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after Close: %v", err)
	}
	_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := a.Recv(); !errors.Is(err, ErrPeerGone) {
		t.Fatalf("the peer's Recv: %v, want ErrPeerGone", err)
	}
}

// TestShmMappingRefused: a dialler that cannot map the offered rings (here:
// larger than it accepts) tells the listener why, and both sides fail with a
// refusal instead of a bare hang-up.
func TestShmMappingRefused(t *testing.T) {
	logs := newLogCapture()
	l, err := Listen("unix", unixAddr(), &Config{Mode: ModeShm, RingSize: 2 * maxRingSize, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Dial(ctx, "unix", l.Addr().String(), &Config{Mode: ModeShm, Logger: quietLogger})
	if err == nil || errors.Is(err, ErrPeerGone) {
		t.Fatalf("dial: %v, want the mapping refused", err)
	}
	if err := logs.next(t, 5*time.Second); !errors.Is(err, negotiate.ErrRefused) || !strings.Contains(err.Error(), "mapping") {
		t.Fatalf("listener: %v, want the dialler's refusal", err)
	}
}
