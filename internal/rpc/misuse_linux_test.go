package rpc

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/transport"
)

// TestCallViewReentry: a CallView function that calls its own Peer gets
// ErrViewCall when it runs on the connection's memory (it holds the reading
// side, so its call could never read its answer), and a normal answer when
// it runs on a copy. It never hangs.
func TestCallViewReentry(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			host, _ := peerPair(t, m.mode, nil, echoMux())
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			viewCalls, copies := 0, 0
			for i := range 2000 {
				err := host.CallView(ctx, "echoview", []byte("x"), func([]byte) error {
					nctx, ncancel := context.WithTimeout(ctx, 2*time.Second)
					defer ncancel()
					got, err := host.Call(nctx, "echo", []byte("nested"))
					if err == nil && string(got) != "nested" {
						return errors.New("wrong nested answer")
					}
					return err
				})
				switch {
				case errors.Is(err, ErrViewCall):
					viewCalls++
				case err == nil:
					copies++
				default:
					t.Fatalf("CallView %d: %v", i, err)
				}
			}
			t.Logf("%d nested calls refused (in place), %d served (on a copy)", viewCalls, copies)
			if viewCalls == 0 {
				t.Fatal("no CallView function ran in place: the re-entry check was not exercised")
			}
			if got, err := host.Call(ctx, "echo", []byte("after")); err != nil || string(got) != "after" {
				t.Fatalf("call after: %q %v", got, err)
			}
		})
	}
}

// countingObject counts its methods running at once and whether it was
// closed while one ran.
type countingObject struct {
	running   atomic.Int32
	closed    atomic.Bool
	badClose  atomic.Bool
	release   chan struct{}
	closeOnce sync.Once
}

func (o *countingObject) Call(ctx context.Context, method string, req []byte) ([]byte, error) {
	o.running.Add(1)
	defer o.running.Add(-1)
	if method == "block" {
		<-o.release
	}
	return req, nil
}

func (o *countingObject) Close() error {
	if o.running.Load() != 0 {
		o.badClose.Store(true)
	}
	o.closeOnce.Do(func() { o.closed.Store(true) })
	return nil
}

// TestDestroyWaitsForMethods: Destroy closes an object only once its running
// methods returned; if Destroy's deadline comes first it fails with it and
// the last method closes the object.
func TestDestroyWaitsForMethods(t *testing.T) {
	var objs []*countingObject
	var mu sync.Mutex
	pm := NewMux()
	pm.HandleType("obj", func(ctx context.Context, args []byte) (Object, error) {
		o := &countingObject{release: make(chan struct{})}
		o.running.Store(0)
		mu.Lock()
		objs = append(objs, o)
		mu.Unlock()
		return o, nil
	})
	// The race detector cannot see the ordering that the in-process
	// shared memory gives: read the list under its lock.
	obj := func(i int) *countingObject {
		mu.Lock()
		defer mu.Unlock()
		return objs[i]
	}
	host, _ := peerPair(t, transport.ModeShm, nil, pm)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Destroy waits.
	h, err := host.New(ctx, "obj", nil)
	if err != nil {
		t.Fatal(err)
	}
	o := obj(0)
	blocked := make(chan error, 1)
	go func() { _, err := h.Call(ctx, "block", nil); blocked <- err }()
	waitFor(t, 5*time.Second, func() bool { return o.running.Load() == 1 }, "the method running")
	destroyed := make(chan error, 1)
	go func() { destroyed <- h.Destroy(ctx) }()
	select {
	case err := <-destroyed:
		t.Fatalf("Destroy returned while a method ran: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(o.release)
	if err := <-destroyed; err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if err := <-blocked; err != nil {
		t.Fatalf("method: %v", err)
	}
	if !o.closed.Load() || o.badClose.Load() {
		t.Fatalf("closed %v, closed while a method ran %v", o.closed.Load(), o.badClose.Load())
	}

	// Destroy's deadline comes first: the last method closes it.
	h2, err := host.New(ctx, "obj", nil)
	if err != nil {
		t.Fatal(err)
	}
	o2 := obj(1)
	go func() { _, err := h2.Call(ctx, "block", nil); blocked <- err }()
	waitFor(t, 5*time.Second, func() bool { return o2.running.Load() == 1 }, "the method running")
	dctx, dcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer dcancel()
	if err := h2.Destroy(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Destroy past its deadline: %v", err)
	}
	if o2.closed.Load() {
		t.Fatal("closed while its method runs")
	}
	close(o2.release)
	if err := <-blocked; err != nil {
		t.Fatalf("method: %v", err)
	}
	waitFor(t, 5*time.Second, o2.closed.Load, "the last method closing the object")
	if o2.badClose.Load() {
		t.Fatal("closed while a method ran")
	}
}

// TestObjectLimitExact: concurrent New calls never create more objects than
// MaxObjects.
func TestObjectLimitExact(t *testing.T) {
	const limit = 20
	var made atomic.Int32
	pm := NewMux()
	pm.HandleType("slow", func(ctx context.Context, args []byte) (Object, error) {
		time.Sleep(5 * time.Millisecond) // let the New calls overlap
		made.Add(1)
		return &countingObject{}, nil
	})
	c, s := connPair(t, transport.ModeShm)
	host := NewPeer(c, Options{Logger: quiet})
	plugin := NewPeer(s, Options{Mux: pm, MaxObjects: limit, Logger: quiet})
	t.Cleanup(func() { host.Close(); plugin.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var ok, refused atomic.Int32
	for range 3 * limit {
		wg.Go(func() {
			_, err := host.New(ctx, "slow", nil)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, &Error{Code: CodeResourceExhaust}):
				refused.Add(1)
			default:
				t.Errorf("New: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != limit || made.Load() != limit || refused.Load() != 2*limit {
		t.Fatalf("created %d (constructors run %d), refused %d; limit %d", ok.Load(), made.Load(), refused.Load(), limit)
	}
}

// TestCallbackEndsWithCall: a call-scoped callback still running when its
// call returns has its context cancelled.
func TestCallbackEndsWithCall(t *testing.T) {
	pm := NewMux()
	pm.Handle("callsback", func(ctx context.Context, req []byte) ([]byte, error) {
		// Fire the callback and return without waiting for it (nor
		// cancelling it): only the end of the call can end it.
		go func() { _, _ = Callback(context.WithoutCancel(ctx), req) }()
		time.Sleep(20 * time.Millisecond)
		return []byte("done"), nil
	})
	host, _ := peerPair(t, transport.ModeShm, nil, pm)
	ended := make(chan error, 1)
	started := make(chan struct{})
	cb := func(ctx context.Context, req []byte) ([]byte, error) {
		close(started)
		select {
		case <-ctx.Done():
			ended <- ctx.Err()
		case <-time.After(5 * time.Second):
			ended <- errors.New("the callback outlived its call by 5 s")
		}
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := host.Call(WithCallback(ctx, cb), "callsback", []byte("x"))
	if err != nil || string(got) != "done" {
		t.Fatalf("call: %q %v", got, err)
	}
	<-started
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("callback after its call returned: %v", err)
	}
}
