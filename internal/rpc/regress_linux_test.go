package rpc

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/transport"
)

// TestLiveHandlerContextNoGoroutine (8): a context derived from a handler's
// (context.WithTimeout, WithCancel inside the handler) starts no goroutine:
// handlerCtx implements AfterFunc, which the context package uses instead of
// a goroutine per derivation. The derived contexts still end with the
// handler's.
func TestLiveHandlerContextNoGoroutine(t *testing.T) {
	type result struct {
		before, after int
		ended         time.Duration // when a derived context ended after the call's deadline
		err           error
	}
	res := make(chan result, 1)
	m := NewMux()
	m.Handle("derive", func(ctx context.Context, req []byte) ([]byte, error) {
		var r result
		r.before = runtime.NumGoroutine()
		cancels := make([]context.CancelFunc, 0, 1000)
		var last context.Context
		for i := range 1000 {
			var c context.Context
			var cancel context.CancelFunc
			if i%2 == 0 {
				c, cancel = context.WithTimeout(ctx, time.Minute)
			} else {
				c, cancel = context.WithCancel(ctx)
			}
			cancels = append(cancels, cancel)
			last = c
		}
		r.after = runtime.NumGoroutine()
		dl, _ := ctx.Deadline()
		select {
		case <-last.Done():
			r.ended = time.Since(dl)
			r.err = last.Err()
		case <-time.After(5 * time.Second):
		}
		for _, c := range cancels {
			c()
		}
		res <- r
		return nil, ctx.Err()
	})
	host, _ := peerPair(t, transport.ModeShm, nil, m)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := host.Call(ctx, "derive", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("derive: %v, want DeadlineExceeded", err)
	}
	select {
	case r := <-res:
		t.Logf("goroutines: %d before 1,000 derivations, %d after; a derived context ended %v after the call's deadline (%v)",
			r.before, r.after, r.ended.Round(time.Millisecond), r.err)
		if d := r.after - r.before; d > 10 {
			t.Errorf("1,000 contexts derived from a handler's started %d goroutines", d)
		}
		if !errors.Is(r.err, context.DeadlineExceeded) && !errors.Is(r.err, context.Canceled) {
			t.Errorf("a derived context did not end with the handler's: %v", r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not report")
	}
}

// TestLiveGoAwayCodes (8): a call refused because the serving side is going
// away is answered with CodeGoingAway and matches ErrGoAway; a handler's own
// CodeUnavailable does not.
func TestLiveGoAwayCodes(t *testing.T) {
	t.Run("refusal", func(t *testing.T) {
		c, s := connPair(t, transport.ModeShm)
		defer c.Close()
		victim := NewPeer(s, Options{Mux: echoMux(), Logger: quiet})
		defer victim.Close()
		sd := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			sd <- victim.Shutdown(ctx)
		}()
		m := recvType(t, c, kindGoAway)
		if _, _, err := parseGoAwayBody(m.Data); err != nil {
			t.Fatal(err)
		}
		c.Release()
		if err := c.Send(kindCall, appendCall(nil, 1, 0, 0, 0, "", "echo", []byte("late"))); err != nil {
			t.Fatal(err)
		}
		m = recvType(t, c, kindError)
		id, body, _ := parseID(m.Data)
		code, msg, details, err := parseErrorBody(body)
		c.Release()
		if err != nil || id != 1 {
			t.Fatalf("refusal of call 1: id %d, %v", id, err)
		}
		e := &Error{Code: Code(code), Message: msg, Details: details}
		if e.Code != CodeGoingAway || !errors.Is(e, ErrGoAway) {
			t.Errorf("refusal: %v (code %d), want CodeGoingAway matching ErrGoAway", e, e.Code)
		}
		if errors.Is(e, &Error{Code: CodeUnavailable}) {
			t.Errorf("the refusal matches CodeUnavailable")
		}
		// Our goaway in reply ends the victim's Shutdown.
		if err := c.Send(kindGoAway, appendGoAwayBody(nil, "bye", 0)); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-sd:
			if err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Shutdown did not return")
		}
	})
	t.Run("peer", func(t *testing.T) {
		m := NewMux()
		m.Handle("unavailable", func(ctx context.Context, req []byte) ([]byte, error) {
			return nil, Errorf(CodeUnavailable, "try later")
		})
		m.Handle("hang", func(ctx context.Context, req []byte) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})
		host, plugin := peerPair(t, transport.ModeShm, nil, m)
		ctx := context.Background()
		_, err := host.Call(ctx, "unavailable", nil)
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeUnavailable || errors.Is(err, ErrGoAway) {
			t.Errorf("a handler's own CodeUnavailable: %v (matches ErrGoAway: %v)", err, errors.Is(err, ErrGoAway))
		}
		// A Peer whose peer sent goaway makes no new call: ErrGoAway.
		go host.Call(ctx, "hang", nil) // keeps the plugin's Shutdown waiting
		time.Sleep(20 * time.Millisecond)
		sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		go plugin.Shutdown(sctx)
		waitFor(t, time.Second, func() bool { return host.peerLeft.Load() }, "the goaway reaching the host")
		if _, err := host.Call(ctx, "unavailable", nil); !errors.Is(err, ErrGoAway) {
			t.Errorf("a call after the peer's goaway: %v, want ErrGoAway", err)
		}
	})
}

// recvType reads c until a message of type typ (within 2 s); the caller
// releases it.
func recvType(t *testing.T, c transport.Conn, typ uint16) transport.Message {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	for {
		m, err := c.Recv()
		if err != nil {
			t.Fatalf("waiting for message type %#x: %v", typ, err)
		}
		if m.Type == typ {
			return m
		}
	}
}
