package bench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// rawRoleEnv makes the test binary the rawunix echo child.
const rawRoleEnv = "RINGWIRE_BENCH_RAWECHO"

// rawMax bounds one rawunix message (the child's buffer).
const rawMax = 2 << 20

// serveRaw is the hand-written baseline's child: 4-byte little-endian length
// prefix, io.ReadFull, one writev (net.Buffers) per reply, on the socket
// inherited as fd 3.
func serveRaw() int {
	f := os.NewFile(3, "parent")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "rawecho:", err)
		return 2
	}
	defer nc.Close()
	var hdr [4]byte
	buf := make([]byte, rawMax)
	for {
		if _, err := io.ReadFull(nc, hdr[:]); err != nil {
			return 0
		}
		n := binary.LittleEndian.Uint32(hdr[:])
		if n > rawMax {
			fmt.Fprintln(os.Stderr, "rawecho: message of", n, "bytes")
			return 3
		}
		if _, err := io.ReadFull(nc, buf[:n]); err != nil {
			return 0
		}
		bufs := net.Buffers{hdr[:], buf[:n]}
		if _, err := bufs.WriteTo(nc); err != nil {
			return 0
		}
	}
}

// rawChild is a running rawunix echo child and the parent's end of its
// socket.
type rawChild struct {
	nc  *net.UnixConn
	hdr [4]byte
}

// startRaw starts this binary as the rawunix echo child on a socketpair
// passed as fd 3; cleanup closes the socket and reaps the child (killing it
// after stopTimeout).
func startRaw(tb testing.TB) *rawChild {
	tb.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("socketpair: %v", err)
	}
	pf, cf := os.NewFile(uintptr(fds[0]), "parent"), os.NewFile(uintptr(fds[1]), "child")
	defer cf.Close()
	c, err := net.FileConn(pf)
	pf.Close()
	if err != nil {
		cf.Close()
		tb.Fatal(err)
	}
	nc := c.(*net.UnixConn)
	cmd := exec.Command(executable(tb), "-test.run=^$")
	cmd.Env = append(os.Environ(), rawRoleEnv+"=1")
	cmd.ExtraFiles = []*os.File{cf}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		nc.Close()
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tb.Cleanup(func() {
		nc.Close() // the child sees EOF and exits
		select {
		case <-done:
		case <-time.After(stopTimeout):
			cmd.Process.Kill()
			<-done
		}
	})
	// Every read and write of the run is bounded.
	if err := nc.SetDeadline(time.Now().Add(callBudget)); err != nil {
		tb.Fatal(err)
	}
	return &rawChild{nc: nc}
}

// echo sends req and reads the reply into out (len(out) == len(req)).
func (r *rawChild) echo(req, out []byte) error {
	binary.LittleEndian.PutUint32(r.hdr[:], uint32(len(req)))
	bufs := net.Buffers{r.hdr[:], req}
	if _, err := bufs.WriteTo(r.nc); err != nil {
		return err
	}
	if _, err := io.ReadFull(r.nc, r.hdr[:]); err != nil {
		return err
	}
	if n := binary.LittleEndian.Uint32(r.hdr[:]); int(n) != len(out) {
		return fmt.Errorf("reply of %d bytes, want %d", n, len(out))
	}
	_, err := io.ReadFull(r.nc, out)
	return err
}

func benchRawunix(b *testing.B) {
	r := startRaw(b)
	for _, sz := range sizes {
		b.Run("form=bytes/size="+sz.name, func(b *testing.B) {
			req := payload(sz.n)
			out := make([]byte, sz.n)
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			for b.Loop() {
				if err := r.echo(req, out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func echoRawunix(t *testing.T, req []byte) {
	r := startRaw(t)
	out := make([]byte, len(req))
	if err := r.echo(req, out); err != nil || !bytes.Equal(out, req) {
		t.Fatalf("rawunix: equal %v, %v", bytes.Equal(out, req), err)
	}
}
