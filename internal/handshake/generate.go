package handshake

// The FlatBuffers code of the handshake schema (handshake.fbs) is committed in
// internal/fb; gen.sh reproduces it with the pinned flatc.
//go:generate bash gen.sh
