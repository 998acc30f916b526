//go:build linux

package plugin_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ringwire/ringwire/plugin"
)

// A plugin binary's main function: declare what it serves and call Serve
// (or plugin.Main, which also exits).
func ExampleServe() {
	mux := plugin.NewMux()
	mux.Handle("echo", func(_ context.Context, req []byte) ([]byte, error) {
		return bytes.Clone(req), nil
	})
	err := plugin.Serve(context.Background(), &plugin.Plugin{
		Name:        "echo",
		Version:     "1.0.0",
		Description: "echoes what it gets",
		Constants:   map[string]string{"greeting": "hello"},
		Mux:         mux,
	})
	// Started by a host, Serve returns when the host goes away. Run by hand,
	// as here, it explains itself at once instead of waiting.
	fmt.Println(errors.Is(err, plugin.ErrConfig))
	// Output: true
}

// A host launches a plugin, reads its metadata and calls it.
func ExampleLaunch() {
	ctx := context.Background()
	c, err := plugin.Launch(ctx, &plugin.Config{
		Name: "echo",
		// The plugin binary: here this test binary, which serves as the
		// echo plugin of main_linux_test.go when its role is set.
		Path:   os.Args[0],
		Env:    childEnv("echo"),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	in := c.Info() // from the handshake: no call needed
	fmt.Printf("%s %s: %s (greeting %q) over %v\n", in.Name, in.Version, in.Description, in.Constants["greeting"], in.Transport.Kind)
	out, err := c.Call(ctx, "echo", []byte("hello"))
	fmt.Println(string(out), err)
	// Output:
	// echo 1.2.3: echoes what it gets (greeting "hello") over shm
	// hello <nil>
}

// A registry starts plugins in order, supervises them and stops them in
// reverse order.
func ExampleRegistry() {
	ctx := context.Background()
	var r plugin.Registry
	for _, name := range []string{"first", "second"} {
		if _, err := r.Add(name, &plugin.Config{
			Path:   os.Args[0], // this test binary as the echo plugin
			Env:    childEnv("echo"),
			Logger: slog.New(slog.DiscardHandler),
		}); err != nil {
			log.Fatal(err)
		}
	}
	if err := r.StartAll(ctx); err != nil {
		log.Fatal(err)
	}
	s, _ := r.Get("second")
	out, err := s.Call(ctx, "echo", []byte("via the registry"))
	fmt.Println(string(out), err)
	for _, name := range r.Names() {
		fmt.Println(name, r.Statuses()[name].State)
	}
	if err := r.StopAll(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("first", r.Statuses()["first"].State)
	// Output:
	// via the registry <nil>
	// first ready
	// second ready
	// first stopped
}

// A host measures each method's latency with an interceptor on the calls
// it makes (Config.Intercept); Mux.Intercept does the same on the calls a
// Mux serves.
func ExampleConfig_intercept() {
	type stat struct {
		calls, errors int
		total         time.Duration
	}
	var mu sync.Mutex
	stats := map[string]*stat{}
	latency := func(ctx context.Context, method string, req []byte, call func(context.Context) error) error {
		start := time.Now()
		err := call(ctx)
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
	}
	ctx := context.Background()
	c, err := plugin.Launch(ctx, &plugin.Config{
		Name: "echo", Path: os.Args[0], Env: childEnv("echo"), // this test binary as the echo plugin
		Intercept: []plugin.ClientInterceptor{latency},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		c.Call(ctx, "echo", []byte("hi"))
	}
	c.Call(ctx, "no such method", nil)

	mu.Lock()
	defer mu.Unlock()
	for _, m := range []string{"echo", "no such method"} {
		s := stats[m]
		fmt.Printf("%s: %d calls, %d errors, latency measured: %v\n", m, s.calls, s.errors, s.total > 0)
	}
	// Output:
	// echo: 3 calls, 0 errors, latency measured: true
	// no such method: 1 calls, 1 errors, latency measured: true
}

// Inside a handler, the plugin calls the host back: CallerOf(ctx) for the
// methods the host serves (Config.Mux), Callback for the function the caller
// attached to this one call with WithCallback.
func ExampleWithCallback() {
	ctx := context.Background()
	host := plugin.NewMux()
	host.Handle("hostecho", func(_ context.Context, req []byte) ([]byte, error) {
		return append([]byte("host:"), req...), nil
	})
	c, err := plugin.Launch(ctx, &plugin.Config{
		Name: "echo", Path: os.Args[0], Env: childEnv("echo"),
		Mux:    host,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// "callback" calls the host's "hostecho" through CallerOf.
	out, err := c.Call(ctx, "callback", []byte("ping"))
	fmt.Println(string(out), err)

	// "scan" hands each word back through Callback (the callback runs on
	// one of the connection's goroutines, hence the lock).
	var mu sync.Mutex
	var words []string
	scan := plugin.WithCallback(ctx, func(_ context.Context, word []byte) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		words = append(words, string(word))
		return nil, nil
	})
	n, err := c.Call(scan, "scan", []byte("one two three"))
	mu.Lock()
	fmt.Println(string(n), words, err)
	mu.Unlock()
	// Output:
	// host:ping <nil>
	// 3 [one two three] <nil>
}

// A plugin's Mux registers object types (HandleType); the host creates
// instances with New and calls their methods through the Handle.
func ExampleClient_New() {
	ctx := context.Background()
	c, err := plugin.Launch(ctx, &plugin.Config{
		Name: "echo", Path: os.Args[0], Env: childEnv("echo"),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	h, err := c.New(ctx, "counter", nil)
	if err != nil {
		log.Fatal(err)
	}
	for range 2 {
		out, err := h.Call(ctx, "add", nil)
		fmt.Println(binary.LittleEndian.Uint64(out), err)
	}
	fmt.Println(h.Destroy(ctx))
	// Output:
	// 1 <nil>
	// 2 <nil>
	// <nil>
}
