package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
)

// connect returns two connected Peers in one process: the listener side
// serves mux, the dialler side calls (and serves hostMux, for callbacks).
func connect(name string, mux, hostMux *rpc.Mux) (caller, server *rpc.Peer) {
	quiet := slog.New(slog.DiscardHandler)
	addr := fmt.Sprintf("@ringwire-protocol-example-%s-%d", name, os.Getpid())
	l, err := transport.Listen("unix", addr, &transport.Config{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan *rpc.Peer, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		accepted <- rpc.NewPeer(c, rpc.Options{Mux: mux, Logger: quiet})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := transport.Dial(ctx, "unix", addr, &transport.Config{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	return rpc.NewPeer(c, rpc.Options{Mux: hostMux, Logger: quiet}), <-accepted
}

// A Peer serves the methods of its Mux; the other side calls them.
func ExamplePeer_Call() {
	mux := rpc.NewMux()
	mux.Handle("greet", func(ctx context.Context, req []byte) ([]byte, error) {
		return []byte("hello, " + string(req)), nil
	})
	mux.Handle("fail", func(ctx context.Context, req []byte) ([]byte, error) {
		return nil, rpc.Errorf(rpc.CodeInvalidArgument, "no %s here", req)
	})
	caller, server := connect("call", mux, nil)
	defer server.Close()
	defer caller.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	reply, err := caller.Call(ctx, "greet", []byte("plugin"))
	fmt.Println(string(reply), err)

	_, err = caller.Call(ctx, "fail", []byte("cheese"))
	var e *rpc.Error
	fmt.Println(errors.As(err, &e), e.Code, e.Message)

	_, err = caller.Call(ctx, "nope", nil)
	fmt.Println(errors.Is(err, rpc.ErrUnknownMethod))
	// Output:
	// hello, plugin <nil>
	// true invalid argument no cheese here
	// true
}

// A handler calls back into its caller, both through the caller's own
// methods and through a callback scoped to the one call.
func ExampleCallback() {
	hostMux := rpc.NewMux()
	hostMux.Handle("host.log", func(ctx context.Context, req []byte) ([]byte, error) {
		fmt.Println("host logs:", string(req))
		return nil, nil
	})
	mux := rpc.NewMux()
	mux.Handle("work", func(ctx context.Context, req []byte) ([]byte, error) {
		host, _ := rpc.PeerFromContext(ctx)
		if _, err := host.Call(ctx, "host.log", []byte("working on "+string(req))); err != nil {
			return nil, err
		}
		return rpc.Callback(ctx, req) // ask the caller to finish the job
	})
	caller, server := connect("callback", mux, hostMux)
	defer server.Close()
	defer caller.Close()

	ctx := rpc.WithCallback(context.Background(), func(ctx context.Context, req []byte) ([]byte, error) {
		return []byte(strings.ToUpper(string(req))), nil
	})
	reply, err := caller.Call(ctx, "work", []byte("job"))
	fmt.Println(string(reply), err)
	// Output:
	// host logs: working on job
	// JOB <nil>
}

// counter is an object; its methods may be called concurrently.
type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) Call(ctx context.Context, method string, req []byte) ([]byte, error) {
	if method != "add" {
		return nil, fmt.Errorf("%w: %s", rpc.ErrUnknownMethod, method)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += len(req)
	return []byte(fmt.Sprint(c.n)), nil
}

// Remote objects: the peer creates an instance, the caller holds a handle.
func ExamplePeer_New() {
	mux := rpc.NewMux()
	mux.HandleType("counter", func(ctx context.Context, args []byte) (rpc.Object, error) {
		return &counter{}, nil
	})
	caller, server := connect("objects", mux, nil)
	defer server.Close()
	defer caller.Close()

	ctx := context.Background()
	h, err := caller.New(ctx, "counter", nil)
	if err != nil {
		log.Fatal(err)
	}
	h.Call(ctx, "add", []byte("abc"))
	n, _ := h.Call(ctx, "add", []byte("de"))
	fmt.Println(string(n))
	fmt.Println(h.Destroy(ctx))
	// Output:
	// 5
	// <nil>
}

// An interceptor on the serving Mux exports per-method call counts, errors
// and latency, the way a metrics library (Prometheus, OpenTelemetry) would
// take them; a ClientInterceptor does the same on the calling side.
func ExampleMux_Intercept() {
	type stat struct {
		calls, errors int
		total         time.Duration
	}
	var mu sync.Mutex
	stats := map[string]*stat{}
	mux := rpc.NewMux()
	mux.Intercept(func(ctx context.Context, method string, req []byte, handle func(context.Context) error) error {
		start := time.Now()
		err := handle(ctx)
		mu.Lock()
		defer mu.Unlock()
		s := stats[method]
		if s == nil {
			s = &stat{}
			stats[method] = s
		}
		s.calls++
		s.total += time.Since(start)
		if err != nil {
			s.errors++
		}
		return err
	})
	mux.Handle("greet", func(ctx context.Context, req []byte) ([]byte, error) {
		return []byte("hello, " + string(req)), nil
	})
	mux.Handle("fail", func(ctx context.Context, req []byte) ([]byte, error) {
		return nil, rpc.Errorf(rpc.CodeInvalidArgument, "no")
	})
	caller, server := connect("intercept", mux, nil)
	ctx := context.Background()
	for range 3 {
		caller.Call(ctx, "greet", []byte("you"))
	}
	caller.Call(ctx, "fail", nil)
	caller.Close()
	server.Close() // waits for the handlers, and so for the interceptor

	mu.Lock()
	defer mu.Unlock()
	for _, m := range []string{"fail", "greet"} {
		s := stats[m]
		fmt.Printf("%s: %d calls, %d errors, latency measured: %v\n", m, s.calls, s.errors, s.total > 0)
	}
	// Output:
	// fail: 1 calls, 1 errors, latency measured: true
	// greet: 3 calls, 0 errors, latency measured: true
}
