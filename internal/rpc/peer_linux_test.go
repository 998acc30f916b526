package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/transport"
)

var modes = []struct {
	name string
	mode transport.Mode
}{{"shm", transport.ModeShm}, {"framed", transport.ModeFramed}}

func echoMux() *Mux {
	m := NewMux()
	addTyped(m)
	m.Handle("echo", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	m.HandleReply("echo0", func(ctx context.Context, req []byte, w *Reply) error {
		w.Write(req)
		return nil
	})
	m.HandleView("echoview", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	m.HandleView("viewcalls", func(ctx context.Context, req []byte) ([]byte, error) {
		p, _ := PeerFromContext(ctx)
		_, err := p.Call(ctx, "anything", nil)
		return nil, err
	})
	m.Handle("fail", func(ctx context.Context, req []byte) ([]byte, error) {
		return nil, &Error{Code: CodeInvalidArgument, Message: "bad " + string(req), Details: []byte{1, 2}}
	})
	m.Handle("plain", func(ctx context.Context, req []byte) ([]byte, error) { return nil, errors.New("plain failure") })
	m.Handle("panic", func(ctx context.Context, req []byte) ([]byte, error) { panic("boom") })
	m.Handle("hang", func(ctx context.Context, req []byte) ([]byte, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	m.Handle("deadline", func(ctx context.Context, req []byte) ([]byte, error) {
		dl, ok := ctx.Deadline()
		if !ok {
			return []byte("none"), nil
		}
		return []byte(time.Until(dl).Round(time.Second).String()), nil
	})
	m.Handle("work", func(ctx context.Context, req []byte) ([]byte, error) {
		// req[0] x 10 µs of work that honours cancellation.
		d := time.Duration(req[0]) * 10 * time.Microsecond
		if d == 0 {
			return req, nil
		}
		select {
		case <-time.After(d):
			return req, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	m.Handle("trace", func(ctx context.Context, req []byte) ([]byte, error) { return []byte(Traceparent(ctx)), nil })
	return m
}

func TestCallBasics(t *testing.T) {
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			host, _ := peerPair(t, md.mode, nil, echoMux())
			ctx := context.Background()
			for _, size := range []int{0, 1, 10, 1000, 100 << 10, 3 << 20} {
				req := bytes.Repeat([]byte{byte(size)}, size)
				for _, m := range []string{"echo", "echo0"} {
					got, err := host.Call(ctx, m, req)
					if err != nil || !bytes.Equal(got, req) {
						t.Fatalf("%s %d bytes: got %d bytes, %v", m, size, len(got), err)
					}
				}
				var viewed []byte
				if err := host.CallView(ctx, "echoview", req, func(r []byte) error {
					viewed = append([]byte(nil), r...)
					return nil
				}); err != nil || !bytes.Equal(viewed, req) {
					t.Fatalf("CallView %d: %d bytes, %v", size, len(viewed), err)
				}
				dst := make([]byte, 3, 3+size)
				got, err := host.CallInto(ctx, "echo", req, dst)
				if err != nil || len(got) != 3+size || !bytes.Equal(got[3:], req) {
					t.Fatalf("CallInto %d: %d bytes, %v", size, len(got), err)
				}
			}

			if _, err := host.Call(ctx, "viewcalls", nil); err == nil || !strings.Contains(err.Error(), ErrViewCall.Error()) {
				t.Fatalf("a view handler calling its peer: %v", err)
			}
			errF := errors.New("f failed")
			if err := host.CallView(ctx, "echo", []byte("x"), func([]byte) error { return errF }); err != errF {
				t.Fatalf("CallView returns f's error: %v", err)
			}
			_, err := host.Call(ctx, "fail", []byte("x"))
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeInvalidArgument || e.Message != "bad x" || !bytes.Equal(e.Details, []byte{1, 2}) {
				t.Fatalf("fail: %v", err)
			}
			if _, err := host.Call(ctx, "plain", nil); !errors.As(err, &e) || e.Code != CodeUnknown || e.Message != "plain failure" {
				t.Fatalf("plain: %v", err)
			}
			if _, err := host.Call(ctx, "nope", nil); !errors.Is(err, ErrUnknownMethod) {
				t.Fatalf("unknown method: %v", err)
			}
			if _, err := host.Call(ctx, "panic", nil); !errors.As(err, &e) || e.Code != CodeInternal {
				t.Fatalf("panic: %v", err)
			}
			if got, err := host.Call(ctx, "echo", []byte("still serving")); err != nil || string(got) != "still serving" {
				t.Fatalf("after panic: %q %v", got, err)
			}
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if got, err := host.Call(dctx, "deadline", nil); err != nil || string(got) != "30s" {
				t.Fatalf("deadline: %q %v", got, err)
			}
			if got, err := host.Call(ctx, "deadline", nil); err != nil || string(got) != "none" {
				t.Fatalf("no deadline: %q %v", got, err)
			}
			tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
			if got, err := host.Call(WithTraceparent(ctx, tp), "trace", nil); err != nil || string(got) != tp {
				t.Fatalf("trace: %q %v", got, err)
			}
			if err := host.Ping(ctx); err != nil {
				t.Fatalf("ping: %v", err)
			}
		})
	}
}

func TestHungHandlerDeadlineAndCancel(t *testing.T) {
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			var cancelled atomic.Int32
			m := NewMux()
			m.Handle("hang", func(ctx context.Context, req []byte) ([]byte, error) {
				<-ctx.Done()
				cancelled.Add(1)
				return nil, ctx.Err()
			})
			m.Handle("echo", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
			host, _ := peerPair(t, md.mode, nil, m)

			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := host.Call(ctx, "hang", nil)
			if d := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || d > 600*time.Millisecond {
				t.Fatalf("hang with deadline: %v after %v", err, d)
			}

			ctx2, cancel2 := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel2)
			if _, err := host.Call(ctx2, "hang", nil); !errors.Is(err, context.Canceled) {
				t.Fatalf("hang cancelled: %v", err)
			}
			waitFor(t, 2*time.Second, func() bool { return cancelled.Load() == 2 }, "both handlers' contexts cancelled")

			// The hung handlers did not stall the connection.
			if got, err := host.Call(context.Background(), "echo", []byte("ok")); err != nil || string(got) != "ok" {
				t.Fatalf("echo after hangs: %q %v", got, err)
			}
		})
	}
}

// TestSlowHandlerDoesNotStall: a handler that starts fast and then blocks
// (so it runs inline) must not hold up other calls for long.
func TestSlowHandlerDoesNotStall(t *testing.T) {
	m := NewMux()
	sometimes := blockAt(100)
	m.Handle("sometimes", sometimes.handle)
	m.Handle("echo", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	host, _ := peerPair(t, transport.ModeShm, nil, m)
	ctx := context.Background()
	blocked := stickInline(t, host, "sometimes", sometimes)
	start := time.Now()
	for range 100 {
		if _, err := host.Call(ctx, "echo", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("100 calls behind a blocked inline handler took %v", d)
	}
	sometimes.release()
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
}

// blocker is a handler that answers at once except on its nth call, which
// blocks until release.
type blocker struct {
	n, calls atomic.Int32
	ch       chan struct{}
	once     sync.Once
}

func blockAt(n int32) *blocker {
	b := &blocker{ch: make(chan struct{})}
	b.n.Store(n)
	return b
}

func (b *blocker) handle(ctx context.Context, req []byte) ([]byte, error) {
	if b.calls.Add(1) == b.n.Load() {
		<-b.ch
	}
	return req, nil
}

func (b *blocker) release() { b.once.Do(func() { close(b.ch) }) }

// stickInline calls method (served by b) until b's blocking call, so that
// it runs inline, makes that call from another goroutine, and waits until it
// is stuck in the handler. The channel gets the stuck call's error.
func stickInline(t *testing.T, host *Peer, method string, b *blocker) <-chan error {
	t.Helper()
	ctx := context.Background()
	for range b.n.Load() - 1 {
		if _, err := host.Call(ctx, method, nil); err != nil {
			t.Fatal(err)
		}
	}
	stuck := make(chan error, 1)
	go func() {
		_, err := host.Call(ctx, method, nil)
		stuck <- err
	}()
	waitFor(t, 2*time.Second, func() bool { return b.calls.Load() == b.n.Load() }, "the blocking call running")
	return stuck
}

func TestCallbacks(t *testing.T) {
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			hostMux := NewMux()
			pluginMux := NewMux()
			var pluginPeer atomic.Pointer[Peer]
			hostMux.Handle("host.double", func(ctx context.Context, req []byte) ([]byte, error) {
				// Second level: the host calls back into the plugin.
				p, ok := PeerFromContext(ctx)
				if !ok {
					return nil, errors.New("no peer in context")
				}
				r, err := p.Call(ctx, "plugin.leaf", req)
				if err != nil {
					return nil, err
				}
				return append(r, r...), nil
			})
			pluginMux.Handle("plugin.leaf", func(ctx context.Context, req []byte) ([]byte, error) {
				return append([]byte("<"), append(req, '>')...), nil
			})
			pluginMux.Handle("plugin.outer", func(ctx context.Context, req []byte) ([]byte, error) {
				p, _ := PeerFromContext(ctx)
				if p != pluginPeer.Load() {
					return nil, errors.New("wrong peer in context")
				}
				r, err := p.Call(ctx, "host.double", req)
				if err != nil {
					return nil, err
				}
				cb, err := Callback(ctx, r)
				if err != nil {
					return nil, err
				}
				return cb, nil
			})
			pluginMux.Handle("plugin.nocb", func(ctx context.Context, req []byte) ([]byte, error) {
				return Callback(ctx, req)
			})
			host, plugin := peerPair(t, md.mode, hostMux, pluginMux)
			pluginPeer.Store(plugin)
			ctx := WithCallback(context.Background(), func(ctx context.Context, req []byte) ([]byte, error) {
				return bytes.ToUpper(req), nil
			})
			got, err := host.Call(ctx, "plugin.outer", []byte("ab"))
			if err != nil || string(got) != "<AB><AB>" {
				t.Fatalf("nested callbacks: %q %v", got, err)
			}
			if _, err := host.Call(context.Background(), "plugin.nocb", nil); !errors.Is(err, ErrUnknownMethod) {
				t.Fatalf("callback without one attached: %v", err)
			}
			if _, err := Callback(context.Background(), nil); !errors.Is(err, ErrNoCallback) {
				t.Fatalf("Callback outside a handler: %v", err)
			}
		})
	}
}

type counter struct {
	mu     sync.Mutex
	n      int
	closed *atomic.Int32
}

func (c *counter) Call(ctx context.Context, method string, req []byte) ([]byte, error) {
	switch method {
	case "add":
		c.mu.Lock()
		defer c.mu.Unlock()
		c.n += len(req)
		return []byte(fmt.Sprint(c.n)), nil
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownMethod, method)
}

func (c *counter) Close() error { c.closed.Add(1); return nil }

func TestObjects(t *testing.T) {
	var closed atomic.Int32
	m := NewMux()
	m.HandleType("counter", func(ctx context.Context, args []byte) (Object, error) {
		return &counter{n: len(args), closed: &closed}, nil
	})
	host, plugin := peerPair(t, transport.ModeShm, nil, m)
	ctx := context.Background()
	a, err := host.New(ctx, "counter", []byte("xx"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := host.New(ctx, "counter", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a.Call(ctx, "add", []byte("abc")); err != nil || string(got) != "5" {
		t.Fatalf("a.add: %q %v", got, err)
	}
	if got, err := b.Call(ctx, "add", []byte("a")); err != nil || string(got) != "1" {
		t.Fatalf("b.add: %q %v", got, err)
	}
	if _, err := a.Call(ctx, "nope", nil); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("unknown object method: %v", err)
	}
	if _, err := host.New(ctx, "nosuchtype", nil); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("unknown type: %v", err)
	}
	if err := a.Destroy(ctx); err != nil || closed.Load() != 1 {
		t.Fatalf("destroy: %v, closed %d", err, closed.Load())
	}
	if _, err := a.Call(ctx, "add", nil); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("call after destroy: %v", err)
	}
	// A forged handle is refused.
	forged := &Handle{p: host, id: 999, typ: "counter"}
	var e *Error
	if _, err := forged.Call(ctx, "add", nil); !errors.As(err, &e) || e.Code != CodeNotFound {
		t.Fatalf("forged handle: %v", err)
	}
	// Disconnecting releases the rest.
	host.Close()
	<-plugin.Done()
	waitFor(t, 2*time.Second, func() bool { return closed.Load() == 2 }, "objects released on disconnect")
	if !errors.Is(plugin.Err(), ErrPeerGone) {
		t.Fatalf("plugin.Err after the host closed: %v", plugin.Err())
	}
}

func TestCloseFailsCallsInFlight(t *testing.T) {
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			host, plugin := peerPair(t, md.mode, nil, echoMux())
			errs := make(chan error, 4)
			for range 4 {
				go func() {
					_, err := host.Call(context.Background(), "hang", nil)
					errs <- err
				}()
			}
			time.Sleep(50 * time.Millisecond)
			plugin.Close()
			for range 4 {
				select {
				case err := <-errs:
					if !errors.Is(err, ErrPeerGone) {
						t.Fatalf("in-flight call: %v, want ErrPeerGone", err)
					}
				case <-time.After(2 * time.Second):
					t.Fatal("in-flight call did not fail within 2s of the peer closing")
				}
			}
			if _, err := host.Call(context.Background(), "echo", nil); !errors.Is(err, ErrPeerGone) {
				t.Fatalf("call after the peer closed: %v", err)
			}
			if _, err := plugin.Call(context.Background(), "echo", nil); !errors.Is(err, ErrClosed) {
				t.Fatalf("call after Close: %v", err)
			}
		})
	}
}

func TestShutdownDrains(t *testing.T) {
	release := make(chan struct{})
	m := NewMux()
	m.Handle("slow", func(ctx context.Context, req []byte) ([]byte, error) {
		<-release
		return []byte("done"), nil
	})
	host, plugin := peerPair(t, transport.ModeShm, nil, m)
	res := callAsync(context.Background(), host, "slow", nil, "done")
	time.Sleep(30 * time.Millisecond)
	sd := make(chan error, 1)
	go func() { sd <- plugin.Shutdown(context.Background()) }()
	waitFor(t, time.Second, func() bool { return host.peerLeft.Load() }, "goaway reaching the host")
	if _, err := host.Call(context.Background(), "slow", nil); !errors.Is(err, ErrGoAway) {
		t.Fatalf("new call after goaway: %v", err)
	}
	close(release)
	if err := <-res; err != nil {
		t.Fatalf("call in flight during Shutdown: %v", err)
	}
	if err := <-sd; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	<-host.Done()

	// A Shutdown whose deadline passes closes anyway.
	h2, p2 := peerPair(t, transport.ModeShm, nil, echoMux())
	go h2.Call(context.Background(), "hang", nil)
	time.Sleep(30 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p2.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown past its deadline: %v", err)
	}
}

// TestConcurrentCallsWithCancellation: 10,000 calls from 64 goroutines with
// random deadlines and cancellations; every call returns its result or a
// deadline/cancel error, and no goroutine is left behind.
func TestConcurrentCallsWithCancellation(t *testing.T) {
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			host, plugin := peerPair(t, md.mode, nil, echoMux())
			hammer(t, host)
			waitFor(t, 2*time.Second, func() bool {
				plugin.serveMu.Lock()
				defer plugin.serveMu.Unlock()
				return len(plugin.serving) == 0
			}, "every handler finished")
			host.Close()
			plugin.Close()
			waitFor(t, 3*time.Second, func() bool { return runtime.NumGoroutine() <= before+1 }, "no goroutines left behind")
		})
	}
	// The same across processes: the child serves echoMux.
	t.Run("shm-process", func(t *testing.T) {
		before := runtime.NumGoroutine()
		host, _ := peerWithChild(t, "shm")
		hammer(t, host)
		if err := host.Ping(context.Background()); err != nil {
			t.Fatalf("ping after the storm: %v", err)
		}
		host.Close()
		waitFor(t, 3*time.Second, func() bool { return runtime.NumGoroutine() <= before+1 }, "no goroutines left behind")
	})
}

// hammer makes 10,000 calls of "work" from 64 goroutines with random
// deadlines and cancellations and checks that every call returns its echo or
// a deadline or cancel error.
func hammer(t *testing.T, host *Peer) {
	var ok, deadline, cancelled atomic.Int64
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range 10000 / 64 {
				req := []byte{byte(r.IntN(40)), byte(g), byte(i)}
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				switch r.IntN(4) {
				case 0:
					ctx, cancel = context.WithTimeout(ctx, time.Duration(r.IntN(300))*time.Microsecond)
				case 1:
					ctx, cancel = context.WithCancel(ctx)
					time.AfterFunc(time.Duration(r.IntN(300))*time.Microsecond, cancel)
				}
				got, err := host.Call(ctx, "work", req)
				cancel()
				switch {
				case err == nil:
					if !bytes.Equal(got, req) {
						t.Errorf("got %v, want %v", got, req)
					}
					ok.Add(1)
				case errors.Is(err, context.DeadlineExceeded):
					deadline.Add(1)
				case errors.Is(err, context.Canceled):
					cancelled.Add(1)
				default:
					t.Errorf("call: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("ok %d, deadline %d, cancelled %d", ok.Load(), deadline.Load(), cancelled.Load())
	if ok.Load() == 0 || deadline.Load()+cancelled.Load() == 0 {
		t.Fatalf("want both successes and abandoned calls: ok %d, deadline %d, cancelled %d", ok.Load(), deadline.Load(), cancelled.Load())
	}
}

func waitFor(t testing.TB, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			n := runtime.Stack(buf, true)
			t.Fatalf("timed out after %v waiting for %s\n%s", d, what, buf[:n])
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHostileMessages: a peer that sends malformed RPC messages gets its
// connection closed; calls in flight fail with ErrPeerGone wrapping
// ErrCorrupt; nothing panics.
func TestHostileMessages(t *testing.T) {
	cases := []struct {
		name string
		typ  uint16
		data []byte
	}{
		{"short call", kindCall, []byte{1, 2, 3}},
		{"call header overrun", kindCall, func() []byte {
			b := appendCall(nil, 1, 0, 0, 0, "", "echo", nil)
			b[25] = 200
			return b
		}()},
		{"unknown flags", kindCall, func() []byte {
			b := appendCall(nil, 1, 0, 0, 0, "", "echo", nil)
			b[24] = 0x80
			return b
		}()},
		{"negative timeout", kindCall, appendCall(nil, 1, -5, 0, 0, "", "echo", nil)},
		{"short reply", kindReply, []byte{1}},
		{"garbage error body", kindError, append(appendID(nil, 1), 0xde, 0xad, 0xbe, 0xef)},
		{"short cancel", kindCancel, nil},
		{"garbage goaway", kindGoAway, []byte("not flatbuffers")},
		{"unknown type", 0x1234, []byte("x")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, s := connPair(t, transport.ModeShm)
			victim := NewPeer(s, Options{Mux: echoMux(), Logger: quiet})
			defer victim.Close()
			// A call from the victim to the attacker is in flight when the
			// garbage arrives: the victim's caller reads it.
			res := make(chan error, 1)
			go func() {
				_, err := victim.Call(context.Background(), "anything", nil)
				res <- err
			}()
			if _, err := c.Recv(); err != nil { // the victim's call
				t.Fatal(err)
			}
			c.Release()
			if err := c.Send(tc.typ, tc.data); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-res:
				if !errors.Is(err, ErrPeerGone) || !errors.Is(err, ErrCorrupt) {
					t.Fatalf("call in flight: %v, want ErrPeerGone and ErrCorrupt", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("the victim did not close within 2s")
			}
			<-victim.Done()
			c.Close()
		})
	}
}

// TestCloseTellsPeerPromptly: closing a Peer whose connection still holds a
// received message (the last reply a caller read) ends the other side at
// once, and a later Recv-less shutdown leaks nothing the test can see.
func TestCloseTellsPeerPromptly(t *testing.T) {
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			host, plugin := peerPair(t, md.mode, nil, echoMux())
			if _, err := host.Call(context.Background(), "echo", []byte("x")); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			host.Close()
			select {
			case <-plugin.Done():
				t.Logf("the plugin saw the close after %v", time.Since(start))
			case <-time.After(time.Second):
				t.Fatal("the plugin did not notice the host's Close within 1s")
			}
			if !errors.Is(plugin.Err(), ErrPeerGone) {
				t.Fatalf("plugin.Err: %v", plugin.Err())
			}
		})
	}
}

// TestRescueReader: while the background reader is stuck in an inline
// handler, pings and the plugin's own calls to the host are still answered.
func TestRescueReader(t *testing.T) {
	pm := NewMux()
	stuckAt := blockAt(50)
	pm.Handle("fastthenstuck", stuckAt.handle)
	hm := NewMux()
	hm.Handle("host.echo", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	host, plugin := peerPair(t, transport.ModeShm, hm, pm)
	ctx := context.Background()
	stuck := stickInline(t, host, "fastthenstuck", stuckAt)
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for i := range 20 {
		if err := host.Ping(tctx); err != nil {
			t.Fatalf("ping %d while the plugin's reader is stuck: %v", i, err)
		}
		if got, err := plugin.Call(tctx, "host.echo", []byte("x")); err != nil || string(got) != "x" {
			t.Fatalf("plugin call %d while its reader is stuck: %q %v", i, got, err)
		}
	}
	stuckAt.release()
	if err := <-stuck; err != nil {
		t.Fatal(err)
	}
	// And back to normal afterwards.
	for range 100 {
		if _, err := host.Call(tctx, "fastthenstuck", nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHandlerAndObjectLimits: a peer that floods calls whose handlers block
// is refused beyond MaxHandlers; New beyond MaxObjects is refused.
func TestHandlerAndObjectLimits(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	m := NewMux()
	m.Handle("block", func(ctx context.Context, req []byte) ([]byte, error) {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return nil, nil
	})
	m.HandleType("thing", func(ctx context.Context, args []byte) (Object, error) { return Methods{}, nil })
	c, s := connPair(t, transport.ModeShm)
	victim := NewPeer(s, Options{Mux: m, Logger: quiet, MaxHandlers: 20, MaxObjects: 3, InlineMax: -1})
	defer victim.Close()
	host := NewPeer(c, Options{Logger: quiet})
	defer host.Close()

	var wg sync.WaitGroup
	var exhausted atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	for range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := host.Call(ctx, "block", nil)
			var e *Error
			if errors.As(err, &e) && e.Code == CodeResourceExhaust {
				exhausted.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := exhausted.Load(); got < 40 {
		t.Fatalf("%d of 60 blocking calls refused with MaxHandlers 20, want at least 40", got)
	}
	// The abandoned calls' cancels end their handlers.
	waitFor(t, 2*time.Second, func() bool { return victim.spawned.Load() == 0 }, "the cancelled handlers to return")
	bg := context.Background()
	for i := range 3 {
		if _, err := host.New(bg, "thing", nil); err != nil {
			t.Fatalf("New %d: %v", i, err)
		}
	}
	var e *Error
	if _, err := host.New(bg, "thing", nil); !errors.As(err, &e) || e.Code != CodeResourceExhaust {
		t.Fatalf("New beyond MaxObjects: %v", err)
	}
}

// TestCallViewPanics: a panicking CallView function becomes the call's
// error and the Peer goes on working.
func TestCallViewPanics(t *testing.T) {
	host, _ := peerPair(t, transport.ModeShm, nil, echoMux())
	ctx := context.Background()
	err := host.CallView(ctx, "echoview", []byte("x"), func([]byte) error { panic("oops") })
	if err == nil || !strings.Contains(err.Error(), "oops") {
		t.Fatalf("CallView with a panicking function: %v", err)
	}
	if got, err := host.Call(ctx, "echo", []byte("after")); err != nil || string(got) != "after" {
		t.Fatalf("call after the panic: %q %v", got, err)
	}
}

// TestShutdownKeepsCallbacksAndSelf: callbacks into a call in flight still
// work while the caller shuts down, and Shutdown from inside a handler
// returns; a second Shutdown honours its context.
func TestShutdownKeepsCallbacksAndSelf(t *testing.T) {
	proceed := make(chan struct{})
	pm := NewMux()
	pm.Handle("slowcb", func(ctx context.Context, req []byte) ([]byte, error) {
		<-proceed
		return Callback(ctx, req)
	})
	pm.Handle("stop", func(ctx context.Context, req []byte) ([]byte, error) {
		p, _ := PeerFromContext(ctx)
		go func() { // the reply goes out first
			time.Sleep(10 * time.Millisecond)
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			p.Shutdown(sctx)
		}()
		return []byte("stopping"), nil
	})
	pm.Handle("stopnow", func(ctx context.Context, req []byte) ([]byte, error) {
		// Shutdown with the handler's own context: it must not wait for
		// this very handler.
		p, _ := PeerFromContext(ctx)
		return nil, p.Shutdown(ctx)
	})
	host, plugin := peerPair(t, transport.ModeShm, nil, pm)
	cbCtx := WithCallback(context.Background(), func(ctx context.Context, req []byte) ([]byte, error) {
		return append([]byte("cb:"), req...), nil
	})
	res := callAsync(cbCtx, host, "slowcb", []byte("x"), "cb:x")
	time.Sleep(20 * time.Millisecond)
	sd := make(chan error, 1)
	go func() { sd <- host.Shutdown(context.Background()) }()
	waitFor(t, time.Second, func() bool { return host.leaving.Load() }, "the host leaving")
	close(proceed)
	if err := <-res; err != nil {
		t.Fatalf("a callback during the caller's Shutdown: %v", err)
	}
	if err := <-sd; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	<-plugin.Done()

	// Shutdown from a handler's own goroutine tree, and a second Shutdown.
	h2, p2 := peerPair(t, transport.ModeShm, nil, pm)
	if got, err := h2.Call(context.Background(), "stop", nil); err != nil || string(got) != "stopping" {
		t.Fatalf("stop: %q %v", got, err)
	}
	select {
	case <-p2.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("a Shutdown started by a handler did not finish")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p2.Shutdown(ctx); err != nil {
		t.Fatalf("a second Shutdown after the end: %v", err)
	}

	h3, p3 := peerPair(t, transport.ModeShm, nil, pm)
	start := time.Now()
	h3.Call(context.Background(), "stopnow", nil) // answered or cut off: either is fine
	select {
	case <-p3.Done():
		t.Logf("Shutdown from inside a handler took %v", time.Since(start))
	case <-time.After(3 * time.Second):
		t.Fatal("Shutdown from inside a handler hung")
	}
}

// TestWrongAnswerKinds: a pong to a call, or a reply to a ping, closes the
// connection; so does a call id served twice.
func TestWrongAnswerKinds(t *testing.T) {
	t.Run("pong to a call", func(t *testing.T) {
		c, s := connPair(t, transport.ModeShm)
		victim := NewPeer(s, Options{Logger: quiet})
		defer victim.Close()
		res := make(chan error, 1)
		go func() {
			_, err := victim.Call(context.Background(), "x", nil)
			res <- err
		}()
		m, err := c.Recv()
		if err != nil {
			t.Fatal(err)
		}
		id, _, _ := parseID(m.Data)
		c.Release()
		c.Send(kindPong, appendID(nil, id))
		if err := <-res; !errors.Is(err, ErrCorrupt) {
			t.Fatalf("call answered by a pong: %v", err)
		}
		<-victim.Done()
		c.Close()
	})
	t.Run("duplicate call id", func(t *testing.T) {
		c, s := connPair(t, transport.ModeShm)
		block := make(chan struct{})
		defer close(block)
		m := NewMux()
		m.Handle("block", func(ctx context.Context, req []byte) ([]byte, error) {
			select {
			case <-block:
			case <-ctx.Done():
			}
			return nil, nil
		})
		victim := NewPeer(s, Options{Mux: m, Logger: quiet, InlineMax: -1})
		defer victim.Close()
		msg := appendCall(nil, 7, 0, 0, 0, "", "block", nil)
		c.Send(kindCall, msg)
		c.Send(kindCall, msg)
		select {
		case <-victim.Done():
			if !errors.Is(victim.Err(), ErrCorrupt) {
				t.Fatalf("victim.Err: %v", victim.Err())
			}
		case <-time.After(2 * time.Second):
			t.Fatal("a duplicate call id did not close the connection")
		}
		c.Close()
	})
}

// TestStalledPeer: a peer that stops reading fills our ring; calls and pings
// with a deadline still return at their deadline instead of hanging in Send.
func TestStalledPeer(t *testing.T) {
	c, s := connPair(t, transport.ModeShm) // c never reads
	defer c.Close()
	p := NewPeer(s, Options{Logger: quiet})
	defer p.Close()
	big := make([]byte, 200<<10)
	filled := false
	for i := range 100 { // the 1 MiB ring fills within a few calls
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		start := time.Now()
		_, err := p.Call(ctx, "x", big)
		cancel()
		if d := time.Since(start); d > time.Second {
			t.Fatalf("call %d took %v", i, d)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call %d: %v", i, err)
		}
		if p.Stats().MessagesSent < uint64(i+1) {
			filled = true
			break
		}
	}
	if !filled {
		t.Fatal("the ring never filled")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.Ping(ctx); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("ping to a stalled peer: %v after %v", err, time.Since(start))
	}
}

// callAsync calls method on p from another goroutine; the channel gets nil
// if the reply is want, the error otherwise.
func callAsync(ctx context.Context, p *Peer, method string, req []byte, want string) <-chan error {
	res := make(chan error, 1)
	go func() {
		got, err := p.Call(ctx, method, req)
		if err == nil && string(got) != want {
			err = fmt.Errorf("%s: got %q, want %q", method, got, want)
		}
		res <- err
	}()
	return res
}
