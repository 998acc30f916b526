//go:build linux

package plugin_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/ringwire/ringwire/plugin"
)

// A plugin binary's main function: declare what it serves and call Serve
// (or plugin.Main, which also exits).
func ExampleServe() {
	mux := plugin.NewMux()
	mux.Handle("echo", func(_ context.Context, req []byte) ([]byte, error) {
		return bytes.Clone(req), nil
	})
	err := plugin.Serve(&plugin.Plugin{
		Name:        "echo",
		Version:     "1.0.0",
		Description: "echoes what it gets",
		Constants:   map[string]string{"greeting": "hello"},
		Mux:         mux,
	})
	// Started by a host, Serve returns when the host goes away. Run by hand,
	// as here, it explains itself at once instead of waiting.
	fmt.Println(errors.Is(err, plugin.ErrNotLaunched))
	// Output: true
}

// A host launches a plugin, reads its metadata and calls it.
func ExampleLaunch() {
	ctx := context.Background()
	c, err := plugin.Launch(ctx, &plugin.Config{
		Name: "echo",
		// The plugin binary: here this test binary, which serves as the
		// echo plugin of main_linux_test.go when its role is set.
		Path:     os.Args[0],
		Env:      childEnv("echo"),
		Contract: echoContract, // the Contract of the plugin's Mux
		Logger:   slog.New(slog.DiscardHandler),
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
			Path:     os.Args[0], // this test binary as the echo plugin
			Env:      childEnv("echo"),
			Contract: echoContract,
			Logger:   slog.New(slog.DiscardHandler),
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
