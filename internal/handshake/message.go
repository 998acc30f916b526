package handshake

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Compression is a per-message compression of the framed transport.
type Compression uint8

// Compressions this build knows. A Hello may offer values beyond these (from a
// newer peer); they are ignored by Select.
const (
	CompressionNone Compression = iota
	CompressionLZ4
	CompressionZstd
)

func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "none"
	case CompressionLZ4:
		return "lz4"
	case CompressionZstd:
		return "zstd"
	}
	return fmt.Sprintf("Compression(%d)", uint8(c))
}

func (c Compression) known() bool { return c <= CompressionZstd }

// ParseCompression parses the String form of a Compression ("none", "lz4",
// "zstd"; case does not matter).
func ParseCompression(s string) (Compression, error) {
	for c := CompressionNone; c.known(); c++ {
		if strings.EqualFold(s, c.String()) {
			return c, nil
		}
	}
	return 0, fmt.Errorf("negotiate: unknown compression %q (want none, lz4 or zstd)", s)
}

// Transport is what carries a connection's messages after the handshake.
type Transport uint8

const (
	// TransportFramed is length-prefixed frames on the handshake's stream.
	TransportFramed Transport = iota
	// TransportShm is a pair of shared-memory rings whose memfds follow the
	// Accept over the Unix socket (SCM_RIGHTS).
	TransportShm
)

func (t Transport) String() string {
	switch t {
	case TransportFramed:
		return "framed"
	case TransportShm:
		return "shm"
	}
	return fmt.Sprintf("Transport(%d)", uint8(t))
}

func (t Transport) known() bool { return t <= TransportShm }

// Reason is why a side refused the handshake. The zero value is not a reason;
// values this build does not know mean a plain refusal (ErrRefused).
type Reason uint8

const (
	ReasonVersion      Reason = iota + 1 // no common protocol version
	ReasonContract                       // contract hashes differ
	ReasonUnauthorized                   // missing or wrong token
	ReasonMalformed                      // a handshake message was invalid
	ReasonUnavailable                    // the side cannot serve now
	ReasonOther                          // anything else; see the message
)

func (r Reason) String() string {
	switch r {
	case ReasonVersion:
		return "version"
	case ReasonContract:
		return "contract"
	case ReasonUnauthorized:
		return "unauthorized"
	case ReasonMalformed:
		return "malformed"
	case ReasonUnavailable:
		return "unavailable"
	case ReasonOther:
		return "other"
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// Message is one handshake message: *Hello, *Accept, *Refuse or *Ack.
type Message interface{ isMessage() }

// Hello is the dialler's opening message: what it speaks and who it is.
type Hello struct {
	MinVersion, MaxVersion uint16 // protocol versions the dialler speaks, 1 <= Min <= Max
	Shm                    bool   // the dialler can map shared memory here (Linux, Unix socket)
	// Compressions offered, in the dialler's preference order.
	Compressions []Compression
	// MaxMessage is the largest message the dialler accepts; 0 = no preference.
	MaxMessage uint64
	Contract   []byte // hash of the dialler's contract
	Token      []byte // auth token (never printed by String)
	Name       string // the endpoint's name
	Version    string // the endpoint's own version
	Constants  map[string]string
}

// Accept is the listener's choice for a Hello.
type Accept struct {
	Version     uint16      // chosen protocol version
	Transport   Transport   // chosen transport
	Compression Compression // always CompressionNone on shm
	RingSize    uint32      // data capacity of each ring (shm); 0 when framed
	MaxMessage  uint64      // agreed maximum message size (both directions)
	Contract    []byte      // hash of the listener's contract
	Name        string      // the listener's name
	AppVersion  string      // the listener's own version (Hello.Version's counterpart)
	Constants   map[string]string
}

// Refuse ends a handshake, from either side, with a reason and a message for
// humans (at most MaxString bytes; NewRefuse truncates).
type Refuse struct {
	Reason  Reason
	Message string
}

// Ack is the dialler's last message: the Accept is understood and, for shm,
// the rings are mapped. The connection is up once the listener reads it.
type Ack struct{}

func (*Hello) isMessage()  {}
func (*Accept) isMessage() {}
func (*Refuse) isMessage() {}
func (*Ack) isMessage()    {}

// String describes h for logs, with the token redacted.
func (h *Hello) String() string {
	return fmt.Sprintf("hello{versions %d..%d shm=%t compressions=%v max_message=%d contract=%s token=<%d bytes> name=%q version=%q constants=%d}",
		h.MinVersion, h.MaxVersion, h.Shm, h.Compressions, h.MaxMessage, hexOrNone(h.Contract), len(h.Token), h.Name, h.Version, len(h.Constants))
}

// NewRefuse returns a refusal whose message is cut to MaxString bytes (at a
// UTF-8 boundary; invalid UTF-8 is replaced) so that it always encodes.
func NewRefuse(reason Reason, format string, args ...any) *Refuse {
	return &Refuse{Reason: reason, Message: truncate(fmt.Sprintf(format, args...), MaxString)}
}

// Err is the refusal as an error: it wraps ErrVersion, ErrContractMismatch,
// ErrUnauthorized, ErrMalformed or (for any other reason) ErrRefused, with the
// message. The message comes from the peer: control characters are replaced.
func (r *Refuse) Err() error {
	var sentinel error
	switch r.Reason {
	case ReasonVersion:
		sentinel = ErrVersion
	case ReasonContract:
		sentinel = ErrContractMismatch
	case ReasonUnauthorized:
		sentinel = ErrUnauthorized
	case ReasonMalformed:
		sentinel = ErrMalformed
	default:
		msg := printable(r.Message)
		if msg == "" {
			return fmt.Errorf("%w: %v", ErrRefused, r.Reason)
		}
		return fmt.Errorf("%w: %v: %s", ErrRefused, r.Reason, msg)
	}
	if msg := printable(r.Message); msg != "" {
		return fmt.Errorf("%w: %s", sentinel, msg)
	}
	return fmt.Errorf("%w", sentinel)
}

// RefusalFor turns an error (typically from Check) into the Refuse that tells
// the peer why, so both sides report the same cause.
func RefusalFor(err error) *Refuse {
	reason := ReasonOther
	switch {
	case err == nil:
		return NewRefuse(ReasonOther, "refused")
	case errors.Is(err, ErrVersion):
		reason = ReasonVersion
	case errors.Is(err, ErrContractMismatch):
		reason = ReasonContract
	case errors.Is(err, ErrUnauthorized):
		reason = ReasonUnauthorized
	case errors.Is(err, ErrMalformed):
		reason = ReasonMalformed
	}
	return NewRefuse(reason, "%s", err.Error())
}

// validate checks the bounds of every field and that the version range is sane.
func (h *Hello) validate() error {
	if h.MinVersion == 0 || h.MinVersion > h.MaxVersion {
		return malformed("hello: version range %d..%d (want 1 <= min <= max)", h.MinVersion, h.MaxVersion)
	}
	if len(h.Compressions) > MaxCompressions {
		return malformed("hello: %d compressions offered, at most %d", len(h.Compressions), MaxCompressions)
	}
	if err := checkBytes("hello: contract", h.Contract, MaxContract); err != nil {
		return err
	}
	if err := checkBytes("hello: token", h.Token, MaxToken); err != nil {
		return err
	}
	if err := checkString("hello: name", h.Name, MaxString); err != nil {
		return err
	}
	if err := checkString("hello: version", h.Version, MaxString); err != nil {
		return err
	}
	return checkConstants("hello", h.Constants)
}

// validate checks bounds and that the enums are ones this build knows; what
// the Accept chose is judged against the Hello by Check.
func (a *Accept) validate() error {
	if a.Version == 0 {
		return malformed("accept: version 0")
	}
	if !a.Transport.known() {
		return malformed("accept: unknown transport %v", a.Transport)
	}
	if !a.Compression.known() {
		return malformed("accept: unknown compression %v", a.Compression)
	}
	if err := checkBytes("accept: contract", a.Contract, MaxContract); err != nil {
		return err
	}
	if err := checkString("accept: name", a.Name, MaxString); err != nil {
		return err
	}
	if err := checkString("accept: version", a.AppVersion, MaxString); err != nil {
		return err
	}
	return checkConstants("accept", a.Constants)
}

func (r *Refuse) validate() error {
	return checkString("refuse: message", r.Message, MaxString)
}

func checkBytes(what string, b []byte, max int) error {
	if len(b) > max {
		return malformed("%s is %d bytes, at most %d", what, len(b), max)
	}
	return nil
}

func checkString(what, s string, max int) error {
	if len(s) > max {
		return malformed("%s is %d bytes, at most %d", what, len(s), max)
	}
	if !utf8.ValidString(s) {
		return malformed("%s is not valid UTF-8", what)
	}
	return nil
}

func checkConstants(what string, m map[string]string) error {
	if len(m) > MaxConstants {
		return malformed("%s: %d constants, at most %d", what, len(m), MaxConstants)
	}
	for k, v := range m {
		if k == "" {
			return malformed("%s: constant with an empty key", what)
		}
		if err := checkString(what+": constant key", k, MaxConstantKey); err != nil {
			return err
		}
		if err := checkString(what+": constant "+truncate(k, 64), v, MaxConstantValue); err != nil {
			return err
		}
	}
	return nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// truncate cuts s to at most max bytes at a rune boundary, replacing invalid
// UTF-8, so the result is valid and within bounds.
func truncate(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	const ellipsis = "…"
	cut := max - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// printable replaces control and invalid characters of a peer's text, so it
// cannot forge log lines or terminal escapes.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

func hexOrNone(b []byte) string {
	if len(b) == 0 {
		return "none"
	}
	return fmt.Sprintf("%x", b)
}
