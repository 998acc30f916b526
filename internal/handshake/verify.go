package handshake

import (
	"fmt"

	"github.com/ringwire/ringwire/internal/fbverify"
	"github.com/ringwire/ringwire/internal/handshake/internal/fb"
)

// The Go FlatBuffers runtime has no verifier and its accessors index the
// buffer directly, so a hostile buffer could make them panic. verifyEnvelope
// checks with package fbverify, before any accessor runs, every table,
// vtable, offset, vector and string that Decode will read. Field layouts below
// mirror handshake.fbs (a field's slot is its index in the table).

type fieldKind uint8

const (
	fScalar fieldKind = iota // inline value of size bytes
	fBytes                   // offset to a [ubyte] vector
	fString                  // offset to a string
	fTables                  // offset to a vector of tables of layout elem
)

type field struct {
	slot int
	kind fieldKind
	size uint64 // fScalar only
	elem *layout
}

type layout struct {
	fields []field
}

var (
	constantLayout = &layout{fields: []field{
		{slot: 0, kind: fString}, // key
		{slot: 1, kind: fString}, // value
	}}
	helloLayout = &layout{fields: []field{
		{slot: 0, kind: fScalar, size: 2}, // min_version
		{slot: 1, kind: fScalar, size: 2}, // max_version
		{slot: 2, kind: fScalar, size: 1}, // shm
		{slot: 3, kind: fBytes},           // compressions
		{slot: 4, kind: fScalar, size: 8}, // max_message
		{slot: 5, kind: fBytes},           // contract
		{slot: 6, kind: fBytes},           // token
		{slot: 7, kind: fString},          // name
		{slot: 8, kind: fString},          // app_version
		{slot: 9, kind: fTables, elem: constantLayout},
	}}
	acceptLayout = &layout{fields: []field{
		{slot: 0, kind: fScalar, size: 2}, // version
		{slot: 1, kind: fScalar, size: 1}, // transport
		{slot: 2, kind: fScalar, size: 1}, // compression
		{slot: 3, kind: fScalar, size: 4}, // ring_size
		{slot: 4, kind: fScalar, size: 8}, // max_message
		{slot: 5, kind: fBytes},           // contract
		{slot: 6, kind: fString},          // name
		{slot: 7, kind: fString},          // app_version
		{slot: 8, kind: fTables, elem: constantLayout},
	}}
	refuseLayout = &layout{fields: []field{
		{slot: 0, kind: fScalar, size: 1}, // reason
		{slot: 1, kind: fString},          // message
	}}
	ackLayout = &layout{}

	bodyLayouts = map[fb.Body]*layout{
		fb.BodyHello:  helloLayout,
		fb.BodyAccept: acceptLayout,
		fb.BodyRefuse: refuseLayout,
		fb.BodyAck:    ackLayout,
	}
)

// verifyEnvelope checks the whole buffer and returns the body's type.
func verifyEnvelope(b []byte) (fb.Body, error) {
	v := fbverify.New(b)
	env, err := v.Root()
	if err != nil {
		return 0, badBuffer(err)
	}
	typeAt, err := env.Field(0, 1)
	if err != nil {
		return 0, badBuffer(err)
	}
	if typeAt == 0 {
		return 0, malformed("envelope without a body type")
	}
	kind := fb.Body(b[typeAt])
	lay, ok := bodyLayouts[kind]
	if !ok {
		return 0, malformed("unknown body type %d", kind)
	}
	bodyAt, err := env.Field(1, 4)
	if err != nil {
		return 0, badBuffer(err)
	}
	if bodyAt == 0 {
		return 0, malformed("envelope without a body")
	}
	body, err := v.Offset(bodyAt)
	if err != nil {
		return 0, badBuffer(err)
	}
	if err := verify(v, body, lay); err != nil {
		return 0, badBuffer(err)
	}
	return kind, nil
}

// badBuffer wraps an fbverify refusal as ErrMalformed.
func badBuffer(err error) error {
	return fmt.Errorf("%w: %w", ErrMalformed, err)
}

// verify checks the table at pos and every field lay declares, recursively.
// Its errors are fbverify's.
func verify(v fbverify.Buffer, pos uint64, lay *layout) error {
	t, err := v.Table(pos)
	if err != nil {
		return err
	}
	for _, f := range lay.fields {
		switch f.kind {
		case fScalar:
			if _, err := t.Field(f.slot, f.size); err != nil {
				return err
			}
		case fBytes, fString:
			if _, _, err := t.Vector(f.slot, 1, f.kind == fString, fbverify.NoLimit); err != nil {
				return err
			}
		case fTables:
			start, count, err := t.Vector(f.slot, 4, false, fbverify.NoLimit)
			if err != nil {
				return err
			}
			for i := range count {
				elem, err := v.Offset(start + 4*i)
				if err != nil {
					return err
				}
				if err := verify(v, elem, f.elem); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
