package transport

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// framedMemConn is a net.Conn over a byte slice: Read hands out in at most
// chunk bytes a call (so frames arrive split), Write collects into out.
type framedMemConn struct {
	mu     sync.Mutex
	in     []byte
	chunk  int
	out    bytes.Buffer
	closed bool
}

func (m *framedMemConn) Read(b []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, net.ErrClosed
	}
	if len(m.in) == 0 {
		return 0, io.EOF
	}
	if m.chunk > 0 && len(b) > m.chunk {
		b = b[:m.chunk]
	}
	n := copy(b, m.in)
	m.in = m.in[n:]
	return n, nil
}

func (m *framedMemConn) Write(b []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, net.ErrClosed
	}
	return m.out.Write(b)
}

func (m *framedMemConn) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

func (m *framedMemConn) LocalAddr() net.Addr                { return &net.UnixAddr{Name: "mem", Net: "unix"} }
func (m *framedMemConn) RemoteAddr() net.Addr               { return &net.UnixAddr{Name: "mem", Net: "unix"} }
func (m *framedMemConn) SetDeadline(t time.Time) error      { return nil }
func (m *framedMemConn) SetReadDeadline(t time.Time) error  { return nil }
func (m *framedMemConn) SetWriteDeadline(t time.Time) error { return nil }

// framedFuzzMax keeps the fuzzer's lying headers cheap.
const framedFuzzMax = 1 << 20

// FuzzFrameDecoder feeds arbitrary bytes to a framed conn of each codec: it
// must never panic and only fail with a sentinel; every message it accepts
// must re-encode into frames that decode to the same message.
func FuzzFrameDecoder(f *testing.F) {
	f.Add(framedRawFrame(1, 0, []byte("hello")))
	f.Add(append(framedRawFrame(1, 0, nil), framedRawFrame(2, 0, []byte("two"))...))
	f.Add(framedRawFrame(1, 4, []byte("bad flag")))
	f.Add(framedRawFrame(1, frameFlagLZ4, framedCompressed(300, framedLZ4Block(f, framedJSONPool[:300]))))
	f.Add(framedRawFrame(1, frameFlagZstd, framedCompressed(300, framedZstdFrame(f, framedJSONPool[:300]))))
	f.Add(framedRawFrame(1, frameFlagZstd, framedCompressed(300, framedZstdRLE(3, 100))))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, comp := range framedComps {
			o := framedOptions{Compression: comp, MaxMessage: framedFuzzMax, Threshold: 1}
			c := newFramed(&framedMemConn{in: data, chunk: 1 + len(data)%17}, o)
			for range 64 {
				m, err := c.Recv()
				if err != nil {
					if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrPeerGone) {
						t.Fatalf("%s: error %v is no sentinel", comp, err)
					}
					if _, err2 := c.Recv(); !errors.Is(err2, ErrCorrupt) && !errors.Is(err2, ErrTooLarge) && !errors.Is(err2, ErrPeerGone) {
						t.Fatalf("%s: second error %v differs from %v", comp, err2, err)
					}
					break
				}
				if len(m.Data) > framedFuzzMax {
					t.Fatalf("%s: message of %d bytes over the limit", comp, len(m.Data))
				}
				framedFuzzReencode(t, o, m)
			}
			c.Close()
		}
	})
}

// framedFuzzReencode sends m through a framed conn with options o and reads
// it back.
func framedFuzzReencode(t *testing.T, o framedOptions, m Message) {
	out := &framedMemConn{}
	enc := newFramed(out, o)
	if err := enc.Send(m.Type, m.Data); err != nil {
		t.Fatalf("%s: re-encoding: %v", o.Compression, err)
	}
	framedIdle(t, enc) // a memory conn is written by the writer goroutine
	wire := out.out.Bytes()
	if o.Compression == framedCompNone && !bytes.Equal(wire, framedRawFrame(m.Type, 0, m.Data)) {
		t.Fatalf("raw re-encoding differs from the frame format")
	}
	dec := newFramed(&framedMemConn{in: wire, chunk: 7}, o)
	m2, err := dec.Recv()
	if err != nil {
		t.Fatalf("%s: decoding the re-encoded message: %v", o.Compression, err)
	}
	if m2.Type != m.Type || !bytes.Equal(m2.Data, m.Data) {
		t.Fatalf("%s: re-encoded message differs", o.Compression)
	}
	if _, err := dec.Recv(); !errors.Is(err, ErrPeerGone) || errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("%s: after the one frame: %v, want a clean end", o.Compression, err)
	}
	if s := enc.Stats(); s.WireBytesSent != uint64(len(wire)) || s.MessagesSent != 1 {
		t.Fatalf("%s: stats %+v for %d wire bytes", o.Compression, s, len(wire))
	}
}

// FuzzFrameCodec drives the codec alone, without a connection: a header
// parsed from arbitrary bytes must follow the rules (or fail with a
// sentinel), and a compressed payload must decode to exactly its declared
// size or fail with one.
func FuzzFrameCodec(f *testing.F) {
	f.Add(framedRawFrame(1, 0, []byte("hello")))
	f.Add(framedRawFrame(1, frameFlagLZ4, framedCompressed(300, framedLZ4Block(f, framedJSONPool[:300]))))
	f.Add(framedRawFrame(1, frameFlagZstd, framedCompressed(300, framedZstdFrame(f, framedJSONPool[:300]))))
	f.Add(framedRawFrame(1, frameFlagZstd, framedCompressed(300, framedZstdRLE(3, 100))))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, comp := range framedComps {
			h, need, err := frameParseHeader(data, comp, framedFuzzMax)
			switch {
			case err != nil:
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("%s: header error %v is no sentinel", comp, err)
				}
				continue
			case need > 0:
				if len(data)+need > frameHeaderLen+frameRawLen {
					t.Fatalf("%s: needs %d more after %d bytes", comp, need, len(data))
				}
				continue
			}
			if h.length > framedFuzzMax || h.flags != 0 && (h.flags != comp.flag() || h.raw < 1 || h.raw > framedFuzzMax || h.length <= frameRawLen) {
				t.Fatalf("%s: header %+v breaks the rules", comp, h)
			}
			payload := data[frameHeaderLen:]
			if h.flags == 0 || len(payload) < h.length {
				continue
			}
			p, err := frameDecompress(h.flags, payload[frameRawLen:h.length], h.raw)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: decode error %v is not ErrCorrupt", comp, err)
				}
				continue
			}
			if len(*p) < h.raw {
				t.Fatalf("%s: decoded into %d bytes, declared %d", comp, len(*p), h.raw)
			}
			framePut(p)
		}
	})
}
