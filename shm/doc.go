// Package shm provides the operating-system pieces under ringwire's shared-memory
// transport: sealed memfd segments, passing their file descriptors over a Unix
// socket (SCM_RIGHTS), cross-process futex wait/wake on a word inside a mapping,
// and peer liveness.
//
// A Segment is created with memfd_create(MFD_CLOEXEC|MFD_ALLOW_SEALING), sized,
// sealed with F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL and mapped shared. The
// receiving side maps a descriptor only after checking its size and seals, so a
// peer can never shrink the memory under us (which would raise SIGBUS). Nothing
// is created in the file system: the kernel frees the memory when the last
// mapping and descriptor are gone, including after a crash.
//
// Futexes are always shared (never FUTEX_PRIVATE_FLAG) and every wait has a
// timeout. Liveness watchers report the peer's death (EOF/HUP on the control
// socket, or a pidfd becoming readable) through a callback, which the ring layer
// uses to wake its local waiters.
//
// Everything here is Linux-only. On other systems the package compiles and each
// function returns an error that matches ErrUnsupported.
package shm
