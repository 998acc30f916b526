package handshake

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

var (
	contractA = []byte{0xaa, 0x01, 0x02}
	contractB = []byte{0xbb, 0x03, 0x04}
)

func basePolicy() *Policy {
	return &Policy{
		Shm:          true,
		Compressions: []Compression{CompressionZstd, CompressionLZ4},
		MaxMessage:   64 << 20,
		RingSize:     1 << 20,
		Contract:     contractA,
		Token:        []byte("s3cret"),
		Name:         "listener", Version: "2.0",
		Constants: map[string]string{"k": "v"},
	}
}

func baseHello() *Hello {
	return &Hello{
		MinVersion: 1, MaxVersion: 1, Shm: true,
		Compressions: []Compression{CompressionLZ4, CompressionZstd},
		Contract:     contractA,
		Token:        []byte("s3cret"),
		Name:         "dialler", Version: "1.0",
	}
}

func TestSelect(t *testing.T) {
	type want struct {
		reason      Reason // 0: accept
		sentinel    error
		transport   Transport
		compression Compression
		ringSize    uint32
		maxMessage  uint64
		msgHas      []string
		msgHasNot   []string
	}
	cases := []struct {
		name string
		p    func(*Policy)
		h    func(*Hello)
		want want
	}{
		{name: "shm when both can", want: want{transport: TransportShm, ringSize: 1 << 20, maxMessage: 64 << 20}},
		{name: "framed when dialler cannot map", h: func(h *Hello) { h.Shm = false },
			want: want{transport: TransportFramed, compression: CompressionZstd, maxMessage: 64 << 20}},
		{name: "framed when listener cannot map", p: func(p *Policy) { p.Shm = false },
			want: want{transport: TransportFramed, compression: CompressionZstd, maxMessage: 64 << 20}},
		{name: "listener's first compression the dialler offered", p: func(p *Policy) { p.Shm = false },
			h:    func(h *Hello) { h.Compressions = []Compression{CompressionLZ4} },
			want: want{transport: TransportFramed, compression: CompressionLZ4, maxMessage: 64 << 20}},
		{name: "no common compression", p: func(p *Policy) { p.Shm = false; p.Compressions = []Compression{CompressionZstd} },
			h:    func(h *Hello) { h.Compressions = []Compression{CompressionLZ4, 77} },
			want: want{transport: TransportFramed, compression: CompressionNone, maxMessage: 64 << 20}},
		{name: "listener prefers none", p: func(p *Policy) { p.Shm = false; p.Compressions = []Compression{CompressionNone, CompressionLZ4} },
			want: want{transport: TransportFramed, compression: CompressionNone, maxMessage: 64 << 20}},
		{name: "dialler offers nothing", p: func(p *Policy) { p.Shm = false }, h: func(h *Hello) { h.Compressions = nil },
			want: want{transport: TransportFramed, compression: CompressionNone, maxMessage: 64 << 20}},
		{name: "unknown offers ignored", p: func(p *Policy) { p.Shm = false }, h: func(h *Hello) { h.Compressions = []Compression{200, CompressionZstd} },
			want: want{transport: TransportFramed, compression: CompressionZstd, maxMessage: 64 << 20}},
		{name: "no compression on shm", h: func(h *Hello) { h.Compressions = []Compression{CompressionZstd} },
			want: want{transport: TransportShm, compression: CompressionNone, ringSize: 1 << 20, maxMessage: 64 << 20}},
		{name: "dialler's smaller max message", h: func(h *Hello) { h.MaxMessage = 1000 },
			want: want{transport: TransportShm, ringSize: 1 << 20, maxMessage: 1000}},
		{name: "listener's smaller max message", h: func(h *Hello) { h.MaxMessage = 1 << 40 },
			want: want{transport: TransportShm, ringSize: 1 << 20, maxMessage: 64 << 20}},
		{name: "defaults", p: func(p *Policy) { p.MaxMessage, p.RingSize = 0, 0 },
			want: want{transport: TransportShm, ringSize: DefaultRingSize, maxMessage: DefaultMaxMessage}},
		{name: "no token required", p: func(p *Policy) { p.Token = nil }, h: func(h *Hello) { h.Token = []byte("anything") },
			want: want{transport: TransportShm, ringSize: 1 << 20, maxMessage: 64 << 20}},
		{name: "empty contracts match", p: func(p *Policy) { p.Contract = nil }, h: func(h *Hello) { h.Contract = nil },
			want: want{transport: TransportShm, ringSize: 1 << 20, maxMessage: 64 << 20}},

		{name: "wrong token", h: func(h *Hello) { h.Token = []byte("s3creT") },
			want: want{reason: ReasonUnauthorized, sentinel: ErrUnauthorized, msgHasNot: []string{"s3cret", fmt.Sprintf("%x", "s3cret")}}},
		{name: "token prefix", h: func(h *Hello) { h.Token = []byte("s3cre") },
			want: want{reason: ReasonUnauthorized, sentinel: ErrUnauthorized, msgHasNot: []string{"s3cret"}}},
		{name: "missing token", h: func(h *Hello) { h.Token = nil },
			want: want{reason: ReasonUnauthorized, sentinel: ErrUnauthorized, msgHasNot: []string{"s3cret"}}},
		{name: "token checked before version", h: func(h *Hello) { h.Token = nil; h.MinVersion, h.MaxVersion = 5, 9 },
			want: want{reason: ReasonUnauthorized, sentinel: ErrUnauthorized, msgHasNot: []string{"1..1"}}},
		{name: "token checked before contract", h: func(h *Hello) { h.Token = []byte("x"); h.Contract = contractB },
			want: want{reason: ReasonUnauthorized, sentinel: ErrUnauthorized, msgHasNot: []string{"aa0102"}}},
		{name: "no common version", h: func(h *Hello) { h.MinVersion, h.MaxVersion = 2, 4 },
			want: want{reason: ReasonVersion, sentinel: ErrVersion, msgHas: []string{"2..4", "1..1"}}},
		{name: "contract mismatch", h: func(h *Hello) { h.Contract = contractB },
			want: want{reason: ReasonContract, sentinel: ErrContractMismatch, msgHas: []string{"bb0304", "aa0102"}}},
		{name: "dialler without contract", h: func(h *Hello) { h.Contract = nil },
			want: want{reason: ReasonContract, sentinel: ErrContractMismatch, msgHas: []string{"dialler contract none", "aa0102"}}},
		{name: "malformed hello", h: func(h *Hello) { h.MinVersion = 0 },
			want: want{reason: ReasonMalformed, sentinel: ErrMalformed}},
		{name: "hello over bounds", h: func(h *Hello) { h.Name = strings.Repeat("n", MaxString+1) },
			want: want{reason: ReasonMalformed, sentinel: ErrMalformed}},
		{name: "token checked before the policy", p: func(p *Policy) { p.RingSize = 3000 }, h: func(h *Hello) { h.Token = nil },
			want: want{reason: ReasonUnauthorized, sentinel: ErrUnauthorized}},
		{name: "bad policy", p: func(p *Policy) { p.RingSize = 3000 },
			want: want{reason: ReasonUnavailable, sentinel: ErrRefused, msgHasNot: []string{"3000"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, h := basePolicy(), baseHello()
			if tc.p != nil {
				tc.p(p)
			}
			if tc.h != nil {
				tc.h(h)
			}
			a, r := Select(p, h)
			if (a == nil) == (r == nil) {
				t.Fatalf("Select = %v, %v: want exactly one", a, r)
			}
			if tc.want.reason != 0 {
				if r == nil {
					t.Fatalf("accepted %+v, want refusal %v", a, tc.want.reason)
				}
				if r.Reason != tc.want.reason {
					t.Fatalf("reason %v (%q), want %v", r.Reason, r.Message, tc.want.reason)
				}
				err := r.Err()
				if !errors.Is(err, tc.want.sentinel) {
					t.Fatalf("Err() = %v, want %v", err, tc.want.sentinel)
				}
				for _, s := range tc.want.msgHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("%q does not name %q", err, s)
					}
				}
				for _, s := range tc.want.msgHasNot {
					if strings.Contains(err.Error(), s) {
						t.Errorf("%q reveals %q", err, s)
					}
				}
				if _, err := Encode(r); err != nil {
					t.Fatalf("refusal does not encode: %v", err)
				}
				return
			}
			if r != nil {
				t.Fatalf("refused: %v", r.Err())
			}
			w := tc.want
			if a.Version != 1 || a.Transport != w.transport || a.Compression != w.compression || a.RingSize != w.ringSize || a.MaxMessage != w.maxMessage {
				t.Fatalf("got %+v, want %+v", a, w)
			}
			if !reflect.DeepEqual(a.Contract, p.Contract) && !(len(a.Contract) == 0 && len(p.Contract) == 0) {
				t.Fatalf("accept contract %x, want %x", a.Contract, p.Contract)
			}
			if a.Name != p.Name || a.AppVersion != p.Version || !reflect.DeepEqual(a.Constants, p.Constants) {
				t.Fatalf("accept identity %q %q %v, want the policy's", a.Name, a.AppVersion, a.Constants)
			}
			// What Select chooses, Check accepts.
			if err := Check(h, a); err != nil {
				t.Fatalf("Check rejects Select's choice: %v", err)
			}
			if _, err := Encode(a); err != nil {
				t.Fatalf("accept does not encode: %v", err)
			}
		})
	}
}

func TestSelectDoesNotShareMemory(t *testing.T) {
	p, h := basePolicy(), baseHello()
	a, _ := Select(p, h)
	a.Contract[0] ^= 0xff
	a.Constants["k"] = "changed"
	if p.Contract[0] != 0xaa || p.Constants["k"] != "v" {
		t.Fatal("the Accept shares memory with the Policy")
	}
}

func TestHighestCommon(t *testing.T) {
	for _, tc := range []struct {
		aMin, aMax, bMin, bMax, want uint16
		ok                           bool
	}{
		{1, 1, 1, 1, 1, true},
		{1, 5, 3, 9, 5, true},
		{3, 9, 1, 5, 5, true},
		{1, 9, 4, 6, 6, true},
		{1, 2, 3, 4, 0, false},
		{5, 6, 1, 4, 0, false},
		{1, math.MaxUint16, math.MaxUint16, math.MaxUint16, math.MaxUint16, true},
	} {
		got, ok := highestCommon(tc.aMin, tc.aMax, tc.bMin, tc.bMax)
		if got != tc.want || ok != tc.ok {
			t.Errorf("highestCommon(%d..%d, %d..%d) = %d, %t; want %d, %t", tc.aMin, tc.aMax, tc.bMin, tc.bMax, got, ok, tc.want, tc.ok)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := (&Policy{}).Validate(); err != nil {
		t.Fatalf("zero Policy: %v", err)
	}
	if err := basePolicy().Validate(); err != nil {
		t.Fatalf("base policy: %v", err)
	}
	bad := map[string]func(*Policy){
		"versions beyond the build": func(p *Policy) { p.MaxVersion = MaxVersion + 1 },
		"min over max":              func(p *Policy) { p.MinVersion, p.MaxVersion = 2, 1 },
		"unknown compression":       func(p *Policy) { p.Compressions = []Compression{9} },
		"too many compressions":     func(p *Policy) { p.Compressions = make([]Compression, MaxCompressions+1) },
		"ring not a power of two":   func(p *Policy) { p.RingSize = 3 << 20 },
		"ring too small":            func(p *Policy) { p.RingSize = MinRingSize / 2 },
		"ring too large":            func(p *Policy) { p.RingSize = MaxRingSize * 2 },
		"token too long":            func(p *Policy) { p.Token = make([]byte, MaxToken+1) },
		"contract too long":         func(p *Policy) { p.Contract = make([]byte, MaxContract+1) },
		"name too long":             func(p *Policy) { p.Name = strings.Repeat("x", MaxString+1) },
		"max message over int":      func(p *Policy) { p.MaxMessage = math.MaxUint64 },
		"constants too large": func(p *Policy) {
			p.Constants = map[string]string{}
			for i := range 20 {
				p.Constants[fmt.Sprint(i)] = strings.Repeat("v", MaxConstantValue)
			}
		},
	}
	for name, f := range bad {
		p := basePolicy()
		f(p)
		if err := p.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Validate = %v, want ErrConfig", name, err)
		}
		// (A hello cannot carry a token over MaxToken, so that policy refuses
		// as unauthorized first.)
		if _, r := Select(p, baseHello()); r == nil || (r.Reason != ReasonUnavailable && !(name == "token too long" && r.Reason == ReasonUnauthorized)) {
			t.Errorf("%s: Select did not refuse with unavailable: %v", name, r)
		}
	}
	var nilPolicy *Policy
	if err := nilPolicy.Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("nil policy: %v", err)
	}
	if _, r := Select(basePolicy(), nil); r == nil || r.Reason != ReasonMalformed {
		t.Errorf("nil hello: %v", r)
	}
}

func TestCheck(t *testing.T) {
	good := func() *Accept {
		return &Accept{Version: 1, Transport: TransportShm, RingSize: 1 << 20, MaxMessage: 1 << 20, Contract: contractA}
	}
	framed := func(c Compression) func(*Accept) {
		return func(a *Accept) { a.Transport, a.RingSize, a.Compression = TransportFramed, 0, c }
	}
	cases := []struct {
		name     string
		h        func(*Hello)
		a        func(*Accept)
		sentinel error // nil: accepted
		has      []string
	}{
		{name: "shm"},
		{name: "framed none", a: framed(CompressionNone)},
		{name: "framed offered compression", a: framed(CompressionZstd)},
		{name: "max message at the dialler's", h: func(h *Hello) { h.MaxMessage = 1 << 20 }},

		{name: "version below range", h: func(h *Hello) { h.MinVersion, h.MaxVersion = 2, 3 }, sentinel: ErrVersion, has: []string{"version 1", "2..3"}},
		{name: "version above range", a: func(a *Accept) { a.Version = 2 }, sentinel: ErrVersion},
		{name: "contract mismatch", a: func(a *Accept) { a.Contract = contractB }, sentinel: ErrContractMismatch, has: []string{"aa0102", "bb0304"}},
		{name: "contract missing", a: func(a *Accept) { a.Contract = nil }, sentinel: ErrContractMismatch, has: []string{"aa0102", "listener contract none"}},
		{name: "shm not offered", h: func(h *Hello) { h.Shm = false }, sentinel: ErrMalformed},
		{name: "compression on shm", h: func(h *Hello) { h.Compressions = []Compression{CompressionLZ4} }, a: func(a *Accept) { a.Compression = CompressionLZ4 }, sentinel: ErrMalformed},
		{name: "ring size zero", a: func(a *Accept) { a.RingSize = 0 }, sentinel: ErrMalformed},
		{name: "ring size not a power of two", a: func(a *Accept) { a.RingSize = 3 << 10 }, sentinel: ErrMalformed},
		{name: "ring size too big", a: func(a *Accept) { a.RingSize = 1 << 31 }, sentinel: ErrMalformed},
		{name: "ring size on framed", a: func(a *Accept) { a.Transport = TransportFramed }, sentinel: ErrMalformed},
		{name: "compression not offered", h: func(h *Hello) { h.Compressions = []Compression{CompressionLZ4} }, a: framed(CompressionZstd), sentinel: ErrMalformed},
		{name: "unknown compression", a: framed(5), sentinel: ErrMalformed},
		{name: "unknown transport", a: func(a *Accept) { a.Transport = 9 }, sentinel: ErrMalformed},
		{name: "max message zero", a: func(a *Accept) { a.MaxMessage = 0 }, sentinel: ErrMalformed},
		{name: "max message over the dialler's", h: func(h *Hello) { h.MaxMessage = 1<<20 - 1 }, sentinel: ErrMalformed},
		{name: "max message over int", a: func(a *Accept) { a.MaxMessage = math.MaxUint64 }, sentinel: ErrMalformed},
		{name: "accept over bounds", a: func(a *Accept) { a.Name = strings.Repeat("n", MaxString+1) }, sentinel: ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, a := baseHello(), good()
			if tc.h != nil {
				tc.h(h)
			}
			if tc.a != nil {
				tc.a(a)
			}
			err := Check(h, a)
			if tc.sentinel == nil {
				if err != nil {
					t.Fatalf("Check = %v", err)
				}
				return
			}
			if !errors.Is(err, tc.sentinel) {
				t.Fatalf("Check = %v, want %v", err, tc.sentinel)
			}
			for _, s := range tc.has {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%q does not name %q", err, s)
				}
			}
			// The dialler tells the listener why, and both see the same sentinel.
			r := RefusalFor(err)
			if got := r.Err(); !errors.Is(got, tc.sentinel) {
				t.Fatalf("RefusalFor(%v).Err() = %v", err, got)
			}
			if _, err := Encode(r); err != nil {
				t.Fatalf("refusal does not encode: %v", err)
			}
		})
	}
	if err := Check(nil, good()); !errors.Is(err, ErrMalformed) {
		t.Errorf("nil hello: %v", err)
	}
	if err := Check(baseHello(), nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("nil accept: %v", err)
	}
}

func TestRefuseErr(t *testing.T) {
	for _, tc := range []struct {
		reason   Reason
		sentinel error
	}{
		{ReasonVersion, ErrVersion},
		{ReasonContract, ErrContractMismatch},
		{ReasonUnauthorized, ErrUnauthorized},
		{ReasonMalformed, ErrMalformed},
		{ReasonUnavailable, ErrRefused},
		{ReasonOther, ErrRefused},
		{0, ErrRefused},
		{250, ErrRefused},
	} {
		for _, msg := range []string{"", "details here"} {
			err := (&Refuse{Reason: tc.reason, Message: msg}).Err()
			if !errors.Is(err, tc.sentinel) {
				t.Errorf("%v: Err() = %v, want %v", tc.reason, err, tc.sentinel)
			}
			if !strings.Contains(err.Error(), msg) {
				t.Errorf("%v: %q lacks the message", tc.reason, err)
			}
			for _, other := range []error{ErrVersion, ErrContractMismatch, ErrUnauthorized, ErrMalformed, ErrRefused} {
				if other != tc.sentinel && errors.Is(err, other) {
					t.Errorf("%v: %v also matches %v", tc.reason, err, other)
				}
			}
		}
	}
	// A peer's message cannot inject control characters into logs.
	err := (&Refuse{Reason: ReasonOther, Message: "a\nfake log line\x1b[31m\x00"}).Err()
	if strings.ContainsAny(err.Error(), "\n\x1b\x00") {
		t.Errorf("control characters kept: %q", err)
	}
}

func TestNewRefuseTruncates(t *testing.T) {
	for _, unit := range []string{"x", "é", "€", "😀"} {
		for extra := range 5 {
			r := NewRefuse(ReasonOther, "%s%s", strings.Repeat(unit, MaxString/len(unit)), strings.Repeat("y", extra))
			if len(r.Message) > MaxString || !utf8.ValidString(r.Message) {
				t.Fatalf("%q: %d bytes, valid %t", unit, len(r.Message), utf8.ValidString(r.Message))
			}
			if _, err := Encode(r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if r := NewRefuse(ReasonOther, "bad \xff utf8"); !utf8.ValidString(r.Message) {
		t.Fatalf("invalid UTF-8 kept: %q", r.Message)
	}
	if r := NewRefuse(ReasonVersion, "short"); r.Message != "short" || r.Reason != ReasonVersion {
		t.Fatalf("got %+v", r)
	}
}

func TestRefusalFor(t *testing.T) {
	for err, want := range map[error]Reason{
		fmt.Errorf("x: %w", ErrVersion):          ReasonVersion,
		fmt.Errorf("x: %w", ErrContractMismatch): ReasonContract,
		fmt.Errorf("x: %w", ErrUnauthorized):     ReasonUnauthorized,
		fmt.Errorf("x: %w", ErrMalformed):        ReasonMalformed,
		errors.New("mapping failed"):             ReasonOther,
	} {
		r := RefusalFor(err)
		if r.Reason != want || !strings.Contains(r.Message, err.Error()) {
			t.Errorf("RefusalFor(%v) = %+v, want reason %v", err, r, want)
		}
	}
	if r := RefusalFor(nil); r.Reason != ReasonOther {
		t.Errorf("RefusalFor(nil) = %+v", r)
	}
}
