//go:build linux

package shm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SendFds sends msg with fds attached as one SCM_RIGHTS control message.
// A message must carry at least one byte; an empty msg is sent as a single
// 0 byte. At most 253 descriptors (SCM_MAX_FD) fit in one message. The
// descriptors stay owned by the caller (the peer receives duplicates).
func SendFds(c *net.UnixConn, msg []byte, fds ...int) error {
	if c == nil {
		return errors.New("shm: send fds: nil connection")
	}
	if len(fds) > maxFdsPerMsg {
		return fmt.Errorf("shm: send fds: %d descriptors, at most %d per message", len(fds), maxFdsPerMsg)
	}
	for _, fd := range fds {
		if fd < 0 {
			return fmt.Errorf("shm: send fds: invalid descriptor %d", fd)
		}
	}
	if len(msg) == 0 {
		msg = []byte{0}
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(msg, oob, nil)
	if err != nil {
		return fmt.Errorf("shm: send fds: %w", err)
	}
	if oobn != len(oob) {
		return fmt.Errorf("shm: send fds: sent %d of %d control bytes", oobn, len(oob))
	}
	// A stream socket may take a prefix only; the descriptors went with it.
	if n < len(msg) {
		if _, err := c.Write(msg[n:]); err != nil {
			return fmt.Errorf("shm: send fds: %w", err)
		}
	}
	return nil
}

// RecvFds reads one message into buf and returns the number of bytes read and
// the descriptors that came with it, opened close-on-exec (MSG_CMSG_CLOEXEC).
// The caller owns the returned descriptors.
//
// It accepts at most maxFds descriptors (clamped to 0..253). If the message
// carried more than maxFds, or its control data was truncated (MSG_CTRUNC)
// or malformed, every descriptor it delivered is closed and the error wraps
// ErrNoFds: nothing leaks, and no descriptor is returned alongside an error.
// A message without descriptors is not an error: fds is nil and the caller
// checks len(fds).
//
// On a stream socket the bytes of one message may arrive over several reads;
// the descriptors arrive with the first byte they were sent with. RecvFds
// returns an error wrapping io.EOF when the peer has closed the connection.
// It honours c's read deadline and works with the connection in Go's
// netpoller. buf must not be empty.
func RecvFds(c *net.UnixConn, buf []byte, maxFds int) (n int, fds []int, err error) {
	if c == nil {
		return 0, nil, errors.New("shm: recv fds: nil connection")
	}
	if len(buf) == 0 {
		return 0, nil, errors.New("shm: recv fds: empty buffer")
	}
	maxFds = max(0, min(maxFdsPerMsg, maxFds))
	// Room for maxFds+1 descriptors (so that an excess is seen, not silently
	// dropped by the kernel) and for an SCM_CREDENTIALS message in case the
	// socket has SO_PASSCRED set.
	oob := make([]byte, unix.CmsgSpace((maxFds+1)*4)+unix.CmsgSpace(unix.SizeofUcred))

	rc, err := c.SyscallConn()
	if err != nil {
		return 0, nil, fmt.Errorf("shm: recv fds: %w", err)
	}
	var oobn, flags int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
			if rerr != unix.EINTR {
				break
			}
		}
		if n < 0 { // the raw syscall result on failure
			n = 0
		}
		return rerr != unix.EAGAIN
	})
	// Whatever happened, descriptors that reached us must be accounted for.
	fds, malformed := parseRights(oob[:max(0, min(oobn, len(oob)))])
	fail := func(e error) (int, []int, error) {
		closeAll(fds)
		return n, nil, e
	}
	if err != nil {
		return fail(fmt.Errorf("shm: recv fds: %w", err))
	}
	if rerr != nil {
		return fail(fmt.Errorf("shm: recv fds: %w", &net.OpError{Op: "recvmsg", Net: "unix", Err: rerr}))
	}
	switch {
	case flags&unix.MSG_CTRUNC != 0:
		return fail(fmt.Errorf("%w: control data truncated (MSG_CTRUNC), %d descriptors discarded", ErrNoFds, len(fds)))
	case malformed:
		return fail(fmt.Errorf("%w: malformed control data, %d descriptors discarded", ErrNoFds, len(fds)))
	case len(fds) > maxFds:
		return fail(fmt.Errorf("%w: message carried at least %d descriptors, at most %d accepted; all closed", ErrNoFds, len(fds), maxFds))
	case n == 0 && len(fds) == 0:
		return 0, nil, fmt.Errorf("shm: recv fds: %w", io.EOF)
	}
	return n, fds, nil
}

// parseRights returns every descriptor in SCM_RIGHTS messages in b. Other
// control messages are skipped. malformed reports a header that does not fit;
// descriptors before it are still returned so they can be closed.
func parseRights(b []byte) (fds []int, malformed bool) {
	hdr := unix.CmsgLen(0) // aligned header size
	for len(b) > 0 {
		if len(b) < unix.SizeofCmsghdr {
			return fds, true
		}
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < hdr || l > len(b) {
			return fds, true
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS {
			data := b[hdr:l]
			for len(data) >= 4 {
				fds = append(fds, int(int32(binary.NativeEndian.Uint32(data))))
				data = data[4:]
			}
			if len(data) != 0 {
				malformed = true
			}
		}
		next := unix.CmsgSpace(l - hdr)
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return fds, malformed
}

func closeAll(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}
