package shm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCreateSealsAndSharing(t *testing.T) {
	const size = 4 * 4096
	seg, err := Create(size)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()

	if seg.Size() != size || len(seg.Bytes()) != size {
		t.Fatalf("Size %d, len(Bytes) %d, want %d", seg.Size(), len(seg.Bytes()), size)
	}
	var st unix.Stat_t
	if err := unix.Fstat(seg.Fd(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size {
		t.Fatalf("fstat size %d, want %d", st.Size, size)
	}
	seals, err := unix.FcntlInt(uintptr(seg.Fd()), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatal(err)
	}
	if seals != requiredSeals {
		t.Fatalf("seals %s, want %s", sealNames(seals), sealNames(requiredSeals))
	}
	fdFlags, err := unix.FcntlInt(uintptr(seg.Fd()), unix.F_GETFD, 0)
	if err != nil || fdFlags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("memfd not close-on-exec: flags %#x, %v", fdFlags, err)
	}

	// The seals hold: the size cannot change.
	if err := unix.Ftruncate(seg.Fd(), size/2); err != unix.EPERM {
		t.Fatalf("shrinking ftruncate on sealed fd: %v, want EPERM", err)
	}
	if err := unix.Ftruncate(seg.Fd(), size*2); err != unix.EPERM {
		t.Fatalf("growing ftruncate on sealed fd: %v, want EPERM", err)
	}
	if _, err := unix.FcntlInt(uintptr(seg.Fd()), unix.F_ADD_SEALS, unix.F_SEAL_WRITE); err != unix.EPERM {
		t.Fatalf("adding a seal after F_SEAL_SEAL: %v, want EPERM", err)
	}

	// A second mapping of the same memfd sees writes both ways: MAP_SHARED.
	dup, err := unix.Dup(seg.Fd())
	if err != nil {
		t.Fatal(err)
	}
	other, err := Open(dup, size)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	a, b := seg.Bytes(), other.Bytes()
	if &a[0] == &b[0] {
		t.Fatal("Open returned the same mapping")
	}
	copy(a[100:], "through the first mapping")
	if got := string(b[100 : 100+25]); got != "through the first mapping" {
		t.Fatalf("second mapping reads %q", got)
	}
	b[size-1] = 0xAB
	if a[size-1] != 0xAB {
		t.Fatalf("first mapping reads %#x at the end, want 0xab", a[size-1])
	}
}

func TestCreateBadSize(t *testing.T) {
	ps := os.Getpagesize()
	for _, size := range []int{0, -ps, ps + 1, ps / 2, MaxSegmentSize + ps} {
		seg, err := Create(size)
		if !errors.Is(err, ErrBadSize) {
			seg.Close()
			t.Errorf("Create(%d): %v, want ErrBadSize", size, err)
		}
	}
}

func TestSegmentClose(t *testing.T) {
	seg, err := Create(os.Getpagesize())
	if err != nil {
		t.Fatal(err)
	}
	fd := seg.Fd()
	if err := seg.Close(); err != nil {
		t.Fatal(err)
	}
	if !isClosed(fd) {
		t.Fatalf("fd %d still open after Close", fd)
	}
	if seg.Bytes() != nil || seg.Fd() != -1 {
		t.Fatalf("after Close: Bytes %v, Fd %d", seg.Bytes() != nil, seg.Fd())
	}
	if err := seg.Close(); err != nil {
		t.Fatalf("second Close: %v, want nil", err)
	}
}

// sealedMemfd makes a memfd of size bytes with the given seals.
func sealedMemfd(t *testing.T, size int, flags, seals int) int {
	t.Helper()
	fd, err := unix.MemfdCreate("test", flags)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatal(err)
	}
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

func TestOpenRefuses(t *testing.T) {
	ps := os.Getpagesize()
	cases := []struct {
		name string
		fd   func(t *testing.T) int
		size int
		want string // in the error message
	}{
		{"unsealed", func(t *testing.T) int {
			return sealedMemfd(t, ps, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING, 0)
		}, ps, "missing seals F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL"},
		{"sealing not allowed", func(t *testing.T) int {
			// Without MFD_ALLOW_SEALING the kernel sets F_SEAL_SEAL only.
			return sealedMemfd(t, ps, unix.MFD_CLOEXEC, 0)
		}, ps, "missing seals F_SEAL_SHRINK|F_SEAL_GROW"},
		{"grow not sealed", func(t *testing.T) int {
			return sealedMemfd(t, ps, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING, unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL)
		}, ps, "missing seals F_SEAL_GROW"},
		{"wrong size", func(t *testing.T) int {
			return sealedMemfd(t, 2*ps, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING, requiredSeals)
		}, ps, fmt.Sprintf("size %d, want %d", 2*ps, ps)},
		{"write sealed", func(t *testing.T) int {
			return sealedMemfd(t, ps, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING, requiredSeals|unix.F_SEAL_WRITE)
		}, ps, "carries F_SEAL_WRITE"},
		{"future write sealed", func(t *testing.T) int {
			return sealedMemfd(t, ps, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING, requiredSeals|unix.F_SEAL_FUTURE_WRITE)
		}, ps, "carries F_SEAL_FUTURE_WRITE"},
		{"pipe", func(t *testing.T) int {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			unix.Close(p[1])
			return p[0]
		}, ps, "is a pipe"},
		{"regular file", func(t *testing.T) int {
			// A file that is not a memfd: on tmpfs it reports F_SEAL_SEAL
			// only, elsewhere F_GET_SEALS fails; refused either way.
			name := filepath.Join(t.TempDir(), "f")
			fd, err := unix.Open(name, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Ftruncate(fd, int64(ps)); err != nil {
				t.Fatal(err)
			}
			return fd
		}, ps, ""},
		{"read-only", func(t *testing.T) int {
			fd := sealedMemfd(t, ps, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING, requiredSeals)
			defer unix.Close(fd)
			ro, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			return ro
		}, ps, "not open read-write"},
		{"bad size argument", func(t *testing.T) int {
			return sealedMemfd(t, ps, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING, requiredSeals)
		}, ps + 1, "not a multiple of the page size"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fd := tc.fd(t)
			seg, err := Open(fd, tc.size)
			if err == nil {
				seg.Close()
				t.Fatal("Open accepted the descriptor")
			}
			if !errors.Is(err, ErrBadSegment) {
				t.Fatalf("error %v does not wrap ErrBadSegment", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			if !isClosed(fd) {
				unix.Close(fd)
				t.Fatalf("Open did not close fd %d on refusal", fd)
			}
		})
	}
	if _, err := Open(-1, ps); !errors.Is(err, ErrBadSegment) {
		t.Fatalf("Open(-1): %v", err)
	}
}
