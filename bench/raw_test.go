package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The hand-written baselines: a 4-byte little-endian length prefix and the
// payload, echoed over a Unix socket or TCP loopback with io.ReadFull and one
// writev (net.Buffers) per message. No RPC layer: no call ids, deadlines on
// the wire or multiplexing; each caller has its own connection.
//
//	impl=rawunix|rawtcp/form=into  zero-allocation: both sides reuse their buffers
//	impl=rawunix|rawtcp/form=call  allocation-matched: the server reads each
//	                               request into a new slice and replies with a
//	                               new slice; the client returns a new slice
const (
	rawNetEnv   = "RINGWIRE_BENCH_RAW_NET"
	rawAllocEnv = "RINGWIRE_BENCH_RAW_ALLOC"
	rawReady    = "RAW_LISTENING"
	rawMax      = 2 << 20 // bounds one message
)

func init() {
	roles["raw"] = serveRaw
	for _, network := range []string{"unix", "tcp"} {
		for _, form := range []string{"call", "into"} {
			register(contender{impl: "raw" + network, form: form, start: func(tb testing.TB) *target {
				return startRaw(tb, network, form == "call")
			}})
		}
	}
}

// serveRaw is the baseline's child: it listens, prints its address, and
// echoes on every connection until stdin closes.
func serveRaw() int {
	network, alloc := os.Getenv(rawNetEnv), os.Getenv(rawAllocEnv) == "1"
	addr := "127.0.0.1:0"
	if network == "unix" {
		dir, err := os.MkdirTemp("", "ringwire-raw")
		if err != nil {
			fmt.Fprintln(os.Stderr, "raw:", err)
			return 2
		}
		defer os.RemoveAll(dir)
		addr = filepath.Join(dir, "echo.sock")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "raw:", err)
		return 2
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go rawEcho(c, alloc)
		}
	}()
	fmt.Println(rawReady, l.Addr().String())
	<-untilStdinCloses()
	return 0
}

// rawEcho echoes the messages of one connection.
func rawEcho(c net.Conn, alloc bool) {
	defer c.Close()
	var (
		hdr  [4]byte
		iov  [2][]byte
		bufs net.Buffers
		buf  []byte
	)
	if !alloc {
		buf = make([]byte, rawMax)
	}
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := binary.LittleEndian.Uint32(hdr[:])
		if n > rawMax {
			fmt.Fprintln(os.Stderr, "raw: message of", n, "bytes")
			return
		}
		msg := buf[:min(n, uint32(len(buf)))]
		if alloc {
			msg = make([]byte, n) // the request in a new slice
		}
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		if alloc {
			reply := make([]byte, n) // a reply built in new memory
			copy(reply, msg)
			msg = reply
		}
		iov = [2][]byte{hdr[:], msg}
		bufs = iov[:]
		if _, err := bufs.WriteTo(c); err != nil {
			return
		}
	}
}

// startRaw starts a baseline child and returns its target: every caller
// dials its own connection.
func startRaw(tb testing.TB, network string, alloc bool) *target {
	tb.Helper()
	a := "0"
	if alloc {
		a = "1"
	}
	ch := startChild(tb, "raw", []string{rawNetEnv + "=" + network, rawAllocEnv + "=" + a})
	addr := ch.await(tb, rawReady)
	return &target{pids: []int{ch.pid()}, newCaller: func(req []byte) func(context.Context) error {
		c, err := net.DialTimeout(network, addr, startTimeout)
		if err != nil {
			tb.Fatalf("dialing the %s baseline: %v", network, err)
		}
		tb.Cleanup(func() { c.Close() })
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		r := &rawConn{c: c, out: make([]byte, len(req))}
		return func(ctx context.Context) error {
			out, err := r.echo(ctx, req, alloc)
			if err != nil {
				return err
			}
			return checkEcho(req, out)
		}
	}}
}

// rawConn is one caller's connection to a baseline child.
type rawConn struct {
	c        net.Conn
	hdr      [4]byte
	iov      [2][]byte   // the header and the payload, for one writev
	bufs     net.Buffers // a view of iov that WriteTo consumes (no allocation per call)
	out      []byte      // the reused reply buffer (zero-allocation form)
	deadline time.Time   // the deadline set on c
}

// echo sends req and reads the reply: into r.out, or into a new slice when
// alloc.
func (r *rawConn) echo(ctx context.Context, req []byte, alloc bool) ([]byte, error) {
	if d, _ := ctx.Deadline(); !d.Equal(r.deadline) { // every read and write is bounded
		if err := r.c.SetDeadline(d); err != nil {
			return nil, err
		}
		r.deadline = d
	}
	binary.LittleEndian.PutUint32(r.hdr[:], uint32(len(req)))
	r.iov = [2][]byte{r.hdr[:], req}
	r.bufs = r.iov[:]
	if _, err := r.bufs.WriteTo(r.c); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(r.c, r.hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.LittleEndian.Uint32(r.hdr[:]))
	if n > rawMax {
		return nil, fmt.Errorf("reply of %d bytes", n)
	}
	out := r.out
	if alloc || n > len(out) {
		out = make([]byte, n)
	}
	_, err := io.ReadFull(r.c, out[:n])
	return out[:n], err
}
