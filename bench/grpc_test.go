package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ringwire/ringwire/transport"
)

// An unchanged gRPC service between two processes: the child serves the
// hand-declared Echo service of goplugin_test.go (echoServiceDesc,
// echoServer, rawCodec) with a stock grpc.NewServer, and the host calls it
// through one grpc.ClientConn per instance, shared by all of its callers.
// Only the listener and the dialer differ between the impls (as in
// examples/grpc):
//
//	impl=grpc-shm            ringwire shared-memory rings (transport.Listen on a
//	                         Unix socket, ModeAuto; NetListener / NetConn)
//	impl=grpc-ringwire-unix  ringwire framed messages on the Unix socket
//	                         (ModeFramed; NetListener / NetConn)
//	impl=grpc-unix           stock gRPC on a plain Unix socket (net.Listen,
//	                         the "unix:" target)
//
// form=call: the server's handler returns its request (gRPC has already
// copied it out of the connection); the client gets a new slice per call.
const (
	grpcNetEnv   = "RINGWIRE_BENCH_GRPC_NET"
	grpcTokenEnv = "RINGWIRE_BENCH_GRPC_TOKEN"
	grpcReady    = "GRPC_LISTENING"
)

// grpcNets maps each impl to the transport its child listens on.
var grpcNets = []struct{ impl, net string }{
	{"grpc-shm", "shm"},
	{"grpc-ringwire-unix", "ringwire-unix"},
	{"grpc-unix", "unix"},
}

// grpcContract identifies the Echo service in ringwire's handshake.
var grpcContract = func() []byte { h := sha256.Sum256([]byte(echoMethod)); return h[:] }()

func init() {
	roles["grpc"] = serveGRPC
	for _, g := range grpcNets {
		register(contender{impl: g.impl, form: "call", start: func(tb testing.TB) *target {
			return startGRPC(tb, g.net)
		}})
	}
}

// grpcConfig is a ringwire side's transport config for net ("shm" or
// "ringwire-unix"), authenticated by token.
func grpcConfig(name, network string, token []byte) *transport.Config {
	cfg := &transport.Config{Name: name, Contract: grpcContract, Token: token, Logger: logger}
	if network == "ringwire-unix" {
		cfg.Mode = transport.ModeFramed
	}
	return cfg
}

// serveGRPC is the gRPC server's child: it listens on a fresh Unix socket,
// prints its path, and serves Echo until stdin closes.
func serveGRPC() int {
	network := os.Getenv(grpcNetEnv)
	token, err := hex.DecodeString(os.Getenv(grpcTokenEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc:", err)
		return 2
	}
	dir, err := os.MkdirTemp("", "ringwire-grpc")
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc:", err)
		return 2
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "echo.sock")
	var l net.Listener
	switch network {
	case "shm", "ringwire-unix":
		acc, err := transport.Listen("unix", path, grpcConfig("grpc-echo-server", network, token))
		if err != nil {
			fmt.Fprintln(os.Stderr, "grpc:", err)
			return 2
		}
		l = acc
	case "unix":
		if l, err = net.Listen("unix", path); err != nil {
			fmt.Fprintln(os.Stderr, "grpc:", err)
			return 2
		}
	default:
		fmt.Fprintf(os.Stderr, "grpc: unknown network %q\n", network)
		return 2
	}
	gs := grpc.NewServer()
	gs.RegisterService(&echoServiceDesc, echoServer{})
	served := make(chan error, 1)
	go func() { served <- gs.Serve(l) }() // Serve closes l when it returns
	fmt.Println(grpcReady, path)
	select {
	case <-untilStdinCloses():
	case err := <-served:
		fmt.Fprintln(os.Stderr, "grpc: serve:", err)
		return 1
	}
	// The host has closed its ClientConn: a graceful stop is quick. It is
	// bounded below the host's stopTimeout, then forced.
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(stopTimeout / 2):
		fmt.Fprintln(os.Stderr, "grpc: GracefulStop hung; stopping")
		gs.Stop()
	}
	select {
	case <-served:
	case <-time.After(stopTimeout / 4):
		fmt.Fprintln(os.Stderr, "grpc: Serve did not return after the stop")
		return 1
	}
	return 0
}

// startGRPC starts a gRPC server child on network and returns its target:
// one ClientConn, shared by every caller. Cleanup closes the ClientConn,
// then stops and reaps the child.
func startGRPC(tb testing.TB, network string) *target {
	tb.Helper()
	token := make([]byte, 32)
	rand.Read(token)
	ch := startChild(tb, "grpc", []string{grpcNetEnv + "=" + network, grpcTokenEnv + "=" + hex.EncodeToString(token)})
	path := ch.await(tb, grpcReady)

	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	addr := "unix:" + path
	var kind atomic.Value // the transport.Kind of the first ringwire connection
	if network != "unix" {
		cfg := grpcConfig("grpc-echo-client", network, token)
		addr = "passthrough:///ringwire-grpc-echo"
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			c, err := transport.Dial(ctx, "unix", path, cfg)
			if err != nil {
				return nil, err
			}
			if in, ok := transport.InfoOf(c); ok {
				kind.CompareAndSwap(nil, in.Kind)
			}
			return c, nil
		}))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		tb.Fatalf("grpc.NewClient(%s): %v", addr, err)
	}
	tb.Cleanup(func() { cc.Close() }) // runs before the child's cleanup
	ec := &echoClient{cc: cc}

	// The first call dials (and runs ringwire's handshake, then HTTP/2's).
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if _, err := ec.Echo(ctx, []byte("hello")); err != nil {
		tb.Fatalf("gRPC over %s: first call: %v", network, err)
	}
	if network != "unix" {
		want := map[string]transport.Kind{"shm": transport.KindShm, "ringwire-unix": transport.KindUnix}[network]
		if got, _ := kind.Load().(transport.Kind); got != want {
			tb.Fatalf("gRPC over %s: ringwire negotiated %v, want %v", network, got, want)
		}
	}
	return echoTarget([]int{ch.pid()}, ec.Echo)
}
