package shm

// MaxSegmentSize is the largest segment Create makes and Open accepts (1 GiB).
const MaxSegmentSize = 1 << 30

// maxFdsPerMsg is the kernel's SCM_MAX_FD: the most descriptors one
// SCM_RIGHTS message may carry.
const maxFdsPerMsg = 253
