package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"golang.org/x/sys/unix"
)

// framedTestDeadline bounds every blocking call in these tests.
const framedTestDeadline = 2 * time.Minute

var framedComps = []framedCompression{framedCompNone, framedCompLZ4, framedCompZstd}

// framedRaceEnabled reports whether the test binary was built with -race,
// so load tests can scale down.
func framedRaceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// framedSocketpair returns the two ends of a Unix stream socketpair as
// *net.UnixConn.
func framedSocketpair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.CloseOnExec(fds[0]) // SOCK_CLOEXEC is Linux-only
	unix.CloseOnExec(fds[1])
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	t.Cleanup(func() { conns[0].Close(); conns[1].Close() })
	return conns[0], conns[1]
}

// framedTCPPair returns both ends of a TCP loopback connection.
func framedTCPPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		a.Close()
		t.Fatal(r.err)
	}
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a, r.c
}

// framedNetPair returns a raw connection pair of the named kind.
func framedNetPair(t testing.TB, kind string) (net.Conn, net.Conn) {
	switch kind {
	case "unix":
		return framedSocketpair(t)
	case "tcp":
		return framedTCPPair(t)
	case "pipe":
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return a, b
	}
	t.Fatalf("unknown net %q", kind)
	return nil, nil
}

// framedPair returns two framed conns over a raw pair of the named kind.
func framedPair(t testing.TB, kind string, o framedOptions) (*framedConn, *framedConn) {
	a, b := framedNetPair(t, kind)
	fa, fb := newFramed(a, o), newFramed(b, o)
	t.Cleanup(func() { fa.Close(); fb.Close() })
	return fa, fb
}

var (
	framedRandPool = framedRandom(2<<20, 1)
	framedJSONPool = framedJSON(2<<20, 1)
)

// framedRandom returns n incompressible bytes.
func framedRandom(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 42))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// framedJSON returns n bytes of JSON-like records, compressible as real
// API traffic is.
func framedJSON(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	words := []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"}
	var b bytes.Buffer
	b.WriteByte('[')
	for i := 0; b.Len() < n; i++ {
		id := r.IntN(1_000_000)
		fmt.Fprintf(&b, `{"id":%d,"name":"user-%d","email":"user%d@example.com","active":%t,"score":%d.%02d,"tags":["%s","%s"],"created":"2024-%02d-%02dT%02d:%02d:00Z"},`,
			id, id, id, r.IntN(2) == 0, r.IntN(1000), r.IntN(100), words[r.IntN(len(words))], words[r.IntN(len(words))],
			1+r.IntN(12), 1+r.IntN(28), r.IntN(24), r.IntN(60))
	}
	return b.Bytes()[:n]
}

// framedTestMsg fills buf with message seq of the integrity stream and
// returns its type and bytes: a size from a skewed distribution (mostly
// small, some up to 64 KiB, a few up to 1 MiB), random or JSON-like content,
// and seq in the first 8 bytes, so the receiver can rebuild it exactly.
func framedTestMsg(seq int, buf []byte) (uint16, []byte) {
	r := rand.New(rand.NewPCG(uint64(seq), 99))
	var size int
	switch p := r.IntN(1000); {
	case p < 600:
		size = r.IntN(513)
	case p < 900:
		size = 512 + r.IntN(8<<10)
	case p < 999:
		size = 8<<10 + r.IntN(56<<10+1)
	default:
		size = 64<<10 + r.IntN(960<<10)
	}
	pool := framedRandPool
	if seq%2 == 0 {
		pool = framedJSONPool
	}
	off := r.IntN(len(pool) - size + 1)
	b := append(buf[:0], pool[off:off+size]...)
	if size >= 8 {
		binary.LittleEndian.PutUint64(b, uint64(seq))
	}
	return uint16(seq * 31), b
}

// framedSendStream sends messages 0..n-1 of the integrity stream, some as
// batches.
func framedSendStream(c *framedConn, n int) error {
	var buf []byte
	batch := make([]Message, 0, 4)
	bufs := make([][]byte, 4)
	for seq := 0; seq < n; {
		if seq%7 == 3 && seq+4 <= n {
			batch = batch[:0]
			for k := range 4 {
				typ, data := framedTestMsg(seq+k, bufs[k])
				bufs[k] = data
				batch = append(batch, Message{Type: typ, Data: data})
			}
			if err := c.SendBatch(batch); err != nil {
				return fmt.Errorf("batch at %d: %w", seq, err)
			}
			seq += 4
			continue
		}
		typ, data := framedTestMsg(seq, buf)
		buf = data
		if err := c.Send(typ, data); err != nil {
			return fmt.Errorf("send %d: %w", seq, err)
		}
		seq++
	}
	return nil
}

// framedRecvStream receives and checks messages 0..n-1 byte for byte.
func framedRecvStream(c *framedConn, n int) error {
	var want []byte
	for seq := 0; seq < n; seq++ {
		m, err := c.Recv()
		if err != nil {
			return fmt.Errorf("recv %d: %w", seq, err)
		}
		typ, data := framedTestMsg(seq, want)
		want = data
		if m.Type != typ || !bytes.Equal(m.Data, data) {
			return fmt.Errorf("message %d: got type %d, %d bytes; want type %d, %d bytes", seq, m.Type, len(m.Data), typ, len(data))
		}
	}
	c.Release()
	return nil
}

func TestFramedIntegrity(t *testing.T) {
	counts := map[string]int{"unix": 100_000, "tcp": 20_000, "pipe": 10_000}
	for _, kind := range []string{"unix", "tcp", "pipe"} {
		for _, comp := range framedComps {
			n := counts[kind]
			if framedRaceEnabled() || testing.Short() {
				n /= 20
			}
			t.Run(fmt.Sprintf("net=%s/comp=%s", kind, comp), func(t *testing.T) {
				a, b := framedPair(t, kind, framedOptions{Kind: KindUnix, Compression: comp})
				deadline := time.Now().Add(framedTestDeadline)
				for _, c := range []*framedConn{a, b} {
					c.SetReadDeadline(deadline)
					c.SetWriteDeadline(deadline)
				}
				errs := make(chan error, 4)
				go func() { errs <- framedSendStream(a, n) }()
				go func() { errs <- framedSendStream(b, n) }()
				go func() { errs <- framedRecvStream(a, n) }()
				go func() { errs <- framedRecvStream(b, n) }()
				for range 4 {
					if err := <-errs; err != nil {
						a.Close()
						b.Close()
						t.Fatal(err)
					}
				}
				framedIdle(t, a)
				framedIdle(t, b)
				sa, sb := a.Stats(), b.Stats()
				for _, s := range []Stats{sa, sb} {
					if s.MessagesSent != uint64(n) || s.MessagesRecv != uint64(n) {
						t.Fatalf("stats %+v, want %d messages each way", s, n)
					}
				}
				if sa.BytesSent != sb.BytesRecv || sa.WireBytesSent != sb.WireBytesRecv ||
					sb.BytesSent != sa.BytesRecv || sb.WireBytesSent != sa.WireBytesRecv {
					t.Fatalf("byte counters disagree: a %+v, b %+v", sa, sb)
				}
				if comp != framedCompNone && sa.WireBytesSent >= sa.BytesSent {
					t.Fatalf("%s sent %d wire bytes for %d payload bytes, half of them JSON", comp, sa.WireBytesSent, sa.BytesSent)
				}
				t.Logf("%d messages each way; a: %d payload bytes, %d on the wire, %d writes", n, sa.BytesSent, sa.WireBytesSent, sa.Writes)
			})
		}
	}
}

func TestFramedLarge(t *testing.T) {
	size := 64 << 20
	if framedRaceEnabled() {
		size = 16 << 20
	}
	random := framedRandom(size, 5)
	js := make([]byte, size)
	for i := 0; i < size; i += copy(js[i:], framedJSONPool) {
	}
	for _, comp := range framedComps {
		for _, data := range []struct {
			name string
			b    []byte
		}{{"random", random}, {"json", js}} {
			t.Run(fmt.Sprintf("comp=%s/data=%s", comp, data.name), func(t *testing.T) {
				a, b := framedPair(t, "unix", framedOptions{Compression: comp})
				for _, c := range []*framedConn{a, b} {
					c.SetReadDeadline(time.Now().Add(framedTestDeadline))
				}
				errc := make(chan error, 1)
				go func() { errc <- a.Send(7, data.b) }()
				m, err := b.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
				if m.Type != 7 || !bytes.Equal(m.Data, data.b) {
					t.Fatalf("got %d bytes of type %d, not the %d sent", len(m.Data), m.Type, len(data.b))
				}
				// And back, from the received view.
				go func() { errc <- b.Send(8, m.Data) }()
				m2, err := a.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
				if m2.Type != 8 || !bytes.Equal(m2.Data, data.b) {
					t.Fatal("round trip changed the message")
				}
				b.Release()
				a.Release()
				framedIdle(t, a)
				s := a.Stats()
				compressed := s.WireBytesSent < uint64(size)
				if want := comp != framedCompNone && data.name == "json"; compressed != want {
					t.Fatalf("%s on %s: %d wire bytes for %d", comp, data.name, s.WireBytesSent, size)
				}
				t.Logf("wire %d bytes for %d", s.WireBytesSent, size)
			})
		}
	}
}

func TestFramedCompressionChoice(t *testing.T) {
	js := framedJSONPool[:64<<10]
	random := framedRandPool[:64<<10]
	small := framedJSONPool[:512]
	for _, comp := range []framedCompression{framedCompLZ4, framedCompZstd} {
		t.Run("comp="+comp.String(), func(t *testing.T) {
			for _, tc := range []struct {
				name       string
				threshold  int
				data       []byte
				compressed bool
			}{
				{"random", 0, random, false},
				{"json", 0, js, true},
				{"json-below-threshold", 0, small, false},
				{"json-low-threshold", 100, small, true},
				{"json-above-high-threshold", 128 << 10, js, false},
				{"tiny", 1, []byte("abc"), false},
				{"empty", 1, nil, false},
			} {
				a, b := framedPair(t, "unix", framedOptions{Compression: comp, Threshold: tc.threshold})
				if got := a.Info().Compression; got != comp.String() {
					t.Fatalf("Info().Compression = %q", got)
				}
				errc := make(chan error, 1)
				go func() { errc <- a.Send(1, tc.data) }()
				b.SetReadDeadline(time.Now().Add(framedTestDeadline))
				m, err := b.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(m.Data, tc.data) {
					t.Fatalf("%s: data changed", tc.name)
				}
				framedIdle(t, a)
				wire := a.Stats().WireBytesSent
				raw := uint64(frameHeaderLen + len(tc.data))
				if tc.compressed && wire >= raw || !tc.compressed && wire != raw {
					t.Fatalf("%s: %d wire bytes for %d raw; want compressed=%v", tc.name, wire, raw, tc.compressed)
				}
				if tc.name == "json" {
					t.Logf("64 KiB JSON: %d wire bytes, ratio %.1f", wire, float64(len(js))/float64(wire))
				}
			}
		})
	}
}

func TestFramedInfoAndLimits(t *testing.T) {
	a, b := framedPair(t, "unix", framedOptions{
		Kind: KindUnix, Compression: framedCompLZ4, MaxMessage: 1000,
		Info: Info{TLS: true, Version: 3, Peer: Peer{Name: "p", UID: -1}},
	})
	info := a.Info()
	if info.Kind != KindUnix || info.Compression != "lz4" || info.MaxMessage != 1000 || !info.TLS || info.Version != 3 || info.Peer.Name != "p" {
		t.Fatalf("Info() = %+v", info)
	}
	if err := a.Send(1, make([]byte, 1001)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Send over the limit: %v", err)
	}
	if err := a.SendBatch([]Message{{Data: []byte("ok")}, {Data: make([]byte, 1001)}}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("SendBatch over the limit: %v", err)
	}
	// Nothing of the refused calls was sent, and the conn still works.
	if err := a.Send(2, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(framedTestDeadline))
	m, err := b.Recv()
	if err != nil || m.Type != 2 || len(m.Data) != 1000 {
		t.Fatalf("Recv = %v, %d bytes, %v", m.Type, len(m.Data), err)
	}
	if d := newFramed(framedNetPairFirst(t), framedOptions{}).Info(); d.MaxMessage != framedDefaultMax || d.Compression != "none" {
		t.Fatalf("defaults: %+v", d)
	}
	if err := a.SendBatch(nil); err != nil {
		t.Fatal(err)
	}
}

// framedIdle waits until c has written everything it accepted (or can
// write nothing more) and its writer goroutine is gone, so its counters are
// final.
func framedIdle(t testing.TB, c *framedConn) {
	t.Helper()
	for i, start := 0, time.Now(); ; i++ {
		c.wmu.Lock()
		idle, held := !c.writing, c.wheld
		c.wmu.Unlock()
		if idle && (held == 0 || c.writeStopped()) {
			return
		}
		if time.Since(start) > framedTestDeadline {
			t.Fatalf("still writing after %v: %d bytes held", framedTestDeadline, held)
		}
		if i < 1000 {
			runtime.Gosched() // a writer on a memory conn is done at once
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}

func framedNetPairFirst(t *testing.T) net.Conn {
	a, _ := framedSocketpair(t)
	return a
}

// framedRawFrame builds one frame by hand.
func framedRawFrame(typ, flags uint16, payload []byte) []byte {
	b := make([]byte, frameHeaderLen, frameHeaderLen+len(payload))
	binary.LittleEndian.PutUint32(b, uint32(len(payload)))
	binary.LittleEndian.PutUint16(b[4:], typ)
	binary.LittleEndian.PutUint16(b[6:], flags)
	return append(b, payload...)
}

// framedCompressed is a compressed payload: declared raw length, then body.
func framedCompressed(raw int, body []byte) []byte {
	return append(binary.LittleEndian.AppendUint32(nil, uint32(raw)), body...)
}

func framedLZ4Block(t testing.TB, data []byte) []byte {
	dst := make([]byte, lz4.CompressBlockBound(len(data)))
	n, err := lz4.CompressBlock(data, dst, nil)
	if err != nil || n == 0 {
		t.Fatalf("lz4: %d, %v", n, err)
	}
	return dst[:n]
}

func framedZstdFrame(t testing.TB, data []byte) []byte {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

// framedZstdRLE hand-builds a ZSTD frame without content size: blocks RLE
// blocks of size bytes each.
func framedZstdRLE(blocks, size int) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0xFD2FB528)
	b = append(b, 0x00, 10<<3) // no FCS, not single segment; window 1 MiB
	for i := range blocks {
		last := 0
		if i == blocks-1 {
			last = 1
		}
		bh := size<<3 | 1<<1 | last
		b = append(b, byte(bh), byte(bh>>8), byte(bh>>16), 'x')
	}
	return b
}

func TestFramedZstdWithoutContentSize(t *testing.T) {
	a, b := framedSocketpair(t)
	fb := newFramed(b, framedOptions{Compression: framedCompZstd})
	defer fb.Close()
	fb.SetReadDeadline(time.Now().Add(framedTestDeadline))
	if _, err := a.Write(framedRawFrame(4, frameFlagZstd, framedCompressed(300, framedZstdRLE(3, 100)))); err != nil {
		t.Fatal(err)
	}
	m, err := fb.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != 4 || !bytes.Equal(m.Data, bytes.Repeat([]byte("x"), 300)) {
		t.Fatalf("got type %d, %q", m.Type, m.Data)
	}
}

func TestFramedBadInput(t *testing.T) {
	const maxMsg = 8 << 20
	lz4Bomb := framedLZ4Block(t, make([]byte, 4<<20))
	zstdBomb := framedZstdFrame(t, make([]byte, 4<<20))
	valid := framedZstdFrame(t, framedJSONPool[:4096])
	lz4Valid := framedLZ4Block(t, framedJSONPool[:4096])
	header := func(length uint32, flags uint16) []byte {
		b := binary.LittleEndian.AppendUint32(nil, length)
		b = binary.LittleEndian.AppendUint16(b, 1)
		return binary.LittleEndian.AppendUint16(b, flags)
	}
	cases := []struct {
		name  string
		comp  framedCompression
		input []byte
		want  error
		also  error // a second error the result must match, if any
		alloc int   // most bytes Recv may allocate
	}{
		{"unknown-flag", framedCompNone, framedRawFrame(1, 4, []byte("x")), ErrCorrupt, nil, 1 << 20},
		{"both-codecs", framedCompLZ4, framedRawFrame(1, 3, []byte("xxxxxx")), ErrCorrupt, nil, 1 << 20},
		{"lz4-on-none", framedCompNone, framedRawFrame(1, frameFlagLZ4, framedCompressed(4096, lz4Valid)), ErrCorrupt, nil, 1 << 20},
		{"zstd-on-lz4", framedCompLZ4, framedRawFrame(1, frameFlagZstd, framedCompressed(4096, valid)), ErrCorrupt, nil, 1 << 20},
		{"length-over-max", framedCompNone, header(0xFFFFFFFF, 0), ErrTooLarge, nil, 1 << 20},
		{"length-just-over-max", framedCompZstd, header(maxMsg+1, frameFlagZstd), ErrTooLarge, nil, 1 << 20},
		{"lying-length-then-eof", framedCompNone, append(header(maxMsg, 0), "only this"...), ErrPeerGone, io.ErrUnexpectedEOF, 3 << 20},
		{"truncated-small-frame", framedCompNone, framedRawFrame(1, 0, []byte("abcdef"))[:10], ErrPeerGone, io.ErrUnexpectedEOF, 1 << 20},
		{"truncated-header", framedCompNone, []byte{1, 0, 0}, ErrPeerGone, io.ErrUnexpectedEOF, 1 << 20},
		{"compressed-too-short", framedCompLZ4, framedRawFrame(1, frameFlagLZ4, []byte{1, 0, 0, 0}), ErrCorrupt, nil, 1 << 20},
		{"raw-length-zero", framedCompLZ4, framedRawFrame(1, frameFlagLZ4, framedCompressed(0, lz4Valid)), ErrCorrupt, nil, 1 << 20},
		{"raw-length-over-max", framedCompLZ4, framedRawFrame(1, frameFlagLZ4, framedCompressed(maxMsg+1, lz4Valid)), ErrTooLarge, nil, 1 << 20},
		{"raw-length-over-max-zstd", framedCompZstd, framedRawFrame(1, frameFlagZstd, framedCompressed(1<<31, valid)), ErrTooLarge, nil, 1 << 20},
		{"lz4-bomb", framedCompLZ4, framedRawFrame(1, frameFlagLZ4, framedCompressed(1<<20, lz4Bomb)), ErrCorrupt, nil, 1<<20 + 1<<19},
		{"lz4-short", framedCompLZ4, framedRawFrame(1, frameFlagLZ4, framedCompressed(8192, lz4Valid)), ErrCorrupt, nil, 1 << 20},
		{"zstd-bomb", framedCompZstd, framedRawFrame(1, frameFlagZstd, framedCompressed(1<<20, zstdBomb)), ErrCorrupt, nil, 1<<20 + 1<<19},
		{"zstd-bomb-no-size", framedCompZstd, framedRawFrame(1, frameFlagZstd, framedCompressed(1<<20, framedZstdRLE(32, 128<<10))), ErrCorrupt, nil, 1<<20 + 1<<19},
		// A few bytes that declare the maximum must not cost the maximum.
		{"lz4-tiny-declares-max", framedCompLZ4, framedRawFrame(1, frameFlagLZ4, framedCompressed(maxMsg, lz4Valid[:16])), ErrCorrupt, nil, 1 << 20},
		{"zstd-tiny-declares-max", framedCompZstd, framedRawFrame(1, frameFlagZstd, framedCompressed(maxMsg, framedZstdRLE(1, 1000))), ErrCorrupt, nil, 1 << 20},
		{"zstd-short", framedCompZstd, framedRawFrame(1, frameFlagZstd, framedCompressed(8192, valid)), ErrCorrupt, nil, 1 << 20},
		{"zstd-trailing", framedCompZstd, framedRawFrame(1, frameFlagZstd, framedCompressed(4096, append(valid[:len(valid):len(valid)], valid...))), ErrCorrupt, nil, 1 << 20},
		{"lz4-garbage", framedCompLZ4, framedRawFrame(1, frameFlagLZ4, framedCompressed(4096, framedRandPool[:3000])), ErrCorrupt, nil, 1 << 20},
		{"zstd-garbage", framedCompZstd, framedRawFrame(1, frameFlagZstd, framedCompressed(4096, framedRandPool[:3000])), ErrCorrupt, nil, 1 << 20},
		{"zstd-garbage-blocks", framedCompZstd, framedRawFrame(1, frameFlagZstd, framedCompressed(4096, append(valid[:6:6], framedRandPool[:3000]...))), ErrCorrupt, nil, 1 << 20},
	}
	// Warm the codec pools so their first use is not counted.
	for _, comp := range framedComps {
		a, b := framedPair(t, "unix", framedOptions{Compression: comp})
		go a.Send(1, framedJSONPool[:8192])
		b.SetReadDeadline(time.Now().Add(framedTestDeadline))
		if _, err := b.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range cases {
		kinds := []string{"unix"}
		if strings.Contains(tc.name, "bomb") || strings.Contains(tc.name, "over-max") {
			kinds = append(kinds, "tcp") // what a remote peer would send
		}
		for _, kind := range kinds {
			name := tc.name
			if kind == "tcp" {
				name += "/tcp"
			}
			t.Run(name, func(t *testing.T) {
				raw, peer := framedSocketpair(t)
				if kind == "tcp" {
					raw, peer = framedTCPPair(t)
				}
				c := newFramed(raw, framedOptions{Compression: tc.comp, MaxMessage: maxMsg})
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(framedTestDeadline))
				// A good frame first: the bad one must not spoil it.
				good := framedRawFrame(9, 0, []byte("good"))
				if _, err := peer.Write(append(good, tc.input...)); err != nil {
					t.Fatal(err)
				}
				if tc.want == ErrPeerGone {
					peer.(interface{ CloseWrite() error }).CloseWrite()
				}
				if m, err := c.Recv(); err != nil || string(m.Data) != "good" {
					t.Fatalf("good frame: %q, %v", m.Data, err)
				}
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				_, err := c.Recv()
				runtime.ReadMemStats(&after)
				if !errors.Is(err, tc.want) || tc.also != nil && !errors.Is(err, tc.also) {
					t.Fatalf("Recv: %v; want %v", err, tc.want)
				}
				if got := after.TotalAlloc - before.TotalAlloc; got > uint64(tc.alloc) {
					t.Fatalf("Recv allocated %d bytes refusing the frame, limit %d", got, tc.alloc)
				}
				t.Logf("%v", err)
				// Sticky, and the socket is closed.
				if _, err2 := c.Recv(); !errors.Is(err2, tc.want) {
					t.Fatalf("second Recv: %v", err2)
				}
				if err2 := c.Send(1, []byte("x")); !errors.Is(err2, tc.want) {
					t.Fatalf("Send after the failure: %v", err2)
				}
				peer.SetReadDeadline(time.Now().Add(framedTestDeadline))
				if n, err := peer.Read(make([]byte, 16)); n != 0 || !errors.Is(err, io.EOF) {
					t.Fatalf("peer read after the failure: %d, %v; want EOF", n, err)
				}
				c.Close()
				if _, err := c.Recv(); !errors.Is(err, ErrClosed) {
					t.Fatalf("Recv after Close: %v", err)
				}
			})
		}
	}
}

func TestFramedPeerGone(t *testing.T) {
	for _, kind := range []string{"unix", "tcp", "pipe"} {
		t.Run("net="+kind, func(t *testing.T) {
			a, b := framedPair(t, kind, framedOptions{})
			b.SetReadDeadline(time.Now().Add(framedTestDeadline))
			go func() {
				a.Send(1, []byte("last words"))
				a.Close()
			}()
			if m, err := b.Recv(); err != nil || string(m.Data) != "last words" {
				t.Fatalf("Recv = %q, %v", m.Data, err)
			}
			if _, err := b.Recv(); !errors.Is(err, ErrPeerGone) {
				t.Fatalf("Recv after the peer closed: %v", err)
			}
			// Writing to a peer that is gone fails too (EPIPE/reset may
			// take a write or two to show on TCP).
			var err error
			for i := 0; i < 1000 && err == nil; i++ {
				if err = b.Send(1, make([]byte, 1024)); err == nil {
					time.Sleep(time.Millisecond)
				}
			}
			if !errors.Is(err, ErrPeerGone) {
				t.Fatalf("Send to a gone peer: %v", err)
			}
		})
	}
}

// TestFramedPeerGoneDrain: a send that finds the peer gone does not lose
// what the peer sent before it left.
func TestFramedPeerGoneDrain(t *testing.T) {
	a, b := framedPair(t, "unix", framedOptions{})
	if err := a.Send(1, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if err := b.Send(2, []byte("too late")); !errors.Is(err, ErrPeerGone) {
		t.Fatalf("Send to a closed peer: %v", err)
	}
	if err := b.Send(2, []byte("still too late")); !errors.Is(err, ErrPeerGone) {
		t.Fatalf("second Send to a closed peer: %v", err)
	}
	b.SetReadDeadline(time.Now().Add(framedTestDeadline))
	if m, err := b.Recv(); err != nil || string(m.Data) != "bye" {
		t.Fatalf("Recv after the failed send: %q, %v", m.Data, err)
	}
	if _, err := b.Recv(); !errors.Is(err, ErrPeerGone) || errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Recv at the end: %v", err)
	}
}

func TestFramedReadDeadline(t *testing.T) {
	for _, kind := range []string{"unix", "tcp", "pipe"} {
		t.Run("net="+kind, func(t *testing.T) {
			a, b := framedPair(t, kind, framedOptions{})
			// In the past: immediate timeout, still usable.
			b.SetReadDeadline(time.Now().Add(-time.Second))
			_, err := b.Recv()
			if !errors.Is(err, ErrTimeout) || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("past deadline: %v", err)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("timeout is not a net.Error timeout: %v", err)
			}
			// In the future: waits about that long.
			start := time.Now()
			b.SetReadDeadline(start.Add(50 * time.Millisecond))
			if _, err := b.Recv(); !errors.Is(err, ErrTimeout) {
				t.Fatalf("future deadline: %v", err)
			} else if d := time.Since(start); d < 40*time.Millisecond {
				t.Fatalf("timed out after %v", d)
			}
			// Extended while Recv waits.
			b.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			go func() {
				time.Sleep(10 * time.Millisecond)
				b.SetReadDeadline(time.Now().Add(framedTestDeadline))
				time.Sleep(300 * time.Millisecond) // past the first deadline
				a.Send(3, []byte("late"))
			}()
			m, err := b.Recv()
			if err != nil || string(m.Data) != "late" {
				t.Fatalf("extended deadline: %q, %v", m.Data, err)
			}
			// Cleared.
			b.SetReadDeadline(time.Time{})
			go a.Send(4, []byte("again"))
			if m, err := b.Recv(); err != nil || string(m.Data) != "again" {
				t.Fatalf("cleared deadline: %q, %v", m.Data, err)
			}
		})
	}
}

// TestFramedReadTimeoutMidFrame cuts frames at every interesting place,
// lets a read deadline pass there, then sends the rest: the next Recv must
// resume and return the frame whole.
func TestFramedReadTimeoutMidFrame(t *testing.T) {
	big := framedJSONPool[:200<<10]
	lz4Frame := framedRawFrame(5, frameFlagLZ4, framedCompressed(len(big), framedLZ4Block(t, big)))
	frames := []struct {
		name string
		comp framedCompression
		b    []byte
		want []byte
	}{
		{"small", framedCompNone, framedRawFrame(5, 0, []byte("hello, world")), []byte("hello, world")},
		{"big", framedCompNone, framedRawFrame(5, 0, big), big},
		{"lz4", framedCompLZ4, lz4Frame, big},
	}
	for _, f := range frames {
		cuts := []int{1, 3, 7, 8, 9, 10, 11, 12, 13, len(f.b) / 2, len(f.b) - 1}
		if f.comp == framedCompNone && len(f.b) > 100<<10 {
			cuts = append(cuts, 40<<10, (1<<20)+5)
		}
		for _, cut := range cuts {
			if cut >= len(f.b) {
				continue
			}
			t.Run(fmt.Sprintf("%s/cut=%d", f.name, cut), func(t *testing.T) {
				raw, peer := framedSocketpair(t)
				c := newFramed(raw, framedOptions{Compression: f.comp})
				defer c.Close()
				errc := make(chan error, 1)
				go func() {
					_, err := peer.Write(f.b[:cut])
					errc <- err
				}()
				// Time out, over and over, until the whole first part was
				// sent, and once more after: the frame is then cut in c.
				for written := false; ; {
					c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
					if _, err := c.Recv(); !errors.Is(err, ErrTimeout) {
						t.Fatalf("Recv of a partial frame: %v", err)
					}
					if written {
						break
					}
					select {
					case err := <-errc:
						if err != nil {
							t.Fatal(err)
						}
						written = true
					default:
					}
				}
				if s := c.Stats(); s.WireBytesRecv != uint64(cut) || s.MessagesRecv != 0 {
					t.Fatalf("after the timeouts: %+v; want all %d bytes read and no message", s, cut)
				}
				go func() {
					_, err := peer.Write(append(f.b[cut:len(f.b):len(f.b)], framedRawFrame(6, 0, []byte("next"))...))
					errc <- err
				}()
				c.SetReadDeadline(time.Now().Add(framedTestDeadline))
				m, err := c.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if m.Type != 5 || !bytes.Equal(m.Data, f.want) {
					t.Fatalf("resumed frame: type %d, %d bytes; want %d bytes", m.Type, len(m.Data), len(f.want))
				}
				if m, err := c.Recv(); err != nil || string(m.Data) != "next" {
					t.Fatalf("frame after: %q, %v", m.Data, err)
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func TestFramedWriteDeadline(t *testing.T) {
	t.Run("before-any-byte", func(t *testing.T) {
		a, b := framedPair(t, "unix", framedOptions{})
		a.SetWriteDeadline(time.Now().Add(-time.Second))
		if err := a.Send(1, []byte("x")); !errors.Is(err, ErrTimeout) {
			t.Fatalf("Send past the deadline: %v", err)
		}
		a.SetWriteDeadline(time.Time{})
		if err := a.Send(2, []byte("y")); err != nil {
			t.Fatalf("Send after a clean timeout: %v", err)
		}
		b.SetReadDeadline(time.Now().Add(framedTestDeadline))
		if m, err := b.Recv(); err != nil || m.Type != 2 || string(m.Data) != "y" {
			t.Fatalf("Recv = %d %q, %v", m.Type, m.Data, err)
		}
	})
	// A batch far larger than the send budget is taken whole by an empty
	// queue, whatever the deadline: once accepted it belongs to the
	// connection. The next send finds no room and times out having sent
	// nothing; the stream stays framed and the batch arrives whole.
	for _, kind := range []string{"unix", "tcp", "pipe"} {
		t.Run("over-budget/net="+kind, func(t *testing.T) {
			a, b := framedPair(t, kind, framedOptions{})
			big := make([]byte, 32<<20) // far more than the socket buffers and the budget
			for i := range big {
				big[i] = byte(i / 7)
			}
			a.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			if err := a.SendBatch([]Message{{Type: 1, Data: big}, {Type: 3, Data: []byte("queued too")}}); err != nil {
				t.Fatalf("SendBatch into an empty queue: %v", err)
			}
			start := time.Now()
			if err := a.Send(4, []byte("no room")); !errors.Is(err, ErrTimeout) {
				t.Fatalf("Send into a full queue: %v", err)
			} else if d := time.Since(start); d > time.Second {
				t.Fatalf("Send timed out after %v, deadline was 50ms", d)
			}
			a.SetWriteDeadline(time.Time{})
			got := make(chan error, 1)
			go func() {
				b.SetReadDeadline(time.Now().Add(framedTestDeadline))
				want := []Message{{1, big}, {3, []byte("queued too")}, {2, []byte("x")}}
				for _, w := range want {
					m, err := b.Recv()
					if err != nil {
						got <- err
						return
					}
					if m.Type != w.Type || !bytes.Equal(m.Data, w.Data) {
						got <- fmt.Errorf("got type %d, %d bytes; want type %d, %d bytes", m.Type, len(m.Data), w.Type, len(w.Data))
						return
					}
				}
				got <- nil
			}()
			if err := a.Send(2, []byte("x")); err != nil {
				t.Fatalf("Send after the timeout: %v", err)
			}
			if err := <-got; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFramedCloseUnblocks(t *testing.T) {
	for _, kind := range []string{"unix", "tcp", "pipe"} {
		t.Run("net="+kind, func(t *testing.T) {
			a, _ := framedPair(t, kind, framedOptions{})
			// a waits for a message b never sends, while a's senders
			// write to b, which never reads: the queue fills and four
			// senders wait for room.
			recvErr := make(chan error, 1)
			go func() {
				_, err := a.Recv()
				recvErr <- err
			}()
			framedFill(t, a, 0)
			sendErr := make(chan error, 4)
			for range 4 {
				go func() { sendErr <- a.Send(2, make([]byte, 64<<10)) }()
			}
			framedWaitWaiters(t, a, 4)
			select {
			case err := <-recvErr:
				t.Fatalf("Recv returned early: %v", err)
			case err := <-sendErr:
				t.Fatalf("Send returned early: %v", err)
			default:
			}
			start := time.Now()
			a.Close()
			if d := time.Since(start); d > 100*time.Millisecond {
				t.Fatalf("Close took %v", d)
			}
			if err := a.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			timeout := time.After(time.Second)
			select {
			case err := <-recvErr:
				if !errors.Is(err, ErrClosed) {
					t.Fatalf("Recv after Close: %v", err)
				}
			case <-timeout:
				t.Fatal("Recv still blocked after Close")
			}
			for range 4 {
				select {
				case err := <-sendErr:
					if !errors.Is(err, ErrClosed) {
						t.Fatalf("Send after Close: %v", err)
					}
				case <-timeout:
					t.Fatal("Send still blocked after Close")
				}
			}
			if err := a.Send(1, nil); !errors.Is(err, ErrClosed) {
				t.Fatalf("Send on a closed conn: %v", err)
			}
			if _, err := a.Recv(); !errors.Is(err, ErrClosed) {
				t.Fatalf("Recv on a closed conn: %v", err)
			}
			if err := a.SetReadDeadline(time.Time{}); !errors.Is(err, ErrClosed) {
				t.Fatalf("SetReadDeadline on a closed conn: %v", err)
			}
		})
	}
}

// TestFramedHeldAfterClose checks a received view survives Close until
// Release.
func TestFramedHeldAfterClose(t *testing.T) {
	a, b := framedPair(t, "unix", framedOptions{Compression: framedCompLZ4})
	want := framedJSONPool[:100<<10]
	go a.Send(1, want)
	b.SetReadDeadline(time.Now().Add(framedTestDeadline))
	m, err := b.Recv()
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if !bytes.Equal(m.Data, want) {
		t.Fatal("view changed by Close")
	}
	b.Release()
	b.Release() // idempotent
}

func TestFramedCoalescing(t *testing.T) {
	const senders, each = 8, 2000
	// Small socket buffers, so the slow reader makes writes block.
	ra, rb := framedSocketpair(t)
	ra.(*net.UnixConn).SetWriteBuffer(16 << 10)
	rb.(*net.UnixConn).SetReadBuffer(16 << 10)
	a, b := newFramed(ra, framedOptions{}), newFramed(rb, framedOptions{})
	defer a.Close()
	defer b.Close()
	deadline := time.Now().Add(framedTestDeadline)
	a.SetWriteDeadline(deadline)
	b.SetReadDeadline(deadline)
	var wg sync.WaitGroup
	errs := make(chan error, senders+1)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := make([]byte, 100)
			for i := range each {
				binary.LittleEndian.PutUint32(msg, uint32(i))
				if err := a.Send(uint16(s), msg); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	go func() {
		next := make([]uint32, senders)
		for i := range senders * each {
			m, err := b.Recv()
			if err != nil {
				errs <- err
				return
			}
			// Per sender, order is kept.
			if seq := binary.LittleEndian.Uint32(m.Data); int(m.Type) >= senders || seq != next[m.Type] {
				errs <- fmt.Errorf("sender %d: got message %d, want %d", m.Type, seq, next[m.Type%senders])
				return
			}
			next[m.Type]++
			if i%64 == 0 {
				time.Sleep(100 * time.Microsecond) // a slightly slow reader
			}
		}
		errs <- nil
	}()
	wg.Wait()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	s := a.Stats()
	if s.MessagesSent != senders*each {
		t.Fatalf("sent %d", s.MessagesSent)
	}
	if s.Writes >= s.MessagesSent {
		t.Fatalf("%d writes for %d messages: no coalescing", s.Writes, s.MessagesSent)
	}
	t.Logf("%d writes for %d messages (%.3f writes/msg)", s.Writes, s.MessagesSent, float64(s.Writes)/float64(s.MessagesSent))
}

// TestFramedCoalescingQueued checks the queue packs small frames: while the
// writer is blocked on a peer that does not read, small sends return at once,
// packed into one chunk (one writev later), and arrive in order.
func TestFramedCoalescingQueued(t *testing.T) {
	for _, kind := range []string{"unix", "tcp", "pipe"} {
		t.Run("net="+kind, func(t *testing.T) {
			ra, rb := framedNetPair(t, kind)
			// Small socket buffers (no TCP autotuning), so the big frame
			// fills them and stays within the budget.
			for _, rc := range []net.Conn{ra, rb} {
				if bc, ok := rc.(interface {
					SetReadBuffer(int) error
					SetWriteBuffer(int) error
				}); ok {
					bc.SetReadBuffer(64 << 10)
					bc.SetWriteBuffer(64 << 10)
				}
			}
			a, b := newFramed(ra, framedOptions{}), newFramed(rb, framedOptions{})
			t.Cleanup(func() { a.Close(); b.Close() })
			big := framedRandPool[:2<<20] // more than the socket buffers, less than the budget
			if err := a.Send(0, big); err != nil {
				t.Fatal(err)
			}
			// Wait until the writer took the rest of the big frame and is
			// blocked writing it.
			for start := time.Now(); ; time.Sleep(time.Millisecond) {
				a.wmu.Lock()
				ok := a.writing && len(a.queue) == 0 && a.wheld > 0
				a.wmu.Unlock()
				if ok {
					break
				}
				if time.Since(start) > framedTestDeadline {
					t.Fatal("the writer never took the big frame")
				}
			}
			for i := 1; i < 8; i++ {
				if err := a.Send(uint16(i), []byte("queued")); err != nil {
					t.Fatal(err)
				}
			}
			a.wmu.Lock()
			chunks, queued := len(a.queue), 0
			for _, ch := range a.queue {
				queued += len(ch.b)
			}
			a.wmu.Unlock()
			if want := 7 * (frameHeaderLen + len("queued")); chunks != 1 || queued != want {
				t.Fatalf("7 small sends queued as %d chunks of %d bytes in all; want 1 of %d", chunks, queued, want)
			}
			b.SetReadDeadline(time.Now().Add(framedTestDeadline))
			for i := range 8 {
				m, err := b.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if m.Type != uint16(i) || i == 0 && !bytes.Equal(m.Data, big) || i > 0 && string(m.Data) != "queued" {
					t.Fatalf("message %d: type %d, %d bytes", i, m.Type, len(m.Data))
				}
			}
		})
	}
}

func TestFramedBatchOneWrite(t *testing.T) {
	for _, comp := range framedComps {
		t.Run("comp="+comp.String(), func(t *testing.T) {
			a, b := framedPair(t, "unix", framedOptions{Compression: comp, Threshold: 100})
			msgs := make([]Message, 100)
			for i := range msgs {
				// About 50 KB in all, so one writev fits the socket buffer.
				msgs[i] = Message{Type: uint16(i), Data: framedJSONPool[i*100 : i*100+i*10]}
			}
			errc := make(chan error, 1)
			go func() { errc <- a.SendBatch(msgs) }()
			b.SetReadDeadline(time.Now().Add(framedTestDeadline))
			for i := range msgs {
				m, err := b.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if m.Type != uint16(i) || !bytes.Equal(m.Data, msgs[i].Data) {
					t.Fatalf("message %d differs", i)
				}
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if w := a.Stats().Writes; w != 1 {
				t.Fatalf("a batch of 100 took %d writes", w)
			}
		})
	}
}

// TestFramedAllocs checks the steady state: Send (the direct writev) plus
// Recv of a message allocate nothing.
func TestFramedAllocs(t *testing.T) {
	if framedRaceEnabled() {
		t.Skip("the race detector allocates")
	}
	for _, comp := range framedComps {
		for _, size := range []int{10, 1 << 10, 64 << 10} {
			t.Run(fmt.Sprintf("comp=%s/size=%d", comp, size), func(t *testing.T) {
				a, b := framedPair(t, "unix", framedOptions{Compression: comp})
				data := framedJSONPool[:size]
				b.SetReadDeadline(time.Now().Add(framedTestDeadline))
				var failed error
				allocs := testing.AllocsPerRun(200, func() {
					if err := a.Send(1, data); err != nil {
						failed = err
						return
					}
					m, err := b.Recv()
					if err != nil || len(m.Data) != size {
						failed = fmt.Errorf("recv: %d bytes, %v", len(m.Data), err)
					}
				})
				if failed != nil {
					t.Fatal(failed)
				}
				if allocs > 0 {
					t.Fatalf("%.1f allocations per Send+Recv", allocs)
				}
			})
		}
	}
}

func TestFramedBufferClasses(t *testing.T) {
	prevIdx, prevSize := -1, 0
	for n := 1; n <= framedMaxLimit+frameZstdSlack; n = n*5/4 + 1 {
		i, size := frameClass(n)
		if size < n || size > n*5/4+4096 || i < prevIdx || i == prevIdx && size != prevSize {
			t.Fatalf("frameClass(%d) = %d, %d", n, i, size)
		}
		if i2, s2 := frameClass(size); i2 != i || s2 != size {
			t.Fatalf("class of size %d is %d, %d; want %d", size, i2, s2, i)
		}
		if i >= frameClasses {
			t.Fatalf("frameClass(%d) = %d, beyond %d pools", n, i, frameClasses)
		}
		prevIdx, prevSize = i, size
	}
	p := frameGet(5000)
	if len(*p) < 5000 {
		t.Fatal("short buffer")
	}
	framePut(p)
}
