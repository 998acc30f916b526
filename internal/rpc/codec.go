package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"unsafe"

	flatbuffers "github.com/google/flatbuffers/go"
)

// Codec encodes and decodes the values of one type for typed methods
// (Method). Its Name goes into the contract: two sides agree on a method
// only if both name the same codecs for it.
//
// Raw, JSON and FlatBuffers are provided; any other encoding (protobuf,
// msgpack, a hand-written one) plugs in by implementing these three
// methods, without the library depending on it.
type Codec[T any] interface {
	// Name names the encoding and the type, e.g. "json:api.Greeting".
	Name() string
	// Append appends the encoding of v to dst and returns the extended
	// slice.
	Append(dst []byte, v T) ([]byte, error)
	// Decode decodes data, which came from the peer: it must validate
	// what it reads and return an error, never panic, on bad input. The
	// value may refer to data (Raw and FlatBuffers values do), so it is
	// valid only as long as data is: see Method's call forms.
	Decode(data []byte) (T, error)
}

// ErrDecode reports a typed method's request or reply that its codec could
// not decode.
var ErrDecode = errors.New("protocol: cannot decode")

// direct is implemented by codecs whose encoding of v is a byte slice that
// already exists (Raw's v itself, a finished FlatBuffers buffer): typed
// methods pass it on instead of copying it into a buffer first.
type direct[T any] interface {
	bytesOf(v T) ([]byte, bool)
}

// Raw is the identity codec: the value is the message. Decode returns data
// itself, not a copy.
func Raw() Codec[[]byte] { return rawCodec{} }

type rawCodec struct{}

func (rawCodec) Name() string                                { return "raw" }
func (rawCodec) Append(dst []byte, v []byte) ([]byte, error) { return append(dst, v...), nil }
func (rawCodec) Decode(data []byte) ([]byte, error)          { return data, nil }
func (rawCodec) bytesOf(v []byte) ([]byte, bool)             { return v, true }

// JSON encodes values of T with encoding/json. It allocates on every
// encode and decode: use Raw or FlatBuffers where a call must not.
func JSON[T any]() Codec[T] {
	return jsonCodec[T]{name: "json:" + typeName[T]()}
}

type jsonCodec[T any] struct{ name string }

func (c jsonCodec[T]) Name() string { return c.name }

func (c jsonCodec[T]) Append(dst []byte, v T) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

func (c jsonCodec[T]) Decode(data []byte) (T, error) {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("%w %s: %w", ErrDecode, c.name, err)
	}
	return v, nil
}

// typeName is T's name as reflect spells it ("api.Greeting", "[]uint8").
func typeName[T any]() string {
	return reflect.TypeFor[T]().String()
}

// FlatBuffersTable is what flatc generates for a table type T: *T has Init
// and Table.
type FlatBuffersTable[T any] interface {
	*T
	Init(buf []byte, i flatbuffers.UOffsetT)
	Table() flatbuffers.Table
}

// FlatBuffers is the codec of a flatc-generated table type, used by value
// (rpc.FlatBuffers[api.Greeting]()). Neither side copies or
// allocates: a value is encoded as the finished buffer it was built in or
// read from (it must be the root table of that buffer, as FlatBuffersRoot
// gives), and decoded in place.
//
// Decode checks the root table and its vtable against the buffer's bounds;
// the generated accessors of the fields do not check anything, so a peer
// that is not trusted can still make a field read panic in the handler (the
// Peer turns that into a CodeInternal error) or in the caller.
func FlatBuffers[T any, PT FlatBuffersTable[T]]() Codec[T] {
	return fbCodec[T, PT]{name: "flatbuffers:" + typeName[T](), flat: isBareTable[T, PT]()}
}

// isBareTable reports whether T is laid out as flatc generates it, a struct
// whose only field is a flatbuffers.Table: the codec then reads and sets
// that field directly, as Table and Init would, but without making the
// value escape to the heap (a call through PT does, in generic code).
func isBareTable[T any, PT FlatBuffersTable[T]]() bool {
	var v T
	if unsafe.Sizeof(v) != unsafe.Sizeof(flatbuffers.Table{}) {
		return false
	}
	probe := make([]byte, 8)
	PT(&v).Init(probe, 4)
	t := (*flatbuffers.Table)(unsafe.Pointer(&v))
	return len(t.Bytes) == 8 && &t.Bytes[0] == &probe[0] && t.Pos == 4 && PT(&v).Table().Pos == 4
}

// FlatBuffersRoot returns the root table of a finished buffer
// (builder.FinishedBytes()), without allocating; it does not check buf.
func FlatBuffersRoot[T any, PT FlatBuffersTable[T]](buf []byte) T {
	var v T
	PT(&v).Init(buf, flatbuffers.GetUOffsetT(buf))
	return v
}

type fbCodec[T any, PT FlatBuffersTable[T]] struct {
	name string
	flat bool // see isBareTable
}

func (c fbCodec[T, PT]) Name() string { return c.name }

func (c fbCodec[T, PT]) bytesOf(v T) ([]byte, bool) {
	var t flatbuffers.Table
	if c.flat {
		t = *(*flatbuffers.Table)(unsafe.Pointer(&v))
	} else {
		t = tableOf[T, PT](v)
	}
	if len(t.Bytes) < flatbuffers.SizeUOffsetT || flatbuffers.GetUOffsetT(t.Bytes) != t.Pos {
		return nil, false
	}
	return t.Bytes, true
}

func (c fbCodec[T, PT]) Append(dst []byte, v T) ([]byte, error) {
	b, ok := c.bytesOf(v)
	if !ok {
		return dst, fmt.Errorf("protocol: %s: the table is not the root of a finished buffer", c.name)
	}
	return append(dst, b...), nil
}

func (c fbCodec[T, PT]) Decode(data []byte) (T, error) {
	var v T
	if err := checkRootTable(data); err != nil {
		return v, fmt.Errorf("%w %s: %w", ErrDecode, c.name, err)
	}
	if !c.flat {
		return FlatBuffersRoot[T, PT](data), nil
	}
	*(*flatbuffers.Table)(unsafe.Pointer(&v)) = flatbuffers.Table{Bytes: data, Pos: flatbuffers.GetUOffsetT(data)}
	return v, nil
}

// tableOf is v.Table() (v escapes: see isBareTable).
func tableOf[T any, PT FlatBuffersTable[T]](v T) flatbuffers.Table { return PT(&v).Table() }

// checkRootTable checks that data holds a root table whose vtable lies
// within data, as the generated accessors assume.
func checkRootTable(data []byte) error {
	n := uint64(len(data))
	if n < 8 {
		return errors.New("buffer too short")
	}
	pos := uint64(flatbuffers.GetUOffsetT(data))
	if pos%4 != 0 || pos+4 > n {
		return fmt.Errorf("root table offset %d out of bounds", pos)
	}
	vt := int64(pos) - int64(flatbuffers.GetSOffsetT(data[pos:]))
	if vt < 0 || vt%2 != 0 || uint64(vt)+4 > n {
		return fmt.Errorf("vtable offset %d out of bounds", vt)
	}
	vlen := uint64(flatbuffers.GetVOffsetT(data[vt:]))
	tlen := uint64(flatbuffers.GetVOffsetT(data[vt+2:]))
	if vlen < 4 || vlen%2 != 0 || uint64(vt)+vlen > n || pos+tlen > n {
		return errors.New("vtable or table runs past the buffer")
	}
	for i := uint64(4); i < vlen; i += 2 {
		if f := uint64(flatbuffers.GetVOffsetT(data[uint64(vt)+i:])); f != 0 && f >= tlen {
			return fmt.Errorf("field at offset %d outside its table of %d bytes", f, tlen)
		}
	}
	return nil
}
