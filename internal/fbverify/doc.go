// Package fbverify does one job: checked reads of untrusted FlatBuffers
// buffers without the generated accessors.
//
// The Go FlatBuffers runtime has no verifier, and its generated accessors
// index the buffer directly and re-read every offset from it: a hostile
// buffer could make them panic, and so could a peer that rewrites shared
// memory between a check and an accessor. fbverify checks the root offset,
// each table and its vtable, each field and each vector or string it is asked
// for the way FlatBuffers' C++ Verifier does (inside the buffer, aligned,
// strings NUL-terminated, vectors within a caller's limit), reading every
// offset and length exactly once, and hands out only positions and bytes it
// checked. What the schema says -- which slot holds what -- stays with the
// caller.
//
// Every refusal is an *Error, which callers wrap with their own sentinel.
// Arithmetic is in uint64 on positions inside the buffer and 32-bit offsets
// and lengths read from it, so it cannot overflow, and nothing allocates
// unless a check fails.
package fbverify
