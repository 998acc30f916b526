// Package rpc is ringwire's RPC engine: many calls in flight on one
// transport.Conn, matched by call id, with deadlines, cancellation, errors
// that keep their code across the wire, callbacks into the caller, remote
// objects and a health ping. Both ends of a connection are a Peer: either may
// serve methods and call the other's.
//
// The data path (call and reply) uses a fixed 28-byte binary header (see
// envelope.go and docs/protocol.md); control bodies (errors, goaway) are
// FlatBuffers (control.fbs).
//
// Latency: a Peer reads its connection from whichever goroutine needs it. A
// caller waiting for its reply reads the connection itself (no hand-off to a
// reader goroutine), and a request whose handler has been fast so far runs on
// the reading goroutine itself (no hand-off to a handler goroutine). A handler
// that turns out slow is detected and its method moved to goroutines, so one
// slow handler cannot stall the connection for more than about a millisecond.
//
// It is internal: package plugin is its public face (Mux, typed methods,
// codecs, errors, callbacks, objects), and the top-level protocol folder
// documents the wire format.
package rpc
