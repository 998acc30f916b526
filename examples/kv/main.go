// Command kv shows a stateful plugin: key-value stores created as remote
// objects (one handle per store), exported constants the host reads without a
// call, a plugin that calls back into the host (a host method it is allowed
// to call, and a callback scoped to one call), and handles released when the
// connection ends. Like examples/echo, the binary is its own plugin.
//
//	go run ./examples/kv
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ringwire/ringwire/plugin"
)

// ---- the plugin ----

// store is one key-value store, a remote object owned by the connection
// that created it.
type store struct {
	name string
	mu   sync.Mutex
	m    map[string][]byte
}

// Call serves the store's methods. Keys and values travel as
// "key\x00value".
func (s *store) Call(ctx context.Context, method string, req []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch method {
	case "put":
		k, v, ok := bytes.Cut(req, []byte{0})
		if !ok {
			return nil, plugin.Errorf(plugin.CodeInvalidArgument, "put wants key\\x00value")
		}
		if len(s.m) >= maxKeys {
			return nil, plugin.Errorf(plugin.CodeResourceExhaust, "store %s is full (%d keys)", s.name, maxKeys)
		}
		s.m[string(k)] = bytes.Clone(v)
		// Tell the host: a call back into a method the host serves.
		if host, ok := plugin.CallerOf(ctx); ok {
			if _, err := host.Call(ctx, "host.Changed", []byte(s.name+": "+string(k))); err != nil {
				return nil, err
			}
		}
		return nil, nil
	case "get":
		v, ok := s.m[string(req)]
		if !ok {
			return nil, plugin.Errorf(plugin.CodeNotFound, "no key %q in %s", req, s.name)
		}
		return v, nil
	case "scan":
		// A callback scoped to this call: hand every pair to the caller.
		keys := make([]string, 0, len(s.m))
		for k := range s.m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if _, err := plugin.Callback(ctx, append([]byte(k+"\x00"), s.m[k]...)); err != nil {
				return nil, err
			}
		}
		return []byte(strconv.Itoa(len(keys))), nil
	}
	return nil, fmt.Errorf("%w: store has no method %q", plugin.ErrUnknownMethod, method)
}

var openStores sync.WaitGroup // stores alive, to show their release

// Close runs when the host destroys the handle or the connection ends.
func (s *store) Close() error {
	fmt.Fprintf(os.Stderr, "plugin: store %s released (%d keys)\n", s.name, len(s.m))
	openStores.Done()
	return nil
}

const maxKeys = 1000

func kvPlugin() *plugin.Plugin {
	mux := plugin.NewMux()
	mux.HandleType("kv.Store", func(ctx context.Context, args []byte) (plugin.Object, error) {
		if len(args) == 0 {
			return nil, plugin.Errorf(plugin.CodeInvalidArgument, "a store needs a name")
		}
		openStores.Add(1)
		return &store{name: string(args), m: map[string][]byte{}}, nil
	})
	return &plugin.Plugin{
		Name: "kv", Version: "0.3.0", Description: "in-memory key-value stores",
		Constants: map[string]string{"max_keys": strconv.Itoa(maxKeys), "backend": "memory"},
		Mux:       mux,
	}
}

// ---- the host ----

func main() {
	if plugin.Launched() {
		plugin.Main(kvPlugin())
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kv:", err)
		os.Exit(1)
	}
}

func run() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// What the host serves the plugin.
	hostMux := plugin.NewMux()
	var changes []string
	var mu sync.Mutex
	hostMux.Handle("host.Changed", func(ctx context.Context, req []byte) ([]byte, error) {
		mu.Lock()
		changes = append(changes, string(req))
		mu.Unlock()
		return nil, nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The plugin's stdout and stderr arrive in this logger, line by line.
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // shorter lines
			}
			return a
		},
	}))
	// The Client supervises the plugin: health pings, restarts on a crash.
	s, err := plugin.Launch(ctx, &plugin.Config{
		Name: "kv", Path: self, Mux: hostMux, Logger: log,
	})
	if err != nil {
		return err
	}
	defer s.Stop(context.Background()) // on early returns

	info := s.Info()
	fmt.Printf("plugin %s %s: %s; constants: max_keys=%s backend=%s\n",
		info.Name, info.Version, info.Description, info.Constants["max_keys"], info.Constants["backend"])

	users, err := s.New(ctx, "kv.Store", []byte("users"))
	if err != nil {
		return err
	}
	colours, err := s.New(ctx, "kv.Store", []byte("colours"))
	if err != nil {
		return err
	}
	for _, kv := range []string{"ada\x00admin", "bob\x00reader", "cy\x00writer"} {
		if _, err := users.Call(ctx, "put", []byte(kv)); err != nil {
			return err
		}
	}
	if _, err := colours.Call(ctx, "put", []byte("sky\x00blue")); err != nil {
		return err
	}
	v, err := users.Call(ctx, "get", []byte("bob"))
	fmt.Printf("users[bob] = %s (%v)\n", v, err)
	_, err = colours.Call(ctx, "get", []byte("grass"))
	var e *plugin.Error
	if errors.As(err, &e) {
		fmt.Printf("colours[grass]: code %q, %s\n", e.Code, e.Message)
	}
	mu.Lock()
	fmt.Printf("the plugin called host.Changed %d times: %q\n", len(changes), changes)
	mu.Unlock()

	// scan calls back into this call's own callback once per pair.
	scanCtx := plugin.WithCallback(ctx, func(ctx context.Context, req []byte) ([]byte, error) {
		k, v, _ := bytes.Cut(req, []byte{0})
		fmt.Printf("  scan: %s = %s\n", k, v)
		return nil, nil
	})
	n, err := users.Call(scanCtx, "scan", nil)
	if err != nil {
		return err
	}
	fmt.Printf("scanned %s pairs\n", n)

	if err := colours.Destroy(ctx); err != nil {
		return err
	}
	if _, err := colours.Call(ctx, "get", []byte("sky")); err != nil {
		fmt.Println("after Destroy:", err)
	}
	st := s.Status()
	fmt.Printf("session: %s, pid %d, restarts %d\n", st.State, st.PID, st.Restarts)
	// Stopping the session ends the connection: the plugin releases the
	// store the host did not destroy (its "released" line is logged here).
	if err := s.Stop(ctx); err != nil {
		return err
	}
	fmt.Println("session:", s.Status().State)
	return nil
}
