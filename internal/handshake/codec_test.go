package handshake

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/ringwire/ringwire/internal/handshake/internal/fb"
	"github.com/ringwire/ringwire/ring"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzDecode from sampleMessages")

// sampleMessages covers every message type with empty and full fields.
func sampleMessages() map[string]Message {
	big := func(n int, c byte) string { return strings.Repeat(string(c), n) }
	full := map[string]string{}
	for i := range 8 {
		full[fmt.Sprintf("key-%d-%s", i, big(200, 'k'))] = big(4<<10, byte('a'+i))
	}
	return map[string]Message{
		"hello-min": &Hello{MinVersion: 1, MaxVersion: 1},
		"hello-typical": &Hello{
			MinVersion: 1, MaxVersion: 3, Shm: true,
			Compressions: []Compression{CompressionZstd, CompressionLZ4},
			MaxMessage:   1 << 20,
			Contract:     bytes.Repeat([]byte{0xab}, 32),
			Token:        []byte("secret-token"),
			Name:         "host", Version: "v1.2.3",
			Constants: map[string]string{"region": "eu", "shard": "7", "ünïcode": "✓"},
		},
		"hello-max": &Hello{
			MinVersion: 1, MaxVersion: 0xffff, Shm: true,
			Compressions: []Compression{0, 1, 2, 3, 4, 5, 6, 255}, // unknown ones from a newer peer
			MaxMessage:   ^uint64(0),
			Contract:     bytes.Repeat([]byte{0xff}, MaxContract),
			Token:        bytes.Repeat([]byte{0}, MaxToken),
			Name:         big(MaxString, 'n'), Version: big(MaxString, 'v'),
			Constants: full,
		},
		"accept-min": &Accept{Version: 1},
		"accept-shm": &Accept{
			Version: 1, Transport: TransportShm, RingSize: 4 << 20, MaxMessage: 128 << 20,
			Contract: []byte{1, 2, 3}, Name: "plugin", AppVersion: "0.1",
			Constants: map[string]string{"a": "", "b": "x"},
		},
		"accept-framed":   &Accept{Version: 0xffff, Compression: CompressionZstd, MaxMessage: ^uint64(0), Name: big(MaxString, 'x')},
		"refuse-empty":    &Refuse{},
		"refuse-contract": &Refuse{Reason: ReasonContract, Message: "dialler contract ab, listener contract cd"},
		"refuse-max":      &Refuse{Reason: 200, Message: big(MaxString, 'm')},
		"ack":             &Ack{},
	}
}

func mustEncode(t testing.TB, m Message) []byte {
	t.Helper()
	b, err := Encode(m)
	if err != nil {
		t.Fatalf("Encode(%T): %v", m, err)
	}
	return b
}

// assertNoBackstop fails if Decode's recover fired: the verifier must catch
// every bad buffer before the generated accessors touch it.
func assertNoBackstop(t testing.TB, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), "undecodable message") {
		t.Fatalf("the verifier missed a bad buffer and an accessor panicked: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	for name, m := range sampleMessages() {
		t.Run(name, func(t *testing.T) {
			b := mustEncode(t, m)
			if len(b) > MaxHandshake {
				t.Fatalf("encoded %d bytes", len(b))
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip changed the message:\n got %#v\nwant %#v", got, m)
			}
			// Equal messages encode to equal bytes (constants are sorted).
			if again := mustEncode(t, got); !bytes.Equal(again, b) {
				t.Fatalf("re-encoding differs")
			}
			// The decoded message owns its memory.
			for i := range b {
				b[i] = 0xee
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("decoded message aliases the input buffer")
			}
		})
	}
}

func TestRoundTripNormalisesEmpty(t *testing.T) {
	h := &Hello{MinVersion: 1, MaxVersion: 1, Compressions: []Compression{}, Contract: []byte{}, Token: []byte{}, Constants: map[string]string{}}
	got, err := Decode(mustEncode(t, h))
	if err != nil {
		t.Fatal(err)
	}
	want := &Hello{MinVersion: 1, MaxVersion: 1}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v, want %#v", got, want)
	}
}

func TestEncodeBounds(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	manyConsts := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[strconv.Itoa(i)] = ""
		}
		return m
	}
	huge := map[string]string{}
	for i := range 16 { // 16 x 4 KiB values: over MaxHandshake in total
		huge[strconv.Itoa(i)] = long(MaxConstantValue)
	}
	hello := func(f func(h *Hello)) *Hello {
		h := &Hello{MinVersion: 1, MaxVersion: 1}
		f(h)
		return h
	}
	cases := map[string]Message{
		"hello version 0":       hello(func(h *Hello) { h.MinVersion = 0 }),
		"hello min > max":       hello(func(h *Hello) { h.MinVersion = 2 }),
		"hello compressions":    hello(func(h *Hello) { h.Compressions = make([]Compression, MaxCompressions+1) }),
		"hello contract":        hello(func(h *Hello) { h.Contract = make([]byte, MaxContract+1) }),
		"hello token":           hello(func(h *Hello) { h.Token = make([]byte, MaxToken+1) }),
		"hello name":            hello(func(h *Hello) { h.Name = long(MaxString + 1) }),
		"hello version string":  hello(func(h *Hello) { h.Version = long(MaxString + 1) }),
		"hello name not utf8":   hello(func(h *Hello) { h.Name = "\xff" }),
		"hello constants count": hello(func(h *Hello) { h.Constants = manyConsts(MaxConstants + 1) }),
		"hello constant key":    hello(func(h *Hello) { h.Constants = map[string]string{long(MaxConstantKey + 1): ""} }),
		"hello empty key":       hello(func(h *Hello) { h.Constants = map[string]string{"": "v"} }),
		"hello constant value":  hello(func(h *Hello) { h.Constants = map[string]string{"k": long(MaxConstantValue + 1)} }),
		"hello total size":      hello(func(h *Hello) { h.Constants = huge }),
		"accept version 0":      &Accept{},
		"accept transport":      &Accept{Version: 1, Transport: 2},
		"accept compression":    &Accept{Version: 1, Compression: 3},
		"accept contract":       &Accept{Version: 1, Contract: make([]byte, MaxContract+1)},
		"accept name":           &Accept{Version: 1, Name: long(MaxString + 1)},
		"accept app version":    &Accept{Version: 1, AppVersion: long(MaxString + 1)},
		"accept constants":      &Accept{Version: 1, Constants: manyConsts(MaxConstants + 1)},
		"refuse message":        &Refuse{Message: long(MaxString + 1)},
		"nil hello":             (*Hello)(nil),
		"nil accept":            (*Accept)(nil),
		"nil refuse":            (*Refuse)(nil),
		"nil ack":               (*Ack)(nil),
		"nil message":           nil,
	}
	for name, m := range cases {
		if _, err := Encode(m); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Encode = %v, want ErrMalformed", name, err)
		}
	}
	// At the bounds exactly, everything encodes.
	ok := hello(func(h *Hello) {
		h.Constants = manyConsts(MaxConstants - 2)
		h.Constants["k"] = long(MaxConstantValue)
		h.Constants[long(MaxConstantKey)] = ""
	})
	if _, err := Encode(ok); err != nil {
		t.Errorf("constants at their bounds: %v", err)
	}
}

func TestDecodeMalformed(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := map[string][]byte{
		"nil":       nil,
		"3 bytes":   {1, 2, 3},
		"zeros":     make([]byte, 64),
		"ones":      bytes.Repeat([]byte{0xff}, 64),
		"oversized": append(mustEncode(t, &Ack{}), make([]byte, MaxHandshake)...),
	}
	for i := range 200 {
		b := make([]byte, rng.IntN(200))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		cases[fmt.Sprintf("garbage %d", i)] = b
	}
	// Every truncation of every sample fails, or cut only the padding after
	// the last string and decodes to the same message.
	for name, m := range sampleMessages() {
		b := mustEncode(t, m)
		for n := range len(b) {
			got, err := Decode(b[:n:n])
			assertNoBackstop(t, err)
			if err == nil && (len(b)-n > 7 || !reflect.DeepEqual(got, m)) {
				t.Errorf("%s cut to %d of %d bytes decodes to %v", name, n, len(b), got)
			}
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Errorf("%s cut to %d: %v", name, n, err)
			}
		}
	}
	// Body types the union does not have or that mismatch the body.
	for _, tc := range []struct {
		name string
		typ  fb.Body
		body func(b *flatbuffers.Builder) flatbuffers.UOffsetT
	}{
		{"type none", fb.BodyNONE, nil},
		{"type 9", 9, func(b *flatbuffers.Builder) flatbuffers.UOffsetT { fb.AckStart(b); return fb.AckEnd(b) }},
		{"type hello, no body", fb.BodyHello, nil},
		{"type hello, ack body", fb.BodyHello, func(b *flatbuffers.Builder) flatbuffers.UOffsetT { fb.AckStart(b); return fb.AckEnd(b) }},
		{"type accept, ack body", fb.BodyAccept, func(b *flatbuffers.Builder) flatbuffers.UOffsetT { fb.AckStart(b); return fb.AckEnd(b) }},
		{"type hello, refuse body", fb.BodyHello, func(b *flatbuffers.Builder) flatbuffers.UOffsetT {
			msg := b.CreateString("xyz")
			fb.RefuseStart(b)
			fb.RefuseAddReason(b, 3)
			fb.RefuseAddMessage(b, msg)
			return fb.RefuseEnd(b)
		}},
	} {
		b := flatbuffers.NewBuilder(64)
		var body flatbuffers.UOffsetT
		if tc.body != nil {
			body = tc.body(b)
		}
		fb.EnvelopeStart(b)
		fb.EnvelopeAddBodyType(b, tc.typ)
		if body != 0 {
			fb.EnvelopeAddBody(b, body)
		}
		b.Finish(fb.EnvelopeEnd(b))
		cases[tc.name] = b.FinishedBytes()
	}
	// Duplicate constant keys, built by hand (Encode cannot produce them).
	{
		b := flatbuffers.NewBuilder(64)
		var kv [2]flatbuffers.UOffsetT
		for i := range kv {
			k := b.CreateString("dup")
			fb.ConstantStart(b)
			fb.ConstantAddKey(b, k)
			kv[i] = fb.ConstantEnd(b)
		}
		fb.HelloStartConstantsVector(b, 2)
		b.PrependUOffsetT(kv[1])
		b.PrependUOffsetT(kv[0])
		vec := b.EndVector(2)
		fb.HelloStart(b)
		fb.HelloAddMinVersion(b, 1)
		fb.HelloAddMaxVersion(b, 1)
		fb.HelloAddConstants(b, vec)
		hello := fb.HelloEnd(b)
		fb.EnvelopeStart(b)
		fb.EnvelopeAddBodyType(b, fb.BodyHello)
		fb.EnvelopeAddBody(b, hello)
		b.Finish(fb.EnvelopeEnd(b))
		cases["duplicate constant"] = b.FinishedBytes()
	}
	for name, b := range cases {
		m, err := Decode(b)
		if !errors.Is(err, ErrMalformed) || m != nil {
			t.Errorf("%s: Decode = %v, %v; want nil, ErrMalformed", name, m, err)
		}
		assertNoBackstop(t, err)
	}
}

// Every single-byte corruption of every sample either decodes to a valid
// message or is ErrMalformed caught by the verifier, never by the backstop.
func TestDecodeCorruptions(t *testing.T) {
	for name, m := range sampleMessages() {
		orig := mustEncode(t, m)
		if len(orig) > 2048 {
			orig = orig[:2048:2048] // the start holds the tables and vtables; the rest is string data
		}
		b := make([]byte, len(orig))
		for i := range orig {
			for _, v := range []byte{0, 1, 2, 4, 0x7f, 0x80, 0xfe, 0xff, orig[i] ^ 0x40} {
				copy(b, orig)
				b[i] = v
				got, err := Decode(b)
				assertNoBackstop(t, err)
				if err != nil {
					if !errors.Is(err, ErrMalformed) {
						t.Fatalf("%s byte %d = %#x: %v is not ErrMalformed", name, i, v, err)
					}
					continue
				}
				if _, err := Encode(got); err != nil {
					t.Fatalf("%s byte %d = %#x: decoded a message that does not encode: %v", name, i, v, err)
				}
			}
		}
	}
}

func TestWriteReadMessage(t *testing.T) {
	var stream bytes.Buffer
	samples := sampleMessages()
	var order []string
	for name, m := range samples {
		order = append(order, name)
		w := &countingWriter{w: &stream}
		if err := WriteMessage(w, m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if w.calls != 1 {
			t.Fatalf("%s: %d Write calls, want 1", name, w.calls)
		}
	}
	// Back to back, one byte at a time: each read takes exactly one message.
	r := iotest.OneByteReader(&stream)
	for _, name := range order {
		got, err := ReadMessage(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, samples[name]) {
			t.Fatalf("%s: got %#v", name, got)
		}
	}
	if _, err := ReadMessage(r); !errors.Is(err, ErrMalformed) || !errors.Is(err, io.EOF) {
		t.Fatalf("read at the end of the stream: %v, want ErrMalformed and io.EOF", err)
	}
}

func TestWriteMessageErrors(t *testing.T) {
	if err := WriteMessage(io.Discard, &Refuse{Message: strings.Repeat("x", MaxString+1)}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("oversized message: %v", err)
	}
	if err := WriteMessage(shortWriter{}, &Ack{}); !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("short write: %v", err)
	}
	errBroken := errors.New("broken pipe")
	if err := WriteMessage(errWriter{errBroken}, &Ack{}); !errors.Is(err, errBroken) {
		t.Fatalf("failing writer: %v", err)
	}
}

func prefixed(payload []byte) []byte {
	b := append([]byte(Magic), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(payload)))
	return append(b, payload...)
}

func TestReadMessageMalformed(t *testing.T) {
	ack := prefixed(mustEncode(t, &Ack{}))
	hello := prefixed(mustEncode(t, sampleMessages()["hello-typical"]))
	cases := map[string]struct {
		in        []byte
		alsoMatch error
	}{
		"empty":          {nil, io.EOF},
		"half prefix":    {[]byte("RWH"), io.ErrUnexpectedEOF},
		"bad magic":      {append([]byte("RWH2"), ack[4:]...), nil},
		"http":           {[]byte("GET / HTTP/1.1\r\n\r\n"), nil},
		"zero length":    {[]byte("RWH1\x00\x00\x00\x00"), nil},
		"no payload":     {ack[:PrefixSize], io.ErrUnexpectedEOF},
		"short payload":  {hello[:len(hello)-1], io.ErrUnexpectedEOF},
		"garbage body":   {prefixed([]byte("not a flatbuffer at all")), nil},
		"length too big": {[]byte("RWH1\x01\x00\x01\x00"), nil},
	}
	for name, tc := range cases {
		_, err := ReadMessage(bytes.NewReader(tc.in))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
		if tc.alsoMatch != nil && !errors.Is(err, tc.alsoMatch) {
			t.Errorf("%s: %v, want it to match %v too", name, err, tc.alsoMatch)
		}
	}
}

// A huge declared length is refused from the prefix alone: nothing past it is
// read and nothing large is allocated.
func TestReadMessageHugeLength(t *testing.T) {
	for _, n := range []uint32{MaxHandshake + 1, 1 << 30, 0xffffffff} {
		prefix := []byte("RWH1\x00\x00\x00\x00")
		binary.LittleEndian.PutUint32(prefix[4:], n)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := ReadMessage(&prefixOnlyReader{t: t, prefix: prefix})
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("length %d: %v, want ErrMalformed", n, err)
		}
		if grown := after.TotalAlloc - before.TotalAlloc; grown > MaxHandshake {
			t.Fatalf("length %d: allocated %d bytes", n, grown)
		}
	}
}

// TestReadMessageAllocatesWhatArrived: a peer that declares the largest
// message and then sends a few bytes (and stalls, or hangs up) makes the
// reader hold about what arrived, not the declared size.
func TestReadMessageAllocatesWhatArrived(t *testing.T) {
	prefix := []byte("RWH1\x00\x00\x00\x00")
	binary.LittleEndian.PutUint32(prefix[4:], MaxHandshake)
	const sent, rounds = 100, 50
	in := append(prefix, bytes.Repeat([]byte{0xAB}, sent)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range rounds {
		_, err := ReadMessage(io.MultiReader(bytes.NewReader(in), iotest.ErrReader(os.ErrDeadlineExceeded)))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%v, want the reader's deadline error", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / rounds; per > 4<<10 {
		t.Fatalf("%d bytes allocated per read of %d bytes that declared %d", per, sent, MaxHandshake)
	}
}

func TestReadMessageReaderError(t *testing.T) {
	errDeadline := errors.New("i/o timeout")
	for _, in := range []io.Reader{
		iotest.ErrReader(errDeadline),
		io.MultiReader(bytes.NewReader([]byte("RWH1\x10\x00\x00\x00abc")), iotest.ErrReader(errDeadline)),
	} {
		_, err := ReadMessage(in)
		if !errors.Is(err, errDeadline) || errors.Is(err, ErrMalformed) {
			t.Fatalf("%v: want the reader's error, not ErrMalformed", err)
		}
	}
}

func TestEnumsMatchSchema(t *testing.T) {
	pairs := []struct{ ours, schema uint8 }{
		{uint8(CompressionNone), uint8(fb.CompressionNone)},
		{uint8(CompressionLZ4), uint8(fb.CompressionLZ4)},
		{uint8(CompressionZstd), uint8(fb.CompressionZstd)},
		{uint8(TransportFramed), uint8(fb.TransportFramed)},
		{uint8(TransportShm), uint8(fb.TransportShm)},
		{uint8(ReasonVersion), uint8(fb.ReasonVersion)},
		{uint8(ReasonContract), uint8(fb.ReasonContract)},
		{uint8(ReasonUnauthorized), uint8(fb.ReasonUnauthorized)},
		{uint8(ReasonMalformed), uint8(fb.ReasonMalformed)},
		{uint8(ReasonUnavailable), uint8(fb.ReasonUnavailable)},
		{uint8(ReasonOther), uint8(fb.ReasonOther)},
	}
	for i, p := range pairs {
		if p.ours != p.schema {
			t.Errorf("pair %d: %d != %d", i, p.ours, p.schema)
		}
	}
	if MinRingSize != ring.MinCapacity || MaxRingSize != ring.MaxCapacity {
		t.Errorf("ring size bounds %d..%d differ from package ring's %d..%d", MinRingSize, MaxRingSize, ring.MinCapacity, ring.MaxCapacity)
	}
}

func TestEnumStrings(t *testing.T) {
	for _, c := range []Compression{CompressionNone, CompressionLZ4, CompressionZstd} {
		got, err := ParseCompression(strings.ToUpper(c.String()))
		if err != nil || got != c {
			t.Errorf("ParseCompression(%q) = %v, %v", c, got, err)
		}
	}
	if _, err := ParseCompression("gzip"); err == nil {
		t.Error("ParseCompression(gzip) succeeded")
	}
	if _, err := ParseCompression(""); err == nil {
		t.Error("ParseCompression(\"\") succeeded")
	}
	for v, want := range map[fmt.Stringer]string{
		Compression(9): "Compression(9)", TransportFramed: "framed", TransportShm: "shm",
		Transport(7): "Transport(7)", ReasonContract: "contract", Reason(0): "Reason(0)",
		ReasonUnavailable: "unavailable",
	} {
		if v.String() != want {
			t.Errorf("%#v.String() = %q, want %q", v, v.String(), want)
		}
	}
}

func TestHelloStringRedactsToken(t *testing.T) {
	h := &Hello{MinVersion: 1, MaxVersion: 1, Token: []byte("hunter2-secret")}
	p := &Policy{Token: []byte("hunter2-secret")}
	for _, s := range []string{h.String(), p.String(), fmt.Sprint(h), fmt.Sprintf("%v", p)} {
		if strings.Contains(s, "hunter2") || strings.Contains(s, fmt.Sprintf("%x", h.Token)) {
			t.Fatalf("token leaked: %s", s)
		}
	}
}

// The committed seeds of FuzzDecode are the samples, encoded; -update-seeds
// rewrites them.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if *updateSeeds {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, m := range sampleMessages() {
			data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", mustEncode(t, m))
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	samples := sampleMessages()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, e := range entries {
		want, ok := samples[e.Name()]
		if !ok {
			continue // a crasher the fuzzer added
		}
		seen++
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lit, ok := strings.CutPrefix(strings.TrimSpace(string(raw)), "go test fuzz v1\n[]byte(")
		lit, ok2 := strings.CutSuffix(lit, ")")
		b, err := strconv.Unquote(lit)
		if !ok || !ok2 || err != nil {
			t.Fatalf("%s: not a go test fuzz v1 []byte file", e.Name())
		}
		got, err := Decode([]byte(b))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: seed decodes to %#v, %v; run go test -run TestFuzzSeeds -update-seeds", e.Name(), got, err)
		}
	}
	if seen != len(samples) {
		t.Fatalf("%d of %d seeds present; run go test -run TestFuzzSeeds -update-seeds", seen, len(samples))
	}
}

type countingWriter struct {
	w     io.Writer
	calls int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.calls++
	return c.w.Write(p)
}

type errWriter struct{ err error }

func (w errWriter) Write(p []byte) (int, error) { return 0, w.err }

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }

// prefixOnlyReader serves a prefix and fails the test if read past it.
type prefixOnlyReader struct {
	t      testing.TB
	prefix []byte
}

func (r *prefixOnlyReader) Read(p []byte) (int, error) {
	if len(r.prefix) == 0 {
		r.t.Error("ReadMessage read past the prefix of a message it should have refused")
		return 0, io.EOF
	}
	n := copy(p, r.prefix)
	r.prefix = r.prefix[n:]
	return n, nil
}
