package handshake

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/ringwire/ringwire/internal/handshake/internal/fb"
)

// Encode returns m as a FlatBuffers Envelope (without the wire prefix). It
// fails with ErrMalformed if a field is over its bound or the result is over
// MaxHandshake.
func Encode(m Message) ([]byte, error) {
	var (
		b    *flatbuffers.Builder
		kind fb.Body
		body flatbuffers.UOffsetT
	)
	switch m := m.(type) {
	case *Hello:
		if m == nil {
			return nil, malformed("encode: nil hello")
		}
		if err := m.validate(); err != nil {
			return nil, err
		}
		b = flatbuffers.NewBuilder(256 + len(m.Contract) + len(m.Token) + len(m.Name) + len(m.Version))
		kind, body = fb.BodyHello, encodeHello(b, m)
	case *Accept:
		if m == nil {
			return nil, malformed("encode: nil accept")
		}
		if err := m.validate(); err != nil {
			return nil, err
		}
		b = flatbuffers.NewBuilder(256 + len(m.Contract) + len(m.Name) + len(m.AppVersion))
		kind, body = fb.BodyAccept, encodeAccept(b, m)
	case *Refuse:
		if m == nil {
			return nil, malformed("encode: nil refuse")
		}
		if err := m.validate(); err != nil {
			return nil, err
		}
		b = flatbuffers.NewBuilder(64 + len(m.Message))
		msg := createString(b, m.Message)
		fb.RefuseStart(b)
		fb.RefuseAddReason(b, fb.Reason(m.Reason))
		if msg != 0 {
			fb.RefuseAddMessage(b, msg)
		}
		kind, body = fb.BodyRefuse, fb.RefuseEnd(b)
	case *Ack:
		if m == nil {
			return nil, malformed("encode: nil ack")
		}
		b = flatbuffers.NewBuilder(32)
		fb.AckStart(b)
		kind, body = fb.BodyAck, fb.AckEnd(b)
	default:
		return nil, malformed("encode: unknown message type %T", m)
	}
	fb.EnvelopeStart(b)
	fb.EnvelopeAddBodyType(b, kind)
	fb.EnvelopeAddBody(b, body)
	b.Finish(fb.EnvelopeEnd(b))
	out := b.FinishedBytes()
	if len(out) > MaxHandshake {
		return nil, malformed("encode: %v is %d bytes, at most %d", kind, len(out), MaxHandshake)
	}
	return out, nil
}

func encodeHello(b *flatbuffers.Builder, h *Hello) flatbuffers.UOffsetT {
	var comps flatbuffers.UOffsetT
	if len(h.Compressions) > 0 {
		fb.HelloStartCompressionsVector(b, len(h.Compressions))
		for _, c := range slices.Backward(h.Compressions) {
			b.PrependByte(byte(c))
		}
		comps = b.EndVector(len(h.Compressions))
	}
	contract := createBytes(b, h.Contract)
	token := createBytes(b, h.Token)
	name := createString(b, h.Name)
	version := createString(b, h.Version)
	consts := encodeConstants(b, h.Constants, fb.HelloStartConstantsVector)

	fb.HelloStart(b)
	fb.HelloAddMaxMessage(b, h.MaxMessage)
	addOffset(b, fb.HelloAddCompressions, comps)
	addOffset(b, fb.HelloAddContract, contract)
	addOffset(b, fb.HelloAddToken, token)
	addOffset(b, fb.HelloAddName, name)
	addOffset(b, fb.HelloAddAppVersion, version)
	addOffset(b, fb.HelloAddConstants, consts)
	fb.HelloAddMinVersion(b, h.MinVersion)
	fb.HelloAddMaxVersion(b, h.MaxVersion)
	fb.HelloAddShm(b, h.Shm)
	return fb.HelloEnd(b)
}

func encodeAccept(b *flatbuffers.Builder, a *Accept) flatbuffers.UOffsetT {
	contract := createBytes(b, a.Contract)
	name := createString(b, a.Name)
	version := createString(b, a.AppVersion)
	consts := encodeConstants(b, a.Constants, fb.AcceptStartConstantsVector)

	fb.AcceptStart(b)
	fb.AcceptAddMaxMessage(b, a.MaxMessage)
	fb.AcceptAddRingSize(b, a.RingSize)
	addOffset(b, fb.AcceptAddContract, contract)
	addOffset(b, fb.AcceptAddName, name)
	addOffset(b, fb.AcceptAddAppVersion, version)
	addOffset(b, fb.AcceptAddConstants, consts)
	fb.AcceptAddVersion(b, a.Version)
	fb.AcceptAddTransport(b, fb.Transport(a.Transport))
	fb.AcceptAddCompression(b, fb.Compression(a.Compression))
	return fb.AcceptEnd(b)
}

// encodeConstants writes the map sorted by key, so equal maps encode equally.
func encodeConstants(b *flatbuffers.Builder, m map[string]string, start func(*flatbuffers.Builder, int) flatbuffers.UOffsetT) flatbuffers.UOffsetT {
	if len(m) == 0 {
		return 0
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tables := make([]flatbuffers.UOffsetT, len(keys))
	for i, k := range keys {
		key := b.CreateString(k)
		value := createString(b, m[k])
		fb.ConstantStart(b)
		fb.ConstantAddKey(b, key)
		addOffset(b, fb.ConstantAddValue, value)
		tables[i] = fb.ConstantEnd(b)
	}
	start(b, len(tables))
	for _, t := range slices.Backward(tables) {
		b.PrependUOffsetT(t)
	}
	return b.EndVector(len(tables))
}

// Empty strings and byte vectors are left out of the buffer; they decode as
// empty (nil) again.
func createString(b *flatbuffers.Builder, s string) flatbuffers.UOffsetT {
	if s == "" {
		return 0
	}
	return b.CreateString(s)
}

func createBytes(b *flatbuffers.Builder, v []byte) flatbuffers.UOffsetT {
	if len(v) == 0 {
		return 0
	}
	return b.CreateByteVector(v)
}

func addOffset(b *flatbuffers.Builder, add func(*flatbuffers.Builder, flatbuffers.UOffsetT), off flatbuffers.UOffsetT) {
	if off != 0 {
		add(b, off)
	}
}

// Decode parses one Envelope produced by Encode (or any conforming FlatBuffers
// writer). Anything invalid -- a structure that points outside b, a field over
// its bound, an unknown body type -- is ErrMalformed. It never panics, and the
// returned message does not alias b.
func Decode(b []byte) (m Message, err error) {
	if len(b) > MaxHandshake {
		return nil, malformed("message is %d bytes, at most %d", len(b), MaxHandshake)
	}
	kind, err := verifyEnvelope(b)
	if err != nil {
		return nil, err
	}
	// The verifier checked every offset the generated accessors follow; this
	// is a backstop so that a gap in it is an error, not a crash.
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, malformed("undecodable message (%v)", r)
		}
	}()
	env := fb.GetRootAsEnvelope(b, 0)
	var t flatbuffers.Table
	if !env.Body(&t) {
		return nil, malformed("envelope without a body")
	}
	switch kind {
	case fb.BodyHello:
		var h fb.Hello
		h.Init(t.Bytes, t.Pos)
		out, err := decodeHello(&h)
		if err != nil {
			return nil, err
		}
		return out, nil
	case fb.BodyAccept:
		var a fb.Accept
		a.Init(t.Bytes, t.Pos)
		out, err := decodeAccept(&a)
		if err != nil {
			return nil, err
		}
		return out, nil
	case fb.BodyRefuse:
		var r fb.Refuse
		r.Init(t.Bytes, t.Pos)
		out := &Refuse{Reason: Reason(r.Reason()), Message: string(r.Message())}
		if err := out.validate(); err != nil {
			return nil, err
		}
		return out, nil
	case fb.BodyAck:
		return &Ack{}, nil
	}
	return nil, malformed("unknown body type %d", kind)
}

func decodeHello(t *fb.Hello) (*Hello, error) {
	h := &Hello{
		MinVersion: t.MinVersion(),
		MaxVersion: t.MaxVersion(),
		Shm:        t.Shm(),
		MaxMessage: t.MaxMessage(),
	}
	if n := t.CompressionsLength(); n > MaxCompressions {
		return nil, malformed("hello: %d compressions offered, at most %d", n, MaxCompressions)
	} else if n > 0 {
		h.Compressions = make([]Compression, n)
		for i := range n {
			h.Compressions[i] = Compression(t.Compressions(i))
		}
	}
	h.Contract = cloneBytes(t.ContractBytes())
	h.Token = cloneBytes(t.TokenBytes())
	h.Name = string(t.Name())
	h.Version = string(t.AppVersion())
	consts, err := decodeConstants("hello", t.ConstantsLength(), t.Constants)
	if err != nil {
		return nil, err
	}
	h.Constants = consts
	if err := h.validate(); err != nil {
		return nil, err
	}
	return h, nil
}

func decodeAccept(t *fb.Accept) (*Accept, error) {
	a := &Accept{
		Version:     t.Version(),
		Transport:   Transport(t.Transport()),
		Compression: Compression(t.Compression()),
		RingSize:    t.RingSize(),
		MaxMessage:  t.MaxMessage(),
		Contract:    cloneBytes(t.ContractBytes()),
		Name:        string(t.Name()),
		AppVersion:  string(t.AppVersion()),
	}
	consts, err := decodeConstants("accept", t.ConstantsLength(), t.Constants)
	if err != nil {
		return nil, err
	}
	a.Constants = consts
	if err := a.validate(); err != nil {
		return nil, err
	}
	return a, nil
}

// decodeConstants bounds the count before allocating and rejects duplicate
// keys (a map would silently keep one of them).
func decodeConstants(what string, n int, at func(*fb.Constant, int) bool) (map[string]string, error) {
	if n == 0 {
		return nil, nil
	}
	if n > MaxConstants {
		return nil, malformed("%s: %d constants, at most %d", what, n, MaxConstants)
	}
	m := make(map[string]string, n)
	var c fb.Constant
	for i := range n {
		if !at(&c, i) {
			return nil, malformed("%s: constant %d missing", what, i)
		}
		k, v := c.Key(), c.Value()
		if len(k) > MaxConstantKey || len(v) > MaxConstantValue {
			return nil, malformed("%s: constant %d is over its bounds (key %d bytes, value %d bytes)", what, i, len(k), len(v))
		}
		key := string(k)
		if _, dup := m[key]; dup {
			return nil, malformed("%s: constant %q appears twice", what, truncate(key, 64))
		}
		m[key] = string(v)
	}
	return m, nil
}

func cloneBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return slices.Clone(b)
}

// WriteMessage writes m with its wire prefix in a single Write call.
func WriteMessage(w io.Writer, m Message) error {
	payload, err := Encode(m)
	if err != nil {
		return err
	}
	buf := make([]byte, PrefixSize+len(payload))
	copy(buf, Magic)
	binary.LittleEndian.PutUint32(buf[len(Magic):], uint32(len(payload)))
	copy(buf[PrefixSize:], payload)
	n, err := w.Write(buf)
	if err == nil && n < len(buf) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("negotiate: writing handshake message: %w", err)
	}
	return nil
}

// ReadMessage reads one prefixed message from r. A bad magic, a declared length
// of 0 or over MaxHandshake (checked before anything is allocated), a stream
// that ends early, or an undecodable payload is ErrMalformed (an early end also
// matches io.EOF or io.ErrUnexpectedEOF). Other read errors, such as a
// deadline, are returned wrapped as they are. ReadMessage reads exactly one
// message's bytes, never past it.
func ReadMessage(r io.Reader) (Message, error) {
	var prefix [PrefixSize]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return nil, readError("prefix", err)
	}
	if string(prefix[:len(Magic)]) != Magic {
		return nil, malformed("bad magic %q (want %q)", prefix[:len(Magic)], Magic)
	}
	n := binary.LittleEndian.Uint32(prefix[len(Magic):])
	if n == 0 || n > MaxHandshake {
		return nil, malformed("declared length %d is not in [1, %d]", n, MaxHandshake)
	}
	// The buffer grows only as bytes arrive (doubling from 512): a peer that
	// declares the maximum and sends little makes us hold little.
	payload, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err == nil && len(payload) < int(n) {
		err = io.ErrUnexpectedEOF // the prefix promised more
	}
	if err != nil {
		return nil, readError("payload", err)
	}
	return Decode(payload)
}

func readError(part string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: stream ended in the %s: %w", ErrMalformed, part, err)
	}
	return fmt.Errorf("negotiate: reading handshake %s: %w", part, err)
}
