// Package fuzz holds the cross-layer fuzzing: targets that play a hostile
// peer against the real stack rather than one decoder. The per-package
// targets (ring, handshake, framing, envelope, control, codecs) stay beside
// their code; run.sh runs all of them, these included, for a bounded total
// time (CI calls it).
//
//   - FuzzListenerStream: the fuzzer's bytes are a client's whole stream to
//     a real handshake server over a socketpair, then framed traffic with
//     LZ4 or ZSTD compression to the RPC engine serving a Mux.
//   - FuzzPeerOverRing: an RPC Peer on a shared-memory connection whose
//     other side is the fuzzer: it writes records into the ring the Peer
//     reads, and scribbles on that ring's header, positions and bytes.
//
// Both check that the stack never panics, never hangs (everything ends
// within a bound once the fuzzer hangs up) and fails with a sentinel error.
// The seed corpora in testdata/fuzz are recorded from real clients
// (RINGWIRE_WRITE_SEEDS=1 go test -run TestSeeds ./fuzz rewrites them).
package fuzz
