// Package negotiate names what a user of ringwire's handshake chooses and
// meets: the compressions a framed connection may negotiate, and the
// errors of a refused handshake. The handshake itself (messages, wire
// encoding, the listener's choice and the dialler's check) is internal;
// package transport runs it, and docs/handshake.md is its wire spec.
package negotiate
