// Package protocol names ringwire's RPC wire protocol: what a host and a
// plugin say to each other once the handshake (package negotiate, and
// docs/handshake.md) has given them a transport.Conn.
//
// The protocol is specified in docs/protocol.md: a fixed 28-byte binary
// header for calls and replies, FlatBuffers bodies for control messages
// (errors, goaway; the schema is internal/rpc/control.fbs), call ids that
// multiplex many calls on one connection, deadlines and cancellation that
// travel with a call, callbacks into the caller, remote objects, and a health
// ping.
//
// Nothing here is for import. Plugins and hosts use package plugin, which
// serves and calls methods over this protocol (Mux, Method, Service, Codec,
// Error); the engine itself is internal/rpc, so that the public surface stays
// one package a user can keep in their head.
package protocol
