package rpc

// The FlatBuffers code of the control schema (control.fbs) is committed in
// internal/fb; gen.sh reproduces it with the pinned flatc.
//go:generate bash gen.sh
