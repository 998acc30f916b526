package shm

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSendRecvSegment(t *testing.T) {
	a, b := socketpair(t)
	const size = 1 << 16
	seg, err := Create(size)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	copy(seg.Bytes(), "from the sender")

	if err := SendFds(a, []byte("seg"), seg.Fd()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, fds, err := RecvFds(b, buf, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "seg" || len(fds) != 1 {
		t.Fatalf("received %q with %d fds", buf[:n], len(fds))
	}
	if fds[0] == seg.Fd() {
		t.Fatal("received the sender's own descriptor number")
	}
	if fl, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Fatalf("received fd not close-on-exec: %#x, %v", fl, err)
	}
	peer, err := Open(fds[0], size)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if got := string(peer.Bytes()[:15]); got != "from the sender" {
		t.Fatalf("receiver reads %q", got)
	}
	copy(peer.Bytes()[size-8:], "receiver")
	if got := string(seg.Bytes()[size-8:]); got != "receiver" {
		t.Fatalf("sender reads %q", got)
	}
}

func TestSendFdsEmptyMessageAndNoFds(t *testing.T) {
	a, b := socketpair(t)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 8)

	// An empty message goes out as one 0 byte.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := SendFds(a, nil, int(r.Fd())); err != nil {
		t.Fatal(err)
	}
	n, fds, err := RecvFds(b, buf, 2)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || buf[0] != 0 || len(fds) != 1 {
		t.Fatalf("got %d bytes %v, %d fds", n, buf[:n], len(fds))
	}
	// The received descriptor is the same pipe.
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	if _, err := unix.Read(fds[0], one); err != nil || one[0] != 'x' {
		t.Fatalf("read through received fd: %q, %v", one, err)
	}
	unix.Close(fds[0])

	// A message without descriptors is delivered, with none.
	if err := SendFds(a, []byte("plain")); err != nil {
		t.Fatal(err)
	}
	n, fds, err = RecvFds(b, buf, 2)
	if err != nil || string(buf[:n]) != "plain" || fds != nil {
		t.Fatalf("got %q, fds %v, %v", buf[:n], fds, err)
	}

	// EOF once the peer is gone.
	a.Close()
	if _, _, err := RecvFds(b, buf, 2); !errors.Is(err, io.EOF) {
		t.Fatalf("after peer close: %v, want io.EOF", err)
	}
}

func TestRecvFdsTooManyNoLeak(t *testing.T) {
	a, b := socketpair(t)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	p := int(r.Fd())

	cases := []struct {
		name string
		sent int
		max  int
		want string
	}{
		// Fits the buffer: counted and closed.
		{"one over", 2, 1, "at most 1 accepted"},
		{"none accepted", 1, 0, "at most 0 accepted"},
		// MSG_CTRUNC: the kernel drops what does not fit, we close the rest.
		{"truncated", 20, 1, "MSG_CTRUNC"},
		{"many", 200, 3, "MSG_CTRUNC"},
	}
	buf := make([]byte, 8)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			send := make([]int, tc.sent)
			for i := range send {
				send[i] = p
			}
			before := countFds(t)
			if err := SendFds(a, []byte("m"), send...); err != nil {
				t.Fatal(err)
			}
			n, fds, err := RecvFds(b, buf, tc.max)
			if !errors.Is(err, ErrNoFds) {
				t.Fatalf("RecvFds: %v, want ErrNoFds", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			if fds != nil {
				t.Fatalf("fds %v returned with an error", fds)
			}
			if n != 1 || buf[0] != 'm' {
				t.Fatalf("message %q", buf[:n])
			}
			if after := countFds(t); after != before {
				t.Fatalf("%d descriptors before, %d after: leak", before, after)
			}
		})
	}

	// The connection is still in sync afterwards.
	if err := SendFds(a, []byte("ok"), p, p); err != nil {
		t.Fatal(err)
	}
	n, fds, err := RecvFds(b, buf, 2)
	if err != nil || string(buf[:n]) != "ok" || len(fds) != 2 {
		t.Fatalf("got %q, %d fds, %v", buf[:n], len(fds), err)
	}
	closeAll(fds)
}

func TestRecvFdsDeadline(t *testing.T) {
	_, b := socketpair(t)
	b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	start := time.Now()
	_, _, err := RecvFds(b, make([]byte, 4), 1)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("RecvFds: %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("returned after %v", d)
	}
}

func TestSendFdsRefusesBadInput(t *testing.T) {
	a, _ := socketpair(t)
	if err := SendFds(a, []byte("x"), -1); err == nil {
		t.Fatal("accepted fd -1")
	}
	if err := SendFds(a, []byte("x"), make([]int, maxFdsPerMsg+1)...); err == nil {
		t.Fatal("accepted too many fds")
	}
}

func TestParseRightsMalformed(t *testing.T) {
	// A header claiming more bytes than present.
	b := unix.UnixRights(7, 8)
	h := b[:unix.SizeofCmsghdr]
	fds, malformed := parseRights(b[:len(b)-4])
	if !malformed || len(fds) != 0 {
		t.Fatalf("truncated: fds %v, malformed %v", fds, malformed)
	}
	fds, malformed = parseRights(append(unix.UnixRights(7, 8), h[:4]...))
	if !malformed || len(fds) != 2 || fds[0] != 7 || fds[1] != 8 {
		t.Fatalf("trailing garbage: fds %v, malformed %v", fds, malformed)
	}
	fds, malformed = parseRights(append(unix.UnixRights(5), unix.UnixRights(6, 7)...))
	if malformed || len(fds) != 3 || fds[2] != 7 {
		t.Fatalf("two messages: fds %v, malformed %v", fds, malformed)
	}
}
