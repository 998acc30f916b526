package transport

import (
	"context"
	"crypto/tls"
	"net"

	hs "github.com/ringwire/ringwire/internal/handshake"
	it "github.com/ringwire/ringwire/internal/transport"
)

type (
	// Config configures one side of a connection. The zero value works on
	// Unix sockets between processes of the same user; TCP needs TLS (or
	// the loudly named InsecurePlaintextTCP).
	Config = it.Config
	// Mode restricts the transports a side will agree to.
	Mode = it.Mode
	// Compression is a codec a framed connection may compress with.
	Compression = hs.Compression
	// Kind is the transport a connection runs over.
	Kind = it.Kind
	// Info is what a connection's handshake agreed (InfoOf).
	Info = it.Info
	// Peer is what the other side declared in the handshake.
	Peer = it.Peer
	// Stats counts a connection's traffic and its waits.
	Stats = it.Stats
	// CA is an in-memory certificate authority for mutual TLS between a
	// host and its remote plugins: it issues single-use server and client
	// certificates, as tls.Configs or as PEM bundles that travel to the
	// other side.
	CA = it.CA
)

const (
	// ModeAuto uses shared memory when both sides are on one Linux host and
	// connected over a Unix socket, framed messages otherwise.
	ModeAuto = it.ModeAuto
	// ModeShm insists on shared memory: the handshake fails when the peer
	// cannot use it.
	ModeShm = it.ModeShm
	// ModeFramed never uses shared memory.
	ModeFramed = it.ModeFramed

	// CompressionNone sends frames as they are.
	CompressionNone = hs.CompressionNone
	// CompressionLZ4 compresses frames with LZ4 (fast, the TCP default).
	CompressionLZ4 = hs.CompressionLZ4
	// CompressionZstd compresses frames with ZSTD (smaller, slower).
	CompressionZstd = hs.CompressionZstd

	// KindShm: a pair of shared-memory rings (the Unix socket that carried
	// the handshake stays open to detect the peer's death).
	KindShm = it.KindShm
	// KindUnix: framed messages on a Unix socket.
	KindUnix = it.KindUnix
	// KindTCP: framed messages on TCP, normally inside TLS.
	KindTCP = it.KindTCP
)

// The errors a connection reports, besides net.ErrClosed after Close and
// os.ErrDeadlineExceeded for a passed deadline (both matched with
// errors.Is), and io.EOF once the peer closed its side.
var (
	// ErrPeerGone: the other side hung up, died or broke the connection.
	ErrPeerGone = it.ErrPeerGone
	// ErrCorrupt: bytes from the peer that break the wire format; the
	// connection is closed.
	ErrCorrupt = it.ErrCorrupt
	// ErrConfig: an unusable Config, such as TCP without TLS.
	ErrConfig = it.ErrConfig
	// ErrUnauthorized: the token, or the Unix peer's user, was refused.
	ErrUnauthorized = hs.ErrUnauthorized
	// ErrContractMismatch: the two sides presented different contracts.
	ErrContractMismatch = hs.ErrContractMismatch
	// ErrVersion: the two sides speak no common protocol version.
	ErrVersion = hs.ErrVersion
	// ErrRefused: the other side refused the handshake for another reason
	// (no common transport or compression, a bound it cannot meet).
	ErrRefused = hs.ErrRefused
)

// Dial connects to a Listen on network ("unix" or "tcp") at address, runs
// the handshake within ctx and cfg.HandshakeTimeout, and returns the
// connection as a net.Conn (InfoOf tells what was agreed). Messages of any
// size may be written; reads return the stream's bytes in order.
func Dial(ctx context.Context, network, address string, cfg *Config) (net.Conn, error) {
	c, err := it.Dial(ctx, network, address, cfg)
	if err != nil {
		return nil, err
	}
	return it.NetConn(c), nil
}

// Listen listens on network ("unix" or "tcp") at address and returns a
// net.Listener whose Accept yields connections that completed the
// handshake. Handshakes run concurrently and within bounds, so strangers
// that connect and say nothing, or flood the address, cannot stop honest
// peers from getting in; Accept never returns them. A Unix socket file is
// made 0600 unless cfg.AllowUIDs lets other users in.
func Listen(network, address string, cfg *Config) (net.Listener, error) {
	l, err := it.Listen(network, address, cfg)
	if err != nil {
		return nil, err
	}
	return it.NetListener(l), nil
}

// InfoOf returns what the handshake of c agreed: the transport, the
// compression, the peer's name, version, process and user. ok is false if c
// did not come from Dial or Listen.
func InfoOf(c net.Conn) (info Info, ok bool) { return it.InfoOf(c) }

// NewCA returns a certificate authority with a fresh key, named name.
func NewCA(name string) (*CA, error) { return it.NewCA(name) }

// ClientConfigFromBundle returns the tls.Config of a client whose
// certificate, key and trusted CA came in one PEM bundle (CA.ClientBundle).
func ClientConfigFromBundle(pemBytes []byte) (*tls.Config, error) {
	return it.ClientConfigFromBundle(pemBytes)
}

// ServerConfigFromBundle returns the tls.Config of a server, requiring and
// verifying client certificates, from one PEM bundle (CA.ServerBundle).
func ServerConfigFromBundle(pemBytes []byte) (*tls.Config, error) {
	return it.ServerConfigFromBundle(pemBytes)
}
