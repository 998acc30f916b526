// Command echo is ringwire's demo and the README's first command. It launches
// a copy of itself as a plugin process (plugin.Launch: a pre-connected Unix
// socket, a token, then shared-memory rings), prints what was negotiated and
// what the plugin declared, makes echo calls and prints their latency
// (p50/p99) and rate, echoes a few large messages, runs concurrent callers,
// and stops the plugin gracefully.
//
//	go run ./examples/echo [-n 200000] [-size 10] [-big 1048576] [-callers 8]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/ringwire/ringwire/plugin"
)

// The plugin's side: what it serves and declares.
func echoPlugin() *plugin.Plugin {
	mux := plugin.NewMux()
	// A view handler: the request is read in place and the reply copied
	// once, straight back into the other ring.
	mux.HandleView("echo.Echo", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	mux.Handle("echo.Upper", func(ctx context.Context, req []byte) ([]byte, error) {
		return bytes.ToUpper(req), nil
	})
	return &plugin.Plugin{
		Name: "echo", Version: "1.0.0", Description: "echoes what it is sent",
		Constants: map[string]string{"max_size": "256MiB"},
		Mux:       mux,
	}
}

func main() {
	if plugin.Launched() {
		plugin.Main(echoPlugin()) // never returns
	}
	n := flag.Int("n", 200000, "number of sequential echo calls")
	size := flag.Int("size", 10, "request size in bytes")
	big := flag.Int("big", 1<<20, "size of the large messages echoed (0: none)")
	callers := flag.Int("callers", 8, "concurrent callers in the throughput run (0: skip)")
	flag.Parse()
	if err := run(*n, *size, *big, *callers); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func run(n, size, big, callers int) error {
	if n < 1 || size < 0 || big < 0 || callers < 0 {
		return errors.New("-n must be positive; -size, -big and -callers not negative")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	client, err := plugin.Launch(ctx, &plugin.Config{
		Name:   "echo",
		Path:   self,
		Logger: log,
	})
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	defer client.Kill()

	info := client.Info()
	t := info.Transport
	fmt.Printf("plugin %s %s (%q), pid %d, constants %v\n", info.Name, info.Version, info.Description, client.PID(), info.Constants)
	fmt.Printf("transport: %s, compression %s, tls %v, ring %d KiB each way\n", t.Kind, t.Compression, t.TLS, t.RingSize>>10)

	up, err := client.Call(ctx, "echo.Upper", []byte("hello, plugin"))
	if err != nil {
		return err
	}
	fmt.Printf("echo.Upper: %s\n", up)

	if err := sequential(ctx, client, n, size); err != nil {
		return err
	}
	if big > 0 {
		if err := large(ctx, client, big); err != nil {
			return err
		}
	}
	if callers > 0 {
		if err := concurrent(ctx, client, callers, size); err != nil {
			return err
		}
	}
	s := client.Stats()
	fmt.Printf("host side: %d messages sent, %d received, %d futex wake-ups issued, %d parks\n", s.MessagesSent, s.MessagesRecv, s.Wakes, s.Parks)

	stopCtx, stopCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer stopCancel()
	if err := client.Stop(stopCtx); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	fmt.Println("plugin stopped")
	return nil
}

// sequential makes n calls one after the other and reports their latency.
func sequential(ctx context.Context, c *plugin.Client, n, size int) error {
	req := bytes.Repeat([]byte{'r'}, size)
	dst := make([]byte, 0, size)
	rtts := make([]time.Duration, n)
	start := time.Now()
	for i := range rtts {
		t0 := time.Now()
		out, err := c.CallInto(ctx, "echo.Echo", req, dst[:0])
		rtts[i] = time.Since(t0)
		if err != nil {
			return fmt.Errorf("call %d: %w", i, err)
		}
		if !bytes.Equal(out, req) {
			return fmt.Errorf("call %d: echo differs", i)
		}
	}
	total := time.Since(start)
	slices.Sort(rtts)
	pct := func(p float64) time.Duration { return rtts[min(len(rtts)-1, int(p*float64(len(rtts))))] }
	fmt.Printf("%d sequential calls of %d B: p50 %v  p99 %v  p99.9 %v  max %v\n", n, size, pct(0.50), pct(0.99), pct(0.999), rtts[len(rtts)-1])
	fmt.Printf("rate: %.0f calls/s\n", float64(n)/total.Seconds())
	return nil
}

// large echoes messages of big bytes and checks every byte.
func large(ctx context.Context, c *plugin.Client, big int) error {
	payload := make([]byte, big)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	dst := make([]byte, 0, big)
	const rounds = 50
	start := time.Now()
	for i := range rounds {
		out, err := c.CallInto(ctx, "echo.Echo", payload, dst[:0])
		if err != nil {
			return fmt.Errorf("large call %d: %w", i, err)
		}
		if !bytes.Equal(out, payload) {
			return fmt.Errorf("large call %d: echo differs", i)
		}
	}
	d := time.Since(start)
	fmt.Printf("%d echoes of %d KiB: %v each, %.2f GB/s of payload\n", rounds, big>>10, d/rounds, float64(rounds*big)/d.Seconds()/1e9)
	return nil
}

// concurrent runs callers goroutines calling for one second.
func concurrent(ctx context.Context, c *plugin.Client, callers, size int) error {
	req := bytes.Repeat([]byte{'c'}, size)
	var wg sync.WaitGroup
	counts := make([]int, callers)
	errs := make([]error, callers)
	stop := time.Now().Add(time.Second)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := make([]byte, 0, size)
			for time.Now().Before(stop) {
				out, err := c.CallInto(ctx, "echo.Echo", req, dst[:0])
				if err == nil && !bytes.Equal(out, req) {
					err = errors.New("echo differs")
				}
				if err != nil {
					errs[g] = err
					return
				}
				counts[g]++
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	fmt.Printf("%d concurrent callers: %d calls in 1 s (%.0f calls/s)\n", callers, total, float64(total))
	return nil
}
