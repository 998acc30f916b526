package handshake

import "errors"

// Sentinel errors. Every error the package returns wraps one of them, except
// the read errors of ReadMessage's io.Reader, which are wrapped as they come.
var (
	// ErrVersion reports that the two sides speak no common protocol version.
	ErrVersion = errors.New("negotiate: no common protocol version")
	// ErrContractMismatch reports endpoints built against different contracts;
	// the error text names both contract hashes in hex.
	ErrContractMismatch = errors.New("negotiate: contract mismatch")
	// ErrUnauthorized reports a missing or wrong token.
	ErrUnauthorized = errors.New("negotiate: unauthorized")
	// ErrMalformed reports a handshake message that breaks the spec: bad
	// prefix, undecodable or truncated bytes, a field over its bound, or an
	// Accept that chose something the Hello did not offer. Encode returns it
	// for a message that would not be valid on the wire.
	ErrMalformed = errors.New("negotiate: malformed handshake")
	// ErrRefused reports a refusal for any other reason (unavailable, other,
	// or a reason code this build does not know).
	ErrRefused = errors.New("negotiate: handshake refused")
	// ErrConfig reports an unusable Policy.
	ErrConfig = errors.New("negotiate: invalid policy")
)
