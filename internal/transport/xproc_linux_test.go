package transport

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	negotiate "github.com/ringwire/ringwire/internal/handshake"
)

// combo is one cell of the transport matrix.
type combo struct {
	kind Kind
	comp negotiate.Compression
}

func (c combo) String() string { return fmt.Sprintf("%s/%s", c.kind, c.comp) }

func matrix() []combo {
	m := []combo{{KindShm, negotiate.CompressionNone}}
	for _, k := range []Kind{KindUnix, KindTCP} {
		for _, z := range []negotiate.Compression{negotiate.CompressionNone, negotiate.CompressionLZ4, negotiate.CompressionZstd} {
			m = append(m, combo{k, z})
		}
	}
	return m
}

var addrSeq atomic.Int64

// unixAddr returns a fresh abstract Unix socket address: no file to clean up
// and no directory permissions in the way.
func unixAddr() string {
	return fmt.Sprintf("@ringwire-test-%d-%d", os.Getpid(), addrSeq.Add(1))
}

// listenCombo starts a listener for c and returns it with the spec a child
// needs to dial it the same way.
func listenCombo(t testing.TB, c combo, cfg *Config) (*Listener, childSpec) {
	t.Helper()
	if cfg == nil {
		cfg = &Config{}
	}
	cfg.Name = "parent"
	spec := childSpec{Role: "echo"}
	if c.comp == negotiate.CompressionNone {
		cfg.Compressions = []negotiate.Compression{}
		spec.Comp = "-"
	} else {
		cfg.Compressions = []negotiate.Compression{c.comp}
		spec.Comp = c.comp.String()
	}
	network, addr := "unix", unixAddr()
	switch c.kind {
	case KindShm:
		cfg.Mode, spec.Mode = ModeShm, "shm"
	case KindUnix:
		cfg.Mode, spec.Mode = ModeFramed, "framed"
	case KindTCP:
		network, addr = "tcp", "127.0.0.1:0"
		sc, err := ca(t).ServerConfig("parent", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLS = sc
		if spec.TLS, err = ca(t).ClientBundle("child", "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	l, err := Listen(network, addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	spec.Network, spec.Addr = network, l.Addr().String()
	return l, spec
}

// accept waits at most d for one connection.
func accept(t testing.TB, l *Listener, d time.Duration) Conn {
	t.Helper()
	type res struct {
		c   Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c
	case <-time.After(d):
		l.Close()
		t.Fatalf("no connection within %v", d)
	}
	return nil
}

// jsonish is compressible text in the shape of a JSON API payload.
var jsonish = []byte(`{"id":12345,"name":"ringwire","tags":["shm","ring","futex"],"ok":true,"score":0.875},`)

// payload fills buf with message i's deterministic content and returns it.
// Sizes: mostly small, some medium, a few up to 256 KiB; one in three is
// random bytes, the rest compressible.
func payload(buf []byte, i int) []byte {
	r := rand.New(rand.NewPCG(0x5eed, uint64(i)))
	var n int
	switch p := r.IntN(100); {
	case p < 70:
		n = r.IntN(257)
	case p < 97:
		n = 256 + r.IntN(8<<10)
	default:
		n = 8<<10 + r.IntN(248<<10)
	}
	b := buf[:n]
	if i%3 == 0 {
		for j := 0; j < n; j += 8 {
			v := r.Uint64()
			for k := 0; k < 8 && j+k < n; k++ {
				b[j+k] = byte(v >> (8 * k))
			}
		}
		return b
	}
	for j := 0; j < n; j += len(jsonish) {
		copy(b[j:], jsonish)
	}
	if n >= 8 {
		copy(b, fmt.Sprintf("%08x", i))
	}
	return b
}

// exchange sends n messages through an echoing peer and checks every echo
// byte for byte, the sender and the receiver running concurrently.
func exchange(t *testing.T, c Conn, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	_ = c.SetReadDeadline(deadline)
	_ = c.SetWriteDeadline(deadline)
	sendErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 256<<10)
		for i := range n {
			if err := c.Send(uint16(i%0xFF00), payload(buf, i)); err != nil {
				sendErr <- fmt.Errorf("send %d: %w", i, err)
				return
			}
		}
		sendErr <- nil
	}()
	want := make([]byte, 256<<10)
	for i := range n {
		m, err := c.Recv()
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		w := payload(want, i)
		if m.Type != uint16(i%0xFF00) || !bytes.Equal(m.Data, w) {
			t.Fatalf("message %d: type %d, %d bytes; want type %d, %d bytes (content equal: %v)",
				i, m.Type, len(m.Data), i%0xFF00, len(w), bytes.Equal(m.Data, w))
		}
		c.Release()
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
}

// exchangeLarge echoes 64 MiB messages, one compressible and one random.
func exchangeLarge(t *testing.T, c Conn, count int) {
	t.Helper()
	const size = 64 << 20
	big := make([]byte, size)
	for j := 0; j < size; j += len(jsonish) {
		copy(big[j:], jsonish)
	}
	rnd := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for j := 0; j < size; j += 8 {
		binary.LittleEndian.PutUint64(rnd[j:], r.Uint64())
	}
	msgs := [][]byte{big, rnd}[:count]
	deadline := time.Now().Add(2 * time.Minute)
	_ = c.SetReadDeadline(deadline)
	_ = c.SetWriteDeadline(deadline)
	for i, msg := range msgs {
		errc := make(chan error, 1)
		go func() { errc <- c.Send(7, msg) }()
		m, err := c.Recv()
		if err != nil {
			t.Fatalf("large %d: recv: %v", i, err)
		}
		if m.Type != 7 || !bytes.Equal(m.Data, msg) {
			t.Fatalf("large %d: echo differs (type %d, %d bytes)", i, m.Type, len(m.Data))
		}
		c.Release()
		if err := <-errc; err != nil {
			t.Fatalf("large %d: send: %v", i, err)
		}
	}
}

// TestXprocMatrix runs every transport × compression between this process
// and a child that echoes: 100,000 messages of random sizes both ways, then
// 64 MiB messages.
func TestXprocMatrix(t *testing.T) {
	n, large := 100_000, 2
	if raceEnabled || testing.Short() {
		n, large = 10_000, 1
	}
	for _, c := range matrix() {
		t.Run(c.String(), func(t *testing.T) {
			l, spec := listenCombo(t, c, nil)
			p := startChild(t, spec)
			conn := accept(t, l, 10*time.Second)
			in := conn.Info()
			if in.Kind != c.kind || in.Compression != c.comp.String() || in.TLS != (c.kind == KindTCP) {
				t.Fatalf("negotiated %+v, want kind %s compression %s", in, c.kind, c.comp)
			}
			if in.Peer.Name != "child" || in.Peer.Version != "1.0" {
				t.Fatalf("peer %+v, want child 1.0", in.Peer)
			}
			start := time.Now()
			exchange(t, conn, n)
			mid := time.Now()
			exchangeLarge(t, conn, large)
			t.Logf("%d messages in %v, %d large in %v; %+v", n, mid.Sub(start).Round(time.Millisecond), large, time.Since(mid).Round(time.Millisecond), conn.Stats())
			st := conn.Stats()
			if st.MessagesSent < uint64(n) || st.MessagesRecv < uint64(n) {
				t.Fatalf("stats %+v after %d messages", st, n)
			}
			if c.comp != negotiate.CompressionNone && st.WireBytesSent >= st.BytesSent {
				t.Fatalf("compression %s sent %d wire bytes for %d payload bytes", c.comp, st.WireBytesSent, st.BytesSent)
			}
			conn.Close()
			if err := p.wait(10 * time.Second); err != nil {
				t.Fatalf("child: %v", err)
			}
		})
	}
}

// dialReport starts a "report" child for spec and returns its verdict line.
func dialReport(t *testing.T, spec childSpec) string {
	t.Helper()
	spec.Role = "report"
	p := startChild(t, spec)
	line := p.line(15 * time.Second)
	return strings.TrimSpace(line)
}
