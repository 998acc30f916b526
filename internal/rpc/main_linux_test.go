package rpc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/transport"
)

// socketPair returns the two ends of a connected Unix stream socket pair.
func socketPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatalf("FileConn: %v", err)
		}
		conns[i] = c.(*net.UnixConn)
	}
	return conns[0], conns[1]
}

// connPair negotiates a transport.Conn pair in this process (shared memory
// on Linux when mode allows it, framed otherwise).
func connPair(t testing.TB, mode transport.Mode) (client, server transport.Conn) {
	t.Helper()
	a, b := socketPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type res struct {
		c   transport.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := transport.Server(ctx, b, &transport.Config{Name: "server", Mode: mode, RingSize: 1 << 20, Logger: quiet})
		ch <- res{c, err}
	}()
	c, err := transport.Client(ctx, a, &transport.Config{Name: "client", Mode: mode, Logger: quiet})
	r := <-ch
	if err != nil || r.err != nil {
		t.Fatalf("handshake: client %v, server %v", err, r.err)
	}
	return c, r.c
}

// peerPair returns connected Peers: host calls, plugin serves mux (and the
// host serves hostMux, for callbacks).
func peerPair(t testing.TB, mode transport.Mode, hostMux, pluginMux *Mux) (host, plugin *Peer) {
	t.Helper()
	c, s := connPair(t, mode)
	host = NewPeer(c, Options{Mux: hostMux, Logger: quiet})
	plugin = NewPeer(s, Options{Mux: pluginMux, Logger: quiet})
	t.Cleanup(func() {
		host.Close()
		plugin.Close()
	})
	return host, plugin
}

// quiet discards the logs of tests that provoke errors on purpose.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func errorsIs(err, target error) bool { return errors.Is(err, target) }
