package bench

import (
	"context"
	"fmt"
	"os"
	"testing"

	negotiate "github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/internal/transport"
	"github.com/ringwire/ringwire/plugin"
)

// ringwire through its public plugin API, over every transport a user can
// choose. Shared memory and framed Unix: the host starts the plugin with
// plugin.Launch. TCP: the host listens with plugin.Listen on loopback and
// starts the plugin itself with plugin.ConnectEnv (an external plugin),
// which tunes its side with Plugin.Transport.
//
//	impl=ringwire-shm       shared memory (Launch's default on Linux)
//	impl=ringwire-unix      framed Unix socket (Transport.Mode = ModeFramed)
//	impl=ringwire-tcp       framed TCP, plaintext, no compression
//	impl=ringwire-tcp-lz4   framed TCP, plaintext, LZ4
//	impl=ringwire-tcp-zstd  framed TCP, plaintext, ZSTD
//	impl=ringwire-tcp-mtls  framed TCP, mutual TLS 1.3, no compression
//
// and in three forms:
//
//	form=call  Client.Call; the plugin's Handle handler builds a new reply (make + copy)
//	form=into  Client.CallInto with a reused dst; a HandleReply handler writes into the reply buffer
//	form=view  Client.CallView; a HandleView handler returns its request, still in the connection's memory
var rwTransports = []string{"shm", "unix", "tcp", "tcp-lz4", "tcp-zstd", "tcp-mtls"}

// rwTransportEnv tells a ringwire child which TCP options to take.
const rwTransportEnv = "RINGWIRE_BENCH_TRANSPORT"

func init() {
	roles["ringwire"] = serveRingwire
	for _, tr := range rwTransports {
		for _, form := range []string{"call", "into", "view"} {
			register(contender{impl: "ringwire-" + tr, form: form, start: func(tb testing.TB) *target {
				return startRingwire(tb, tr, form)
			}})
		}
	}
}

// echoMux is what the ringwire plugin serves; the host derives the contract
// from it too.
func echoMux() *plugin.Mux {
	m := plugin.NewMux()
	m.Handle("echo", func(_ context.Context, req []byte) ([]byte, error) {
		out := make([]byte, len(req)) // as a real handler builds its reply
		copy(out, req)
		return out, nil
	})
	m.HandleReply("echo0", func(_ context.Context, req []byte, w *plugin.Reply) error {
		_, err := w.Write(req)
		return err
	})
	m.HandleView("echoview", func(_ context.Context, req []byte) ([]byte, error) { return req, nil })
	return m
}

// rwCompressions is the codec list of a TCP transport name, for both sides.
func rwCompressions(tr string) []negotiate.Compression {
	switch tr {
	case "tcp-lz4":
		return []negotiate.Compression{negotiate.CompressionLZ4}
	case "tcp-zstd":
		return []negotiate.Compression{negotiate.CompressionZstd}
	}
	return []negotiate.Compression{} // none
}

// serveRingwire is the plugin process: plugin.Serve until the host goes away.
func serveRingwire() int {
	p := &plugin.Plugin{Name: "echo", Version: "bench", Mux: echoMux(), Logger: logger}
	switch tr := os.Getenv(rwTransportEnv); tr {
	case "", "shm", "unix":
	case "tcp-mtls": // TLS from the bundle in the environment
		p.Transport.Compressions = rwCompressions(tr)
	default:
		p.Transport = transport.Config{InsecurePlaintextTCP: true, Compressions: rwCompressions(tr)}
	}
	if err := plugin.Serve(context.Background(), p); err != nil {
		fmt.Fprintln(os.Stderr, "ringwire plugin:", err)
		return 1
	}
	return 0
}

// startRingwire starts one ringwire plugin over tr and returns the target of
// form.
func startRingwire(tb testing.TB, tr, form string) *target {
	cl, pid := launchRingwire(tb, tr)
	return &target{pids: []int{pid}, newCaller: func(req []byte) func(context.Context) error {
		switch form {
		case "call":
			return func(ctx context.Context) error {
				out, err := cl.Call(ctx, "echo", req)
				if err != nil {
					return err
				}
				return checkEcho(req, out)
			}
		case "into":
			dst := make([]byte, 0, len(req))
			return func(ctx context.Context) error {
				out, err := cl.CallInto(ctx, "echo0", req, dst[:0])
				if err != nil {
					return err
				}
				return checkEcho(req, out)
			}
		default: // view
			check := func(reply []byte) error { return checkEcho(req, reply) }
			return func(ctx context.Context) error { return cl.CallView(ctx, "echoview", req, check) }
		}
	}}
}

// launchRingwire starts this binary as a ringwire plugin over tr; cleanup
// stops and reaps it. It returns the client and the plugin's pid.
func launchRingwire(tb testing.TB, tr string) (*plugin.Client, int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var (
		cl  *plugin.Client
		pid int
		err error
	)
	switch tr {
	case "shm", "unix":
		cfg := &plugin.Config{
			Name: "echo", Path: executable(tb), Args: []string{"-test.run=^$"},
			StartTimeout: startTimeout, StopTimeout: stopTimeout, Logger: logger,
		}
		if tr == "unix" {
			cfg.Transport.Mode = transport.ModeFramed
		}
		if cl, err = plugin.Launch(ctx, cfg); err != nil {
			tb.Fatalf("plugin.Launch: %v", err)
		}
		pid = cl.PID()
	default:
		cl, pid = connectRingwire(tb, ctx, tr)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*stopTimeout)
		defer cancel()
		if err := cl.Stop(ctx); err != nil {
			tb.Logf("stopping the ringwire plugin: %v", err)
		}
	})
	want := map[string]string{"shm": "shm", "unix": "unix"}[tr]
	if want == "" {
		want = "tcp"
	}
	if k := cl.Info().Transport.Kind.String(); k != want {
		tb.Fatalf("ringwire negotiated %v, want %v", k, want)
	}
	return cl, pid
}

// connectRingwire listens on loopback TCP with the options of tr and starts
// this binary as an external plugin that connects to it.
func connectRingwire(tb testing.TB, ctx context.Context, tr string) (*plugin.Client, int) {
	lc := &plugin.Config{Logger: logger, StopTimeout: stopTimeout,
		Transport: transport.Config{Compressions: rwCompressions(tr)}}
	var bundle []byte
	if tr == "tcp-mtls" {
		ca, err := transport.NewCA("ringwire-bench")
		if err != nil {
			tb.Fatal(err)
		}
		if lc.Transport.TLS, err = ca.ServerConfig("host", "127.0.0.1"); err != nil {
			tb.Fatal(err)
		}
		if bundle, err = ca.ClientBundle("echo", "127.0.0.1"); err != nil {
			tb.Fatal(err)
		}
	} else {
		lc.Transport.InsecurePlaintextTCP = true
	}
	l, err := plugin.Listen("tcp", "127.0.0.1:0", lc)
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	ch := startChild(tb, "ringwire", append(plugin.ConnectEnv("tcp", l.Addr().String(), nil, bundle), rwTransportEnv+"="+tr))
	cl, err := l.Accept(ctx)
	if err != nil {
		tb.Fatalf("accepting the ringwire plugin over %s: %v", tr, err)
	}
	if got := cl.Info().Transport; got.TLS != (tr == "tcp-mtls") {
		tb.Fatalf("ringwire over %s: TLS %v", tr, got.TLS)
	}
	if got, want := cl.Info().Transport.Compression, map[string]string{"tcp-lz4": "lz4", "tcp-zstd": "zstd"}[tr]; want != "" && got != want {
		tb.Fatalf("ringwire over %s negotiated compression %q", tr, got)
	}
	return cl, ch.pid()
}
