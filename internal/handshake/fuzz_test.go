package handshake

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// FuzzDecode: arbitrary bytes never panic (nor reach Decode's recover); what
// decodes re-encodes, and decoding that gives the same message and bytes.
func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(mustEncode(f, m))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		assertNoBackstop(t, err)
		if err != nil {
			if m != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode = %v, %v: want nil and ErrMalformed", m, err)
			}
			return
		}
		b2, err := Encode(m)
		if err != nil {
			t.Fatalf("decoded %#v does not encode: %v", m, err)
		}
		m2, err := Decode(b2)
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("unstable: %#v became %#v", m, m2)
		}
		if b3, _ := Encode(m2); !bytes.Equal(b2, b3) {
			t.Fatalf("encoding is not deterministic")
		}
	})
}

// FuzzReadMessage: an arbitrary stream never panics, every failure is
// ErrMalformed (the reader only ever says EOF), and a success consumed exactly
// the prefix and the declared payload.
func FuzzReadMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(prefixed(mustEncode(f, m)))
	}
	f.Add([]byte("RWH1\xff\xff\xff\xff"))
	f.Add([]byte("RWH1\x04\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		m, err := ReadMessage(r)
		assertNoBackstop(t, err)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ReadMessage: %v is not ErrMalformed", err)
			}
			return
		}
		used := len(stream) - r.Len()
		payload := stream[PrefixSize:used]
		if want, err := Decode(payload); err != nil || !reflect.DeepEqual(m, want) {
			t.Fatalf("read %#v from %d bytes, Decode of them gives %#v, %v", m, used, want, err)
		}
		if rest, _ := io.ReadAll(r); len(rest) != len(stream)-used {
			t.Fatal("bytes lost after the message")
		}
	})
}

// FuzzSelect: for any decodable Hello and a range of policies, Select returns
// exactly one of accept or refusal; an Accept passes Check and encodes; a
// refusal encodes, maps to a sentinel and never echoes the policy's token.
func FuzzSelect(f *testing.F) {
	for _, m := range sampleMessages() {
		if h, ok := m.(*Hello); ok {
			f.Add(mustEncode(f, h), true, []byte{2, 1}, uint64(0), true, []byte{0xab, 0xab})
			f.Add(mustEncode(f, h), false, []byte{0, 1}, uint64(1000), false, []byte(nil))
		}
	}
	const secret = "fuzz-secret-token"
	f.Fuzz(func(t *testing.T, hello []byte, shm bool, comps []byte, maxMessage uint64, useToken bool, contract []byte) {
		m, err := Decode(hello)
		h, ok := m.(*Hello)
		if err != nil || !ok {
			return
		}
		p := &Policy{Shm: shm, MaxMessage: maxMessage % (1 << 40)}
		for i, c := range comps {
			if i == MaxCompressions {
				break
			}
			p.Compressions = append(p.Compressions, Compression(c%3))
		}
		if useToken {
			p.Token = []byte(secret)
		}
		if len(contract) <= MaxContract {
			p.Contract = contract
		}
		a, r := Select(p, h)
		if (a == nil) == (r == nil) {
			t.Fatalf("Select = %v, %v", a, r)
		}
		if a != nil {
			if err := Check(h, a); err != nil {
				t.Fatalf("Check rejects Select's %+v for %v: %v", a, h, err)
			}
			if _, err := Encode(a); err != nil {
				t.Fatalf("accept does not encode: %v", err)
			}
			return
		}
		if _, err := Encode(r); err != nil {
			t.Fatalf("refusal does not encode: %v", err)
		}
		err = r.Err()
		if !errors.Is(err, ErrVersion) && !errors.Is(err, ErrContractMismatch) && !errors.Is(err, ErrUnauthorized) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("refusal %v matches no sentinel of a valid policy", err)
		}
		if strings.Contains(r.Message, secret) && !bytes.Contains(h.Token, []byte(secret)) {
			t.Fatalf("refusal reveals the token: %q", r.Message)
		}
	})
}
