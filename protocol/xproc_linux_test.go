package protocol

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/ringwire/ringwire/transport"
)

// Cross-process harness: the test binary re-executes itself as the serving
// peer, joined to the parent by a socketpair passed as fd 3 (as a launched
// plugin is).
const (
	childRoleEnv = "RINGWIRE_PROTOCOL_TEST_CHILD"
	childModeEnv = "RINGWIRE_PROTOCOL_TEST_MODE"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(childRoleEnv); role != "" {
		os.Exit(runChild(role))
	}
	os.Exit(m.Run())
}

func runChild(role string) int {
	f := os.NewFile(3, "parent")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	if role == "rawecho" {
		return rawEcho(nc)
	}
	mode := transport.ModeShm
	if os.Getenv(childModeEnv) == "framed" {
		mode = transport.ModeFramed
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := transport.Client(ctx, nc, &transport.Config{Name: "child", Mode: mode, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: handshake:", err)
		return 2
	}
	if role == "connecho" {
		for {
			m, err := c.Recv()
			if err != nil {
				return 0
			}
			if err := c.Send(m.Type, m.Data); err != nil {
				return 0
			}
		}
	}
	if path := os.Getenv("RINGWIRE_PROTOCOL_TEST_CHILD_CPUPROFILE"); path != "" {
		// For investigating the serving side of a benchmark.
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	p := NewPeer(c, Options{Mux: echoMux(), Logger: slog.New(slog.DiscardHandler)})
	<-p.Done()
	return 0
}

// rawEcho is the hand-written baseline: 4-byte little-endian length prefix,
// io.ReadFull, one writev (net.Buffers) per reply.
func rawEcho(nc net.Conn) int {
	defer nc.Close()
	var hdr [4]byte
	buf := make([]byte, 2<<20)
	for {
		if _, err := io.ReadFull(nc, hdr[:]); err != nil {
			return 0
		}
		n := binary.LittleEndian.Uint32(hdr[:])
		if int(n) > len(buf) {
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

// child is a running serving process.
type child struct {
	cmd  *exec.Cmd
	nc   *net.UnixConn
	done chan error
}

func startChild(t testing.TB, role, mode string) *child {
	t.Helper()
	a, b := socketPair(t)
	bf, err := b.File()
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childRoleEnv+"="+role, childModeEnv+"="+mode)
	cmd.ExtraFiles = []*os.File{bf}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, nc: a, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		a.Close()
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// peerWithChild starts a serving child and returns the parent's Peer.
func peerWithChild(t testing.TB, mode string) (*Peer, *child) {
	t.Helper()
	c, ch := connWithChild(t, "serve", mode)
	p := NewPeer(c, Options{Logger: quiet})
	t.Cleanup(func() { p.Close() })
	return p, ch
}

// connWithChild starts a child in role and returns the parent's Conn.
func connWithChild(t testing.TB, role, mode string) (transport.Conn, *child) {
	t.Helper()
	ch := startChild(t, role, mode)
	m := transport.ModeShm
	if mode == "framed" {
		m = transport.ModeFramed
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := transport.Server(ctx, ch.nc, &transport.Config{Name: "parent", Mode: m, Logger: quiet})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return c, ch
}

// TestCrossProcess: calls, errors and a peer killed mid-call across real
// processes.
func TestCrossProcess(t *testing.T) {
	for _, mode := range []string{"shm", "framed"} {
		t.Run(mode, func(t *testing.T) {
			p, ch := peerWithChild(t, mode)
			ctx := context.Background()
			for i := range 2000 {
				req := []byte(fmt.Sprintf("call %d", i))
				got, err := p.Call(ctx, "echo", req)
				if err != nil || string(got) != string(req) {
					t.Fatalf("call %d: %q %v", i, got, err)
				}
			}
			if _, err := p.Call(ctx, "nope", nil); !errorsIs(err, ErrUnknownMethod) {
				t.Fatalf("unknown method: %v", err)
			}
			res := make(chan error, 1)
			go func() {
				_, err := p.Call(ctx, "hang", nil)
				res <- err
			}()
			time.Sleep(20 * time.Millisecond)
			ch.cmd.Process.Kill()
			killed := time.Now()
			select {
			case err := <-res:
				if d := time.Since(killed); !errorsIs(err, ErrPeerGone) || d > 100*time.Millisecond {
					t.Fatalf("call in flight when the peer died: %v after %v", err, d)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("call in flight did not fail within 2s of SIGKILL")
			}
		})
	}
}
