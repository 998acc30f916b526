package fuzz

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	negotiate "github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
)

// recorder is a client connection that keeps a copy of what it sends.
type recorder struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.out.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.out.Bytes())
}

// recordStream runs a real client session against serveStream and returns
// what the client sent: the handshake, then calls of every kind.
func recordStream(tb testing.TB, comp negotiate.Compression) []byte {
	tb.Helper()
	cli, srv := socketPair(tb)
	served := make(chan error, 1)
	go func() {
		_, err := serveStream(srv)
		served <- err
	}()
	rec := &recorder{Conn: cli}
	cfg := streamConfig()
	cfg.Compressions = []negotiate.Compression{comp}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := transport.Client(ctx, rec, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if got := c.Info().Compression; got != comp.String() {
		tb.Fatalf("compression %q, want %v", got, comp)
	}
	p := rpc.NewPeer(c, rpc.Options{Logger: quiet})
	big := []byte(strings.Repeat("ringwire fuzz seed ", 200))
	for _, call := range []struct {
		method string
		req    []byte
	}{{"echo", []byte("hi")}, {"echo", big}, {"echo0", big[:100]}, {"len", big[:50]}, {"fail", nil}, {"wait", nil}, {"nope", nil}} {
		if _, err := p.Call(ctx, call.method, call.req); err != nil && call.method != "fail" && call.method != "nope" {
			tb.Fatalf("%s: %v", call.method, err)
		}
	}
	h, err := p.New(ctx, "obj", nil)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := h.Call(ctx, "echo", big[:300]); err != nil {
		tb.Fatal(err)
	}
	if err := h.Destroy(ctx); err != nil {
		tb.Fatal(err)
	}
	p.Close()
	if err := <-served; err != nil && !sentinel(err) {
		tb.Fatalf("server: %v", err)
	}
	return rec.bytes()
}

// seedFile is a corpus entry in the format of go test's testdata/fuzz.
func seedFile(b []byte) []byte { return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b) }

// TestSeeds checks that every cross-layer target has its committed seed
// corpus, and rewrites the corpora from real clients with
// RINGWIRE_WRITE_SEEDS=1.
func TestSeeds(t *testing.T) {
	seeds := map[string]map[string][]byte{}
	if os.Getenv("RINGWIRE_WRITE_SEEDS") != "" {
		zstd := recordStream(t, negotiate.CompressionZstd)
		lz4 := recordStream(t, negotiate.CompressionLZ4)
		seeds["FuzzListenerStream"] = map[string][]byte{
			"session-zstd": zstd,
			"session-lz4":  lz4,
			"hello-only":   zstd[:helloLen(t, zstd)],
		}
		seeds["FuzzPeerOverRing"] = ringSeeds(t)
		for target, files := range seeds {
			dir := filepath.Join("testdata", "fuzz", target)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, b := range files {
				if err := os.WriteFile(filepath.Join(dir, name), seedFile(b), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, target := range []string{"FuzzListenerStream", "FuzzPeerOverRing"} {
		ents, err := os.ReadDir(filepath.Join("testdata", "fuzz", target))
		if err != nil || len(ents) < 2 {
			t.Errorf("%s: no seed corpus (%v); RINGWIRE_WRITE_SEEDS=1 go test -run TestSeeds ./fuzz writes it", target, err)
		}
	}
	// The recorded sessions get through the handshake to the handlers.
	for _, name := range []string{"session-zstd", "session-lz4"} {
		in := readSeed(t, "FuzzListenerStream", name)
		before := echoes.Load()
		connected, err := replayStream(t, in)
		// At least one: the stream ends right after the last call, and
		// calls still queued when the server reads its end are dropped.
		if !connected || echoes.Load()-before < 1 {
			t.Errorf("FuzzListenerStream/%s: connected %v, %d echoes served (%v)", name, connected, echoes.Load()-before, err)
		}
	}
	before := echoes.Load()
	playRing(t, readSeed(t, "FuzzPeerOverRing", "session"))
	if echoes.Load()-before < 1 {
		t.Errorf("FuzzPeerOverRing/session served no echo")
	}
}

// helloLen is the length of the first handshake message in a stream: the
// 8-byte prefix (magic, length) and its payload.
func helloLen(tb testing.TB, b []byte) int {
	tb.Helper()
	if len(b) < 8 || string(b[:4]) != "RWH1" {
		tb.Fatalf("the stream does not start with a handshake prefix: %q", b[:min(len(b), 8)])
	}
	return 8 + int(binary.LittleEndian.Uint32(b[4:8]))
}

// readSeed reads a committed corpus entry back into its bytes.
func readSeed(t *testing.T, target, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", target, name))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(b), "\n", 3)
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "[]byte(") {
		t.Fatalf("%s/%s: not a corpus entry", target, name)
	}
	q := strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")")
	s, err := strconv.Unquote(q)
	if err != nil {
		t.Fatalf("%s/%s: %v", target, name, err)
	}
	return []byte(s)
}
