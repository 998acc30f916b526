// Package duplex joins two processes with a pair of rings in sealed shared
// memory: one ring per direction, set up over a Unix socket that carries the
// memfds (SCM_RIGHTS) and then stays open as the liveness channel. It is the
// shared-memory plumbing that the transport's shm connection, the examples,
// the cross-process tests and the benchmarks share; the negotiated handshake
// around it belongs to package negotiate.
package duplex
