package rpc

import (
	"encoding/binary"
	"errors"
	"testing"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/ringwire/ringwire/internal/rpc/internal/fb"
)

// BenchmarkEnvelope decided the data path's header format: the fixed 28-byte
// binary call header of envelope.go against the equivalent FlatBuffers table
// (CallHeader in control.fbs, which exists only for this benchmark), each
// encoding and decoding a call to "echo.Echo" with a 10-byte request appended.
//
//	go test -run '^$' -bench Envelope -benchmem -count 6 ./protocol
//
// Both sides are written the way the engine would have to: encode appends to
// a reused buffer (FlatBuffers through a reused builder, size-prefixed so the
// request can follow it), decode bounds-checks the untrusted bytes and
// returns views into them. The FlatBuffers decode uses the control bodies'
// checker (ctrlBuf), which reads each checked field once, so it is the
// cheapest safe FlatBuffers decode, not a strawman. The helpers here are
// independent of envelope.go, so that the benchmark measures the format and
// not one implementation.

// benchCall is a decoded call header; the byte slices are views.
type benchCall struct {
	id, aux     uint64
	timeout     int64
	flags       uint8
	method      []byte
	traceparent []byte
	payload     []byte
}

const benchFixedSize = 28

var errBenchCorrupt = errors.New("bench: corrupt call")

func benchFixedAppend(dst []byte, c *benchCall) []byte {
	var h [benchFixedSize]byte
	binary.LittleEndian.PutUint64(h[0:], c.id)
	binary.LittleEndian.PutUint64(h[8:], uint64(c.timeout))
	binary.LittleEndian.PutUint64(h[16:], c.aux)
	h[24] = c.flags
	h[25] = uint8(len(c.method))
	binary.LittleEndian.PutUint16(h[26:], uint16(len(c.traceparent)))
	dst = append(dst, h[:]...)
	dst = append(dst, c.traceparent...)
	dst = append(dst, c.method...)
	return append(dst, c.payload...)
}

func benchFixedParse(b []byte, c *benchCall) error {
	if len(b) < benchFixedSize {
		return errBenchCorrupt
	}
	c.id = binary.LittleEndian.Uint64(b[0:])
	c.timeout = int64(binary.LittleEndian.Uint64(b[8:]))
	c.aux = binary.LittleEndian.Uint64(b[16:])
	c.flags = b[24]
	mlen := int(b[25])
	tlen := int(binary.LittleEndian.Uint16(b[26:]))
	if benchFixedSize+tlen+mlen > len(b) {
		return errBenchCorrupt
	}
	p := benchFixedSize
	c.traceparent = b[p : p+tlen : p+tlen]
	p += tlen
	c.method = b[p : p+mlen : p+mlen]
	c.payload = b[p+mlen:]
	return nil
}

// benchFBAppend appends a size-prefixed CallHeader buffer and the payload.
func benchFBAppend(dst []byte, bld *flatbuffers.Builder, c *benchCall) []byte {
	bld.Reset()
	var tp flatbuffers.UOffsetT
	if len(c.traceparent) > 0 {
		tp = bld.CreateByteString(c.traceparent)
	}
	m := bld.CreateByteString(c.method)
	fb.CallHeaderStart(bld)
	fb.CallHeaderAddId(bld, c.id)
	fb.CallHeaderAddTimeoutNs(bld, c.timeout)
	fb.CallHeaderAddAux(bld, c.aux)
	if tp != 0 {
		fb.CallHeaderAddTraceparent(bld, tp)
	}
	fb.CallHeaderAddMethod(bld, m)
	fb.CallHeaderAddFlags(bld, c.flags)
	bld.FinishSizePrefixed(fb.CallHeaderEnd(bld))
	dst = append(dst, bld.FinishedBytes()...)
	return append(dst, c.payload...)
}

func benchFBParse(b []byte, c *benchCall) error {
	if len(b) < 4 {
		return errBenchCorrupt
	}
	n := uint64(binary.LittleEndian.Uint32(b))
	if n > uint64(len(b)-4) {
		return errBenchCorrupt
	}
	// FinishSizePrefixed aligns the buffer with its prefix: check it whole,
	// the root offset just after the prefix.
	buf := b[:4+n]
	v := ctrlBuf{b: buf, n: 4 + n, what: "call"}
	pos, err := v.offset(4)
	if err != nil {
		return err
	}
	t, err := v.table(pos)
	if err != nil {
		return err
	}
	var at [4]uint64
	for i, size := range [4]uint64{8, 8, 8, 1} { // id, timeout_ns, aux, flags
		if at[i], err = t.scalar(i, size); err != nil {
			return err
		}
	}
	*c = benchCall{}
	if at[0] != 0 {
		c.id = binary.LittleEndian.Uint64(buf[at[0]:])
	}
	if at[1] != 0 {
		c.timeout = int64(binary.LittleEndian.Uint64(buf[at[1]:]))
	}
	if at[2] != 0 {
		c.aux = binary.LittleEndian.Uint64(buf[at[2]:])
	}
	if at[3] != 0 {
		c.flags = buf[at[3]]
	}
	if c.method, err = t.vector(4, true, 255); err != nil {
		return err
	}
	if c.traceparent, err = t.vector(5, true, 1<<16-1); err != nil {
		return err
	}
	c.payload = b[4+n:]
	return nil
}

func benchEnvelopeCall() *benchCall {
	return &benchCall{
		id:      1<<20 + 7,
		timeout: 2e9,
		method:  []byte("echo.Echo"),
		payload: []byte("0123456789"),
	}
}

// The two formats carry the same call.
func TestBenchEnvelopeFormatsAgree(t *testing.T) {
	for _, in := range []*benchCall{
		benchEnvelopeCall(),
		{id: 1, timeout: -1, aux: 99, flags: 3, method: []byte("m"), traceparent: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), payload: []byte{}},
	} {
		var fixed, flat benchCall
		if err := benchFixedParse(benchFixedAppend(nil, in), &fixed); err != nil {
			t.Fatal(err)
		}
		if err := benchFBParse(benchFBAppend(nil, flatbuffers.NewBuilder(0), in), &flat); err != nil {
			t.Fatal(err)
		}
		for _, got := range []benchCall{fixed, flat} {
			if got.id != in.id || got.timeout != in.timeout || got.aux != in.aux || got.flags != in.flags ||
				string(got.method) != string(in.method) || string(got.traceparent) != string(in.traceparent) ||
				string(got.payload) != string(in.payload) {
				t.Fatalf("got %+v, want %+v", got, *in)
			}
		}
	}
}

func BenchmarkEnvelope(b *testing.B) {
	call := benchEnvelopeCall()
	bld := flatbuffers.NewBuilder(128)
	fixed := benchFixedAppend(nil, call)
	flat := benchFBAppend(nil, bld, call)
	b.Run("format=fixed/op=encode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(fixed)))
		dst := make([]byte, 0, 256)
		for b.Loop() {
			dst = benchFixedAppend(dst[:0], call)
		}
	})
	b.Run("format=fixed/op=decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(fixed)))
		var c benchCall
		for b.Loop() {
			if err := benchFixedParse(fixed, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("format=flatbuffers/op=encode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(flat)))
		dst := make([]byte, 0, 256)
		for b.Loop() {
			dst = benchFBAppend(dst[:0], bld, call)
		}
	})
	b.Run("format=flatbuffers/op=decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(flat)))
		var c benchCall
		for b.Loop() {
			if err := benchFBParse(flat, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
}
