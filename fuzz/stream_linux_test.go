package fuzz

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	negotiate "github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
)

// The server side of FuzzListenerStream, and of the clients that recorded
// its seeds.
var (
	streamToken = []byte("fuzz-token")
	// The contract the seeds were recorded with (once the hash of the
	// fuzz Mux's method names).
	streamContract, _ = hex.DecodeString("bbba962cd4e3b39ef99a542189f03981abcd7ac04e14194b12d23d0c2d1c99d0")
)

func streamConfig() *transport.Config {
	return &transport.Config{
		Mode:              transport.ModeFramed,
		Compressions:      []negotiate.Compression{negotiate.CompressionLZ4, negotiate.CompressionZstd},
		CompressThreshold: 64,
		Token:             streamToken,
		Contract:          streamContract,
		MaxMessage:        64 << 10,
		HandshakeTimeout:  2 * time.Second,
		Logger:            quiet,
	}
}

// socketPair returns the two ends of a Unix stream socketpair.
func socketPair(tb testing.TB) (*net.UnixConn, *net.UnixConn) {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			tb.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// serveStream runs a handshake server and, once connected, a Peer serving
// fuzzMux on srv until the connection ends. It returns when everything has;
// connected says whether the handshake succeeded.
func serveStream(srv net.Conn) (connected bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := transport.Server(ctx, srv, streamConfig())
	if err != nil {
		return false, err
	}
	p := rpc.NewPeer(c, rpc.Options{Mux: fuzzMux(), Logger: quiet, MaxPendingBytes: 1 << 20})
	<-p.Done()
	p.Close()
	return true, p.Err()
}

// replayStream plays in as the client's stream and returns what the server
// made of it, or fails the test if anything hangs.
func replayStream(t *testing.T, in []byte) (connected bool, err error) {
	cli, srv := socketPair(t)
	defer cli.Close()
	type result struct {
		connected bool
		err       error
	}
	served := make(chan result, 1)
	go func() {
		c, err := serveStream(srv)
		served <- result{c, err}
	}()
	// Read whatever the server says, so it never waits on us.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_, _ = io.Copy(io.Discard, cli)
	}()
	_ = cli.SetWriteDeadline(time.Now().Add(hangBound))
	_, _ = cli.Write(in)
	_ = cli.CloseWrite() // the server reads EOF next
	var r result
	select {
	case r = <-served:
	case <-time.After(hangBound):
		t.Fatalf("the server did not end within %v of the client's last byte", hangBound)
	}
	cli.Close()
	<-drained
	return r.connected, r.err
}

// FuzzListenerStream: the input is everything a client sends.
func FuzzListenerStream(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, err := replayStream(t, in); err != nil && !sentinel(err) {
			t.Fatalf("the server failed without a sentinel error: %v", err)
		}
	})
}

// sentinel reports whether err matches one of the stack's sentinels.
func sentinel(err error) bool {
	for _, s := range []error{transport.ErrPeerGone, transport.ErrCorrupt, transport.ErrTimeout, transport.ErrTooLarge,
		transport.ErrClosed, negotiate.ErrMalformed, negotiate.ErrRefused, negotiate.ErrUnauthorized,
		negotiate.ErrVersion, negotiate.ErrContractMismatch, rpc.ErrGoAway, rpc.ErrStalled} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
