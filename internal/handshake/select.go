package handshake

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"slices"
)

// Policy is the listener's rules and offer, the input of Select.
type Policy struct {
	// MinVersion and MaxVersion restrict the protocol versions; 0 means the
	// package's MinVersion or MaxVersion. They must lie within what this build
	// speaks.
	MinVersion, MaxVersion uint16
	// Shm says this side can create shared memory for the connection.
	Shm bool
	// Compressions accepted for the framed transport, in this side's
	// preference order. CompressionNone in the list means "prefer none".
	Compressions []Compression
	// MaxMessage is the largest message this side accepts; 0 means
	// DefaultMaxMessage.
	MaxMessage uint64
	// RingSize is the data capacity of each ring (a power of two in
	// [MinRingSize, MaxRingSize]); 0 means DefaultRingSize.
	RingSize uint32
	// Contract is the hash of this side's contract; the Hello's must equal it.
	Contract []byte
	// Token, if not empty, must equal the Hello's (compared in constant time).
	Token []byte
	// Name, Version and Constants describe this endpoint to the dialler.
	Name, Version string
	Constants     map[string]string
}

// String describes p for logs, with the token redacted.
func (p *Policy) String() string {
	return fmt.Sprintf("policy{versions %d..%d shm=%t compressions=%v max_message=%d ring_size=%d contract=%s token=<%d bytes> name=%q version=%q constants=%d}",
		p.MinVersion, p.MaxVersion, p.Shm, p.Compressions, p.MaxMessage, p.RingSize, hexOrNone(p.Contract), len(p.Token), p.Name, p.Version, len(p.Constants))
}

// Validate reports (as ErrConfig) a Policy Select cannot serve with: versions
// outside what this build speaks, an unknown compression, a bad ring size, or
// fields over the bounds of an Accept. Listeners should call it up front;
// under an invalid Policy, Select refuses (ReasonUnavailable).
func (p *Policy) Validate() error {
	_, err := p.resolve()
	return err
}

// resolve applies the defaults and validates the result.
func (p *Policy) resolve() (*Policy, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: nil policy", ErrConfig)
	}
	r := *p
	if r.MinVersion == 0 {
		r.MinVersion = MinVersion
	}
	if r.MaxVersion == 0 {
		r.MaxVersion = MaxVersion
	}
	if r.MaxMessage == 0 {
		r.MaxMessage = DefaultMaxMessage
	}
	if r.RingSize == 0 {
		r.RingSize = DefaultRingSize
	}
	switch {
	case r.MinVersion > r.MaxVersion || r.MinVersion < MinVersion || r.MaxVersion > MaxVersion:
		return nil, fmt.Errorf("%w: versions %d..%d are not within %d..%d", ErrConfig, r.MinVersion, r.MaxVersion, MinVersion, MaxVersion)
	case len(r.Compressions) > MaxCompressions:
		return nil, fmt.Errorf("%w: %d compressions, at most %d", ErrConfig, len(r.Compressions), MaxCompressions)
	case r.MaxMessage > math.MaxInt:
		return nil, fmt.Errorf("%w: max message %d does not fit an int", ErrConfig, r.MaxMessage)
	}
	for _, c := range r.Compressions {
		if !c.known() {
			return nil, fmt.Errorf("%w: unknown compression %v", ErrConfig, c)
		}
	}
	if err := checkRingSize(r.RingSize); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if len(r.Token) > MaxToken {
		return nil, fmt.Errorf("%w: token is %d bytes, at most %d", ErrConfig, len(r.Token), MaxToken)
	}
	// The Accept carries the rest: it must encode.
	if _, err := Encode(r.accept()); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return &r, nil
}

// accept is the Accept template of a resolved policy: the listener's identity.
func (p *Policy) accept() *Accept {
	return &Accept{
		Version:    p.MaxVersion,
		MaxMessage: p.MaxMessage,
		Contract:   cloneBytes(p.Contract),
		Name:       p.Name,
		AppVersion: p.Version,
		Constants:  maps.Clone(p.Constants),
	}
}

// Select is the listener's decision on a Hello: exactly one of the results is
// non-nil. The rules, in order:
//
//   - a Hello out of bounds or with a bad version range: ReasonMalformed;
//   - if p.Token is set, the Hello's token must equal it (constant time, and
//     before anything about the listener is revealed): else ReasonUnauthorized;
//   - the highest version both speak, else ReasonVersion naming both ranges;
//   - equal contracts, else ReasonContract naming both hashes in hex;
//   - shm if both sides can, else framed;
//   - compression: none on shm, else the first of p.Compressions the Hello
//     offered (none if there is no such);
//   - MaxMessage: the smaller of the two non-zero maxima;
//   - the Accept carries the listener's Contract, Name, Version, Constants.
//
// An invalid Policy refuses every Hello that passes the token check with
// ReasonUnavailable and a message that reveals nothing of it (see Validate).
func Select(p *Policy, h *Hello) (*Accept, *Refuse) {
	if h == nil {
		return nil, NewRefuse(ReasonMalformed, "no hello")
	}
	if err := h.validate(); err != nil {
		return nil, NewRefuse(ReasonMalformed, "%v", err)
	}
	if p != nil && len(p.Token) > 0 && !tokenEqual(p.Token, h.Token) {
		if len(h.Token) == 0 {
			return nil, NewRefuse(ReasonUnauthorized, "a token is required")
		}
		return nil, NewRefuse(ReasonUnauthorized, "token rejected")
	}
	rp, err := p.resolve()
	if err != nil {
		return nil, NewRefuse(ReasonUnavailable, "listener is misconfigured")
	}
	v, ok := highestCommon(rp.MinVersion, rp.MaxVersion, h.MinVersion, h.MaxVersion)
	if !ok {
		return nil, NewRefuse(ReasonVersion, "dialler speaks versions %d..%d, listener %d..%d",
			h.MinVersion, h.MaxVersion, rp.MinVersion, rp.MaxVersion)
	}
	if !bytes.Equal(rp.Contract, h.Contract) {
		return nil, NewRefuse(ReasonContract, "%s", contractMessage(h.Contract, rp.Contract))
	}
	a := rp.accept()
	a.Version = v
	if h.MaxMessage != 0 && h.MaxMessage < a.MaxMessage {
		a.MaxMessage = h.MaxMessage
	}
	if rp.Shm && h.Shm {
		a.Transport, a.RingSize = TransportShm, rp.RingSize
		return a, nil
	}
	a.Transport = TransportFramed
	for _, c := range rp.Compressions {
		if c == CompressionNone || slices.Contains(h.Compressions, c) {
			a.Compression = c
			break
		}
	}
	return a, nil
}

// Check is the dialler's verification of the Accept a listener sent for its
// Hello: the version is in the Hello's range (else ErrVersion), the contracts
// are equal (else ErrContractMismatch naming both hashes), and the listener
// chose only what was offered -- shm only if the Hello offered it, with a
// valid ring size and no compression; a compression the Hello offered, or
// none; a MaxMessage that is non-zero, fits an int and is at most the Hello's
// (if it set one). Anything else is ErrMalformed.
func Check(h *Hello, a *Accept) error {
	if h == nil || a == nil {
		return malformed("check: nil hello or accept")
	}
	if err := a.validate(); err != nil {
		return err
	}
	if a.Version < h.MinVersion || a.Version > h.MaxVersion {
		return fmt.Errorf("%w: listener chose version %d, dialler speaks %d..%d", ErrVersion, a.Version, h.MinVersion, h.MaxVersion)
	}
	if !bytes.Equal(h.Contract, a.Contract) {
		return fmt.Errorf("%w: %s", ErrContractMismatch, contractMessage(h.Contract, a.Contract))
	}
	switch a.Transport {
	case TransportShm:
		if !h.Shm {
			return malformed("listener chose shm, which the dialler did not offer")
		}
		if a.Compression != CompressionNone {
			return malformed("listener chose compression %v on shm", a.Compression)
		}
		if err := checkRingSize(a.RingSize); err != nil {
			return malformed("%v", err)
		}
	case TransportFramed:
		if a.RingSize != 0 {
			return malformed("listener sent ring size %d for the framed transport", a.RingSize)
		}
		if a.Compression != CompressionNone && !slices.Contains(h.Compressions, a.Compression) {
			return malformed("listener chose compression %v, which the dialler did not offer", a.Compression)
		}
	}
	switch {
	case a.MaxMessage == 0:
		return malformed("listener sent max message 0")
	case h.MaxMessage != 0 && a.MaxMessage > h.MaxMessage:
		return malformed("listener chose max message %d, over the dialler's %d", a.MaxMessage, h.MaxMessage)
	case a.MaxMessage > math.MaxInt:
		return malformed("listener chose max message %d, which does not fit an int", a.MaxMessage)
	}
	return nil
}

// highestCommon is the highest version in both ranges.
func highestCommon(aMin, aMax, bMin, bMax uint16) (uint16, bool) {
	lo, hi := max(aMin, bMin), min(aMax, bMax)
	if lo > hi {
		return 0, false
	}
	return hi, true
}

// tokenEqual compares hashes in constant time, so neither the token's bytes
// nor its length leak through timing.
func tokenEqual(want, got []byte) bool {
	w, g := sha256.Sum256(want), sha256.Sum256(got)
	return subtle.ConstantTimeCompare(w[:], g[:]) == 1
}

func contractMessage(dialler, listener []byte) string {
	return fmt.Sprintf("dialler contract %s, listener contract %s", hexOrNone(dialler), hexOrNone(listener))
}

func checkRingSize(n uint32) error {
	if n < MinRingSize || n > MaxRingSize || bits.OnesCount32(n) != 1 {
		return fmt.Errorf("ring size %d is not a power of two in [%d, %d]", n, MinRingSize, MaxRingSize)
	}
	return nil
}
