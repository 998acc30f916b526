package transport

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	hs "github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/ring"
)

// Mode restricts the transports a side will agree to.
type Mode uint8

const (
	// ModeAuto uses shared memory when both sides are on one Linux host and
	// connected over a Unix socket, framed messages otherwise.
	ModeAuto Mode = iota
	// ModeShm insists on shared memory: the handshake fails when the peer
	// cannot use it.
	ModeShm
	// ModeFramed never uses shared memory (framed messages on the socket).
	ModeFramed
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeShm:
		return "shm"
	case ModeFramed:
		return "framed"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Defaults.
const (
	// defaultHandshakeTimeout bounds a whole handshake when the context has
	// no earlier deadline.
	defaultHandshakeTimeout = 5 * time.Second
	// DefaultRingSize is each ring's data capacity: the throughput benchmarks
	// found 1 MiB rings 3-5x slower than 4 MiB for 1-64 KiB messages.
	DefaultRingSize = 4 << 20
	// DefaultMaxMessage bounds one message in either direction.
	DefaultMaxMessage = hs.DefaultMaxMessage
)

// Config configures one side of a connection. The zero value works on Unix
// sockets between processes of the same user; TCP needs TLS (or the loudly
// named InsecurePlaintextTCP).
type Config struct {
	// Name, Version and Constants describe this endpoint to the peer, which
	// sees them in Info().Peer.
	Name, Version string
	Constants     map[string]string

	// Contract identifies the interface this side speaks (for example a hash
	// of its methods). The handshake fails with hs.ErrContractMismatch
	// unless both sides present the same bytes.
	Contract []byte

	// Token authenticates the dialler. A dialler sends it; a listener with a
	// non-empty Token refuses every dialler that does not present the same
	// bytes (hs.ErrUnauthorized; compared in constant time).
	Token []byte

	// AllowUIDs lists user ids, besides this process's own, whose processes
	// may connect over a Unix socket (checked with SO_PEERCRED on both sides).
	AllowUIDs []int

	// TLS is required for TCP. A listener's config must require and verify
	// client certificates for mutual TLS (see CA for an in-memory authority).
	TLS *tls.Config

	// InsecurePlaintextTCP allows TCP without TLS: anyone who can reach the
	// port can connect and read the traffic. For tests and trusted networks.
	InsecurePlaintextTCP bool

	// Compressions lists the codecs this side accepts on framed transports,
	// in preference order (the listener's order decides). nil selects none on
	// Unix sockets (the socket outruns the codecs there) and LZ4, then ZSTD,
	// on TCP. Shared memory never compresses.
	Compressions []hs.Compression

	// CompressThreshold is the smallest payload worth compressing; 0 selects
	// the framed transport's default.
	CompressThreshold int

	// Mode restricts the transport (shared memory or framed).
	Mode Mode

	// RingSize is each shared-memory ring's data capacity, a power of two
	// (listener side; 0 selects DefaultRingSize).
	RingSize int

	// Ring tunes this side's waiting on the rings (spin budget, adaptive
	// spin, park timeout).
	Ring ring.Options

	// MaxMessage bounds one message in either direction (0 selects
	// DefaultMaxMessage). The smaller of the two sides' values applies.
	MaxMessage int

	// HandshakeTimeout bounds the handshake (0 selects
	// defaultHandshakeTimeout); a context deadline that comes earlier wins.
	HandshakeTimeout time.Duration

	// Logger receives the negotiated transport of every connection and the
	// reasons handshakes failed (nil: slog.Default()).
	Logger *slog.Logger
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

func (c *Config) maxMessage() uint64 {
	if c.MaxMessage > 0 {
		return uint64(c.MaxMessage)
	}
	return DefaultMaxMessage
}

func (c *Config) ringSize() int {
	if c.RingSize > 0 {
		return c.RingSize
	}
	return DefaultRingSize
}

// uidAllowed reports whether a Unix peer of uid may connect: ours, or one
// of AllowUIDs.
func (c *Config) uidAllowed(uid int) bool {
	return uid == os.Getuid() || slices.Contains(c.AllowUIDs, uid)
}

func (c *Config) handshakeTimeout() time.Duration {
	if c.HandshakeTimeout > 0 {
		return c.HandshakeTimeout
	}
	return defaultHandshakeTimeout
}

// compressions returns the codecs offered or accepted on a connection of kind k.
func (c *Config) compressions(k Kind) []hs.Compression {
	if c.Compressions != nil || k != KindTCP {
		return c.Compressions
	}
	return []hs.Compression{hs.CompressionLZ4, hs.CompressionZstd}
}

// check validates the parts of c that do not depend on the connection.
func (c *Config) check() error {
	switch {
	case c.Mode > ModeFramed:
		return fmt.Errorf("%w: unknown mode %d", ErrConfig, c.Mode)
	case c.RingSize != 0 && (c.RingSize < ring.MinCapacity || c.RingSize&(c.RingSize-1) != 0):
		return fmt.Errorf("%w: ring size %d is not a power of two of at least %d", ErrConfig, c.RingSize, ring.MinCapacity)
	case c.MaxMessage < 0:
		return fmt.Errorf("%w: negative MaxMessage", ErrConfig)
	}
	for _, z := range c.Compressions {
		if z > hs.CompressionZstd {
			return fmt.Errorf("%w: unknown compression %d", ErrConfig, z)
		}
	}
	// What this side would declare in a handshake must fit its bounds.
	p := hs.Policy{Compressions: c.Compressions, MaxMessage: c.maxMessage(), RingSize: uint32(c.ringSize()),
		Contract: c.Contract, Token: c.Token, Name: c.Name, Version: c.Version, Constants: c.Constants}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}
