package shm

import (
	"errors"
	"fmt"
	"runtime"
)

// Sentinel errors. Every error returned by this package wraps one of them.
var (
	// ErrUnsupported is returned on systems without memfd, seals and futexes.
	// It also matches errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("shm: shared memory is not supported on %s: %w", runtime.GOOS, errors.ErrUnsupported)
	// ErrBadSegment is returned when a received descriptor is not a sealed,
	// writable memfd of the expected size.
	ErrBadSegment = errors.New("shm: segment refused")
	// ErrClosed is returned by operations on a closed Segment or Watcher.
	ErrClosed = errors.New("shm: closed")
	// ErrTimeout is returned by FutexWait when its timeout expires.
	ErrTimeout = errors.New("shm: futex wait timed out")
	// ErrNoFds is returned by RecvFds when a message carried fewer descriptors
	// than required or malformed control data.
	ErrNoFds = errors.New("shm: message carried no usable file descriptors")
	// ErrBadSize is returned by Create (and, together with ErrBadSegment, by
	// Open) when a segment size is not positive, not a multiple of the page
	// size, or larger than MaxSegmentSize.
	ErrBadSize = errors.New("shm: invalid segment size")
)
