package rpc

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"sync"
	"syscall"
	"testing"
	"time"

	negotiate "github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/internal/transport"
)

// Cross-process harness: the test binary re-executes itself as the serving
// peer, joined to the parent by a socket passed as fd 3 (as a launched
// plugin is): a Unix socketpair for the modes "shm" and "framed", a TCP
// connection over loopback with mutual TLS for "tcp" (the listener picks
// LZ4) and "tcp-zstd" (ZSTD).
const (
	childRoleEnv = "RINGWIRE_PROTOCOL_TEST_CHILD"
	childModeEnv = "RINGWIRE_PROTOCOL_TEST_MODE"
	childTLSEnv  = "RINGWIRE_PROTOCOL_TEST_TLS" // the child's client bundle (TCP modes)
)

// childRoles are roles a child runs on its negotiated Conn, registered by
// the test files that need them (besides runChild's own).
var childRoles = map[string]func(transport.Conn) int{}

// isTCPMode reports whether mode runs the child over TCP with mutual TLS.
func isTCPMode(mode string) bool { return mode == "tcp" || mode == "tcp-zstd" }

// testCA is the certificate authority of the TCP modes, made once.
var testCA = sync.OnceValues(func() (*transport.CA, error) { return transport.NewCA("protocol-test-ca") })

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
	switch m := os.Getenv(childModeEnv); {
	case m == "framed":
		mode = transport.ModeFramed
	case isTCPMode(m):
		mode = transport.ModeFramed
		cfg, err := transport.ClientConfigFromBundle([]byte(os.Getenv(childTLSEnv)))
		if err != nil {
			fmt.Fprintln(os.Stderr, "child: TLS bundle:", err)
			return 2
		}
		nc = tls.Client(nc, cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := transport.Client(ctx, nc, &transport.Config{Name: "child", Mode: mode, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: handshake:", err)
		return 2
	}
	if f := childRoles[role]; f != nil {
		return f(c)
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
	cmd    *exec.Cmd
	nc     net.Conn // the parent's end of fd 3 (a *net.UnixConn or *net.TCPConn)
	mode   string
	stdout *lockedBuffer // what the child printed
	done   chan error
}

// lockedBuffer is a bytes.Buffer safe for one writer and readers at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// childSocket returns the parent's end of the child's connection in mode,
// the child's end as a file for fd 3, and what the child's environment
// needs besides.
func childSocket(t testing.TB, mode string) (net.Conn, *os.File, []string) {
	t.Helper()
	var a net.Conn
	var b interface {
		File() (*os.File, error)
		Close() error
	}
	var env []string
	if !isTCPMode(mode) {
		a, b = socketPair(t)
	} else {
		ca, err := testCA()
		if err != nil {
			t.Fatal(err)
		}
		bundle, err := ca.ClientBundle("child", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		env = []string{childTLSEnv + "=" + string(bundle)}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, _ := l.Accept()
			accepted <- c
		}()
		nb, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if a = <-accepted; a == nil {
			t.Fatal("accepting the child's TCP connection failed")
		}
		b = nb.(*net.TCPConn)
	}
	f, err := b.File()
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	return a, f, env
}

// startChild starts the test binary as a child in role over mode, with env
// added to its environment.
func startChild(t testing.TB, role, mode string, env ...string) *child {
	t.Helper()
	a, bf, tenv := childSocket(t, mode)
	env = append(tenv, env...)
	defer bf.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childRoleEnv+"="+role, childModeEnv+"="+mode), env...)
	cmd.ExtraFiles = []*os.File{bf}
	out := new(lockedBuffer)
	cmd.Stdout = out
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, nc: a, mode: mode, stdout: out, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		a.Close()
		// A child a test stopped (SIGSTOP) and did not resume could not
		// exit: resume it. The signal goes to our own child, by pid, and
		// only while it has not been reaped.
		if !c.exited() {
			_ = cmd.Process.Signal(syscall.SIGCONT)
		}
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// exited reports whether the child has been reaped (it keeps that answer
// for later callers).
func (c *child) exited() bool {
	select {
	case err := <-c.done:
		c.done <- err
		return true
	default:
		return false
	}
}

// peerWithChild starts a serving child and returns the parent's Peer.
func peerWithChild(t testing.TB, mode string) (*Peer, *child) {
	t.Helper()
	return peerWithChildOpts(t, "serve", mode, Options{Logger: quiet})
}

// peerWithChildOpts starts a child in role and returns the parent's Peer,
// made with o.
func peerWithChildOpts(t testing.TB, role, mode string, o Options) (*Peer, *child) {
	t.Helper()
	c, ch := connWithChild(t, role, mode)
	p := NewPeer(c, o)
	t.Cleanup(func() { p.Close() })
	return p, ch
}

// connWithChild starts a child in role (with env added to its environment)
// and returns the parent's Conn.
func connWithChild(t testing.TB, role, mode string, env ...string) (transport.Conn, *child) {
	t.Helper()
	ch := startChild(t, role, mode, env...)
	cfg := &transport.Config{Name: "parent", Mode: transport.ModeShm, Logger: quiet}
	var nc net.Conn = ch.nc
	switch {
	case mode == "framed":
		cfg.Mode = transport.ModeFramed
	case isTCPMode(mode):
		cfg.Mode = transport.ModeFramed
		ca, err := testCA()
		if err != nil {
			t.Fatal(err)
		}
		srv, err := ca.ServerConfig("parent", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		nc = tls.Server(nc, srv)
		if mode == "tcp-zstd" {
			cfg.Compressions = []negotiate.Compression{negotiate.CompressionZstd}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := transport.Server(ctx, nc, cfg)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if in := c.Info(); isTCPMode(mode) && (in.Kind != transport.KindTCP || !in.TLS) {
		t.Fatalf("mode %s negotiated %v (TLS %v)", mode, in.Kind, in.TLS)
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
