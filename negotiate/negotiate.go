package negotiate

import "github.com/ringwire/ringwire/internal/handshake"

// Compression is a compression a framed connection may use.
type Compression = handshake.Compression

// Compressions (Config.Compressions of package transport lists the ones a
// side accepts, in its order of preference).
const (
	CompressionNone = handshake.CompressionNone
	CompressionLZ4  = handshake.CompressionLZ4
	CompressionZstd = handshake.CompressionZstd
)

// Errors of a refused handshake, the same on both sides (errors.Is).
var (
	// ErrVersion: the two sides speak no common protocol version.
	ErrVersion = handshake.ErrVersion
	// ErrContractMismatch: the two sides were built against different
	// contracts (or services that do not match: see package plugin).
	ErrContractMismatch = handshake.ErrContractMismatch
	// ErrUnauthorized: the token was missing or wrong.
	ErrUnauthorized = handshake.ErrUnauthorized
	// ErrMalformed: a handshake message broke the wire spec.
	ErrMalformed = handshake.ErrMalformed
	// ErrRefused: the other side refused for another reason.
	ErrRefused = handshake.ErrRefused
)
