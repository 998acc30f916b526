//go:build linux

package shm

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	// requiredSeals must all be present on a segment: nobody can change its
	// size (a shrink under a live mapping raises SIGBUS) or the seals.
	requiredSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	// forbiddenSeals would make the segment read-only for us.
	forbiddenSeals = unix.F_SEAL_WRITE | unix.F_SEAL_FUTURE_WRITE
)

// Segment is a sealed memfd mapped shared (PROT_READ|PROT_WRITE, MAP_SHARED).
//
// The mapping and the descriptor stay valid until Close. Slices obtained from
// Bytes must not be used after Close: the memory is unmapped and an access
// faults.
type Segment struct {
	mu   sync.Mutex
	fd   int    // -1 after Close
	mem  []byte // nil after Close
	size int
}

// checkSize reports whether size is usable for a segment.
func checkSize(size int) error {
	ps := os.Getpagesize()
	switch {
	case size <= 0:
		return fmt.Errorf("%w: %d, must be > 0", ErrBadSize, size)
	case size > MaxSegmentSize:
		return fmt.Errorf("%w: %d exceeds MaxSegmentSize %d", ErrBadSize, size, MaxSegmentSize)
	case size%ps != 0:
		return fmt.Errorf("%w: %d is not a multiple of the page size %d", ErrBadSize, size, ps)
	}
	return nil
}

// Create makes a memfd named "ringwire" with MFD_CLOEXEC|MFD_ALLOW_SEALING,
// ftruncates it to size, seals it F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL and
// maps it shared and writable. The pages are pre-faulted (MAP_POPULATE).
//
// size must be > 0, a multiple of the page size and <= MaxSegmentSize;
// otherwise the error wraps ErrBadSize.
func Create(size int) (*Segment, error) {
	if err := checkSize(size); err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate("ringwire", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("shm: create: %w", os.NewSyscallError("memfd_create", err))
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: create: %w", os.NewSyscallError("ftruncate", err))
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, requiredSeals); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: create: %w", os.NewSyscallError("fcntl F_ADD_SEALS", err))
	}
	mem, err := mapShared(fd, size)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: create: %w", err)
	}
	return &Segment{fd: fd, mem: mem, size: size}, nil
}

func mapShared(fd, size int) ([]byte, error) {
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	return mem, nil
}

// Open verifies a descriptor received from a peer and maps it shared and
// writable. It takes ownership of fd: on success the Segment closes it, on
// any error Open closes it before returning.
//
// Open refuses, with an error wrapping ErrBadSegment that says what was wrong,
// a descriptor that is not a regular file, is not open read-write, does not
// support seals (F_GET_SEALS fails: not a memfd), lacks any of F_SEAL_SHRINK,
// F_SEAL_GROW, F_SEAL_SEAL, carries F_SEAL_WRITE or F_SEAL_FUTURE_WRITE, or
// whose size differs from size. An invalid size argument is refused the same
// way (the error also wraps ErrBadSize).
func Open(fd int, size int) (seg *Segment, err error) {
	if fd < 0 {
		return nil, fmt.Errorf("%w: invalid descriptor %d", ErrBadSegment, fd)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	if err := checkSize(size); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSegment, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("%w: fstat: %w", ErrBadSegment, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%w: descriptor is a %s, not a regular file", ErrBadSegment, fileKind(st.Mode))
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: fcntl F_GETFL: %w", ErrBadSegment, err)
	}
	if fl&unix.O_ACCMODE != unix.O_RDWR {
		return nil, fmt.Errorf("%w: descriptor is not open read-write", ErrBadSegment)
	}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: F_GET_SEALS failed (not a memfd?): %w", ErrBadSegment, err)
	}
	if missing := requiredSeals &^ seals; missing != 0 {
		return nil, fmt.Errorf("%w: missing seals %s", ErrBadSegment, sealNames(missing))
	}
	if bad := seals & forbiddenSeals; bad != 0 {
		return nil, fmt.Errorf("%w: carries %s (the segment must stay writable)", ErrBadSegment, sealNames(bad))
	}
	// The size is checked after the seals: with F_SEAL_SHRINK|F_SEAL_GROW
	// (and F_SEAL_SEAL) in place it can no longer change under us.
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("%w: fstat: %w", ErrBadSegment, err)
	}
	if st.Size != int64(size) {
		return nil, fmt.Errorf("%w: size %d, want %d", ErrBadSegment, st.Size, size)
	}
	mem, err := mapShared(fd, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSegment, err)
	}
	return &Segment{fd: fd, mem: mem, size: size}, nil
}

// Bytes returns the mapping (len == Size()), or nil after Close.
func (s *Segment) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mem
}

// Fd returns the memfd, for sending to a peer. It stays owned by the Segment
// and open until Close; Fd returns -1 after Close.
func (s *Segment) Fd() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fd
}

// Size returns the segment size in bytes (unchanged by Close).
func (s *Segment) Size() int { return s.size }

// Close unmaps the segment and closes its descriptor. It is idempotent: the
// second and later calls do nothing and return nil. It may be called from any
// goroutine, but the caller must make sure no goroutine still uses a slice
// obtained from Bytes.
func (s *Segment) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.mem != nil {
		if err := unix.Munmap(s.mem); err != nil {
			errs = append(errs, os.NewSyscallError("munmap", err))
		}
		s.mem = nil
	}
	if s.fd >= 0 {
		if err := unix.Close(s.fd); err != nil {
			errs = append(errs, os.NewSyscallError("close", err))
		}
		s.fd = -1
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shm: close segment: %w", err)
	}
	return nil
}

var sealBits = []struct {
	bit  int
	name string
}{
	{unix.F_SEAL_SHRINK, "F_SEAL_SHRINK"},
	{unix.F_SEAL_GROW, "F_SEAL_GROW"},
	{unix.F_SEAL_SEAL, "F_SEAL_SEAL"},
	{unix.F_SEAL_WRITE, "F_SEAL_WRITE"},
	{unix.F_SEAL_FUTURE_WRITE, "F_SEAL_FUTURE_WRITE"},
}

// sealNames renders a seal mask as "F_SEAL_SHRINK|F_SEAL_GROW".
func sealNames(mask int) string {
	var names []string
	for _, s := range sealBits {
		if mask&s.bit != 0 {
			names = append(names, s.name)
			mask &^= s.bit
		}
	}
	if mask != 0 {
		names = append(names, fmt.Sprintf("%#x", mask))
	}
	return strings.Join(names, "|")
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "pipe"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	}
	return fmt.Sprintf("file of mode %#o", mode&unix.S_IFMT)
}
