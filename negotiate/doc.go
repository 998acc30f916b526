// Package negotiate is where ringwire's handshake is specified: what two
// sides declare (versions, token, contract, transports, compressions,
// bounds) and how the listener chooses. It exports nothing: the handshake
// runs inside package transport (Dial, Listen) and package plugin, which
// export what a user chooses (transport.Config's fields, the Compression
// constants) and meets (transport.ErrUnauthorized, ErrContractMismatch,
// ErrVersion, ErrRefused; their plugin equivalents). The implementation is
// internal/handshake and docs/handshake.md is the wire spec.
package negotiate
