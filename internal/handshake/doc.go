// Package handshake is ringwire's connection handshake without the sockets:
// the messages, their wire encoding, the listener's choice (Select) and the
// dialler's check of that choice (Check). Being pure, it is tested and fuzzed
// on byte slices; package transport runs it over a connection. The wire spec
// is docs/handshake.md.
//
// # Sequence
//
// The dialler speaks first; the whole exchange runs under one deadline.
//
//	dialler                                   listener
//	   | --- Hello -------------------------------> |  versions, shm?, compressions,
//	   |                                            |  max message, contract, token, identity
//	   |                                            |  Select(policy, hello)
//	   | <-------------------------- Accept|Refuse  |  Refuse: reason + message, then close
//	   |  Check(hello, accept)                      |
//	   | <------------ 2 memfds via SCM_RIGHTS ---- |  shm only: one ring per direction
//	   |  map and verify the rings                  |
//	   | --- Ack | Refuse --------------------------> |  Refuse if Check or mapping failed
//	   |                                            |
//	   |  connection up: framed messages on this    |
//	   |  stream, or shm rings with this socket     |
//	   |  kept open as the liveness channel         |
//
// A Refuse from either side ends the handshake with the same error on both
// sides (Refuse.Err, RefusalFor), never a silent hang.
//
// # Wire prefix
//
// Every message is an 8-byte prefix and a FlatBuffers buffer whose root is an
// Envelope (handshake.fbs) holding one Hello, Accept, Refuse or Ack:
//
//	 0        4                   8
//	+--------+-------------------+--------------------------------+
//	| "RWH1" | payload length    | FlatBuffers Envelope           |
//	| magic  | u32 little endian | (length bytes, <= MaxHandshake) |
//	+--------+-------------------+--------------------------------+
//
// Every byte from the peer is untrusted: ReadMessage bounds the length before
// allocating, and Decode verifies every offset of the buffer before the
// generated accessors (internal/fb) read it, bounds every field, and returns
// ErrMalformed rather than panicking.
//
// # Generated code
//
// internal/fb is generated from handshake.fbs by flatc 2.0.8 (gen.sh, run by
// go generate) and used with the Go runtime github.com/google/flatbuffers
// v25.12.19 pinned in go.mod; check_generated.sh fails if it is stale.
package handshake
