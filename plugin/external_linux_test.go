//go:build linux

package plugin_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	negotiate "github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/internal/transport"
	"github.com/ringwire/ringwire/plugin"
)

// extProc is a plugin process the test starts itself (external and remote
// plugins are not launched by the host).
type extProc struct {
	cmd    *exec.Cmd
	stderr syncBuffer
	lines  chan string   // stdout lines
	exited chan struct{} // closed once reaped
	err    error         // exit status, after exited
}

func startExternal(t *testing.T, env ...string) *extProc {
	t.Helper()
	p := &extProc{lines: make(chan string, 16), exited: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(withoutLaunchEnv(childEnv("echo")), env...)
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if p.wait(100*time.Millisecond) == errStillRunning {
			p.cmd.Process.Signal(syscall.SIGTERM)
			if p.wait(5*time.Second) == errStillRunning {
				t.Errorf("plugin %d ignored SIGTERM", p.cmd.Process.Pid)
				p.cmd.Process.Kill()
				p.wait(10 * time.Second)
			}
		}
	})
	return p
}

// syncBuffer is a bytes.Buffer safe for a writer and readers at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var errStillRunning = errors.New("still running")

// wait waits up to d for the process's exit status.
func (p *extProc) wait(d time.Duration) error {
	select {
	case <-p.exited:
		return p.err
	case <-time.After(d):
		return errStillRunning
	}
}

// externalCall checks one Client of an external or remote plugin.
func externalCall(t *testing.T, c *plugin.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := c.Call(ctx, "echo", []byte("far")); err != nil || string(out) != "far" {
		t.Errorf("echo: %q, %v", out, err)
	}
	if out, err := c.Call(ctx, "callback", []byte("y")); err != nil || string(out) != "host:y" {
		t.Errorf("callback: %q, %v", out, err)
	}
	in := c.Info()
	if in.Name != "echo" || in.Description != "echoes what it gets" || in.Constants["greeting"] != "hello" {
		t.Errorf("Info: %+v", in)
	}
	if c.PID() != -1 {
		t.Errorf("PID() = %d for a plugin the host did not launch", c.PID())
	}
}

// stopExternal closes c and checks that the plugin's Serve returned (its
// process exits 0).
func stopExternal(t *testing.T, c *plugin.Client, p *extProc) {
	t.Helper()
	// Closed right after a call, while the connection still holds the
	// reply the caller read: the plugin must see the hang-up at once.
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := p.wait(5 * time.Second); err != nil {
		t.Errorf("plugin exit after the host closed: %v; stderr:\n%s", err, p.stderr.String())
	}
}

// connectEnv is the environment that makes an external plugin connect to l
// (with TestExternalUnix's token on a Unix socket).
func connectEnv(l *plugin.Listener, bundle []byte) []string {
	var token []byte
	if l.Addr().Network() == "unix" {
		token = []byte("secret-token")
	}
	return plugin.ConnectEnv(l.Addr().Network(), l.Addr().String(), token, bundle)
}

func acceptCtx(t *testing.T, l *plugin.Listener, d time.Duration) (*plugin.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return l.Accept(ctx)
}

func TestExternalUnix(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "host.sock")
	l, err := plugin.Listen("unix", sock, &plugin.Config{
		Transport: transport.Config{Token: []byte("secret-token")}, Mux: hostMux(nil), Logger: childOutput,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	// A plugin with the wrong token is refused and never accepted.
	bad := startExternal(t, plugin.ConnectEnv("unix", sock, []byte("wrong"), nil)...)
	if err := bad.wait(10 * time.Second); err == nil || !strings.Contains(bad.stderr.String(), "unauthorized") {
		t.Errorf("plugin with a wrong token: exit %v, stderr %q", err, bad.stderr.String())
	}

	p := startExternal(t, connectEnv(l, nil)...)
	c, err := acceptCtx(t, l, 10*time.Second)
	if err != nil {
		t.Fatalf("Accept: %v; stderr: %s", err, p.stderr.String())
	}
	if k := c.Info().Transport.Kind; k != transport.KindShm {
		t.Errorf("transport %v, want shm", k)
	}
	externalCall(t, c)
	stopExternal(t, c, p)
}

func TestExternalTCP(t *testing.T) {
	ca, err := transport.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.ServerConfig("host", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	l, err := plugin.Listen("tcp", "127.0.0.1:0", &plugin.Config{
		Mux: hostMux(nil), Transport: transport.Config{TLS: srv}, Logger: childOutput,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	// A plugin whose certificate comes from another CA is refused.
	other, err := transport.NewCA("other-ca")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.ClientBundle("intruder", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	intruder := startExternal(t, connectEnv(l, foreign)...)
	if err := intruder.wait(10 * time.Second); err == nil {
		t.Errorf("plugin with a foreign certificate exited 0; stderr %q", intruder.stderr.String())
	}
	t.Logf("intruder: %s", strings.TrimSpace(intruder.stderr.String()))
	if !strings.Contains(intruder.stderr.String(), negotiate.ErrUnauthorized.Error()) {
		t.Errorf("intruder's error does not say unauthorized: %q", intruder.stderr.String())
	}
	// One that trusts the host but has a certificate from another CA is
	// refused by the host.
	foreignTLS, err := other.ClientConfig("intruder", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	trusting, err := ca.ClientConfig("anyone", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	foreignTLS.RootCAs = trusting.RootCAs
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = transport.Dial(ctx, "tcp", l.Addr().String(), &transport.Config{Logger: childOutput,
		TLS: foreignTLS})
	if !errors.Is(err, negotiate.ErrUnauthorized) {
		t.Errorf("dial with a foreign client certificate: %v, want ErrUnauthorized", err)
	}
	if c, err := acceptCtx(t, l, 100*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Accept after the intruders: %v, %v; want nothing accepted", c, err)
	}

	bundle, err := ca.ClientBundle("echo-plugin", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	// The bundle may also come as a file.
	path := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(path, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startExternal(t, append(connectEnv(l, nil), "RINGWIRE_TLS_BUNDLE="+path)...)
	c, err := acceptCtx(t, l, 10*time.Second)
	if err != nil {
		t.Fatalf("Accept: %v; stderr: %s", err, p.stderr.String())
	}
	if tr := c.Info().Transport; tr.Kind != transport.KindTCP || !tr.TLS {
		t.Errorf("transport %v TLS %v, want TCP with TLS", tr.Kind, tr.TLS)
	}
	externalCall(t, c)
	stopExternal(t, c, p)

	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := acceptCtx(t, l, time.Second); !errors.Is(err, plugin.ErrClosed) {
		t.Errorf("Accept after Close: %v, want ErrClosed", err)
	}
}

// TestExternalTCPPlaintext: a plugin tunes its side of the transport with
// Plugin.Transport: plaintext TCP (no bundle), and only ZSTD among the
// listener's compressions.
func TestExternalTCPPlaintext(t *testing.T) {
	l, err := plugin.Listen("tcp", "127.0.0.1:0", &plugin.Config{
		Mux: hostMux(nil), Logger: childOutput,
		Transport: transport.Config{InsecurePlaintextTCP: true,
			Compressions: []negotiate.Compression{negotiate.CompressionLZ4, negotiate.CompressionZstd}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := startExternal(t, append(connectEnv(l, nil), roleEnv+"=plainzstd")...)
	c, err := acceptCtx(t, l, 10*time.Second)
	if err != nil {
		t.Fatalf("Accept: %v; stderr: %s", err, p.stderr.String())
	}
	if tr := c.Info().Transport; tr.Kind != transport.KindTCP || tr.TLS || tr.Compression != "zstd" {
		t.Errorf("transport %v TLS %v compression %v, want plaintext TCP with ZSTD", tr.Kind, tr.TLS, tr.Compression)
	}
	externalCall(t, c)
	stopExternal(t, c, p)
}

// listening waits for a remote plugin's address line.
func listening(t *testing.T, p *extProc) string {
	t.Helper()
	select {
	case line := <-p.lines:
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "RINGWIRE_LISTENING" || f[1] != "tcp" {
			t.Fatalf("remote plugin printed %q", line)
		}
		return f[2]
	case <-time.After(10 * time.Second):
		t.Fatalf("remote plugin printed no address; stderr: %s", p.stderr.String())
	}
	return ""
}

func TestRemote(t *testing.T) {
	ca, err := transport.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.ServerBundle("echo", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p := startExternal(t, plugin.ListenEnv("tcp", "127.0.0.1:0", nil, server)...)
	addr := listening(t, p)

	cli, err := ca.ClientConfig("host", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &plugin.Config{Name: "remote", Mux: hostMux(nil),
		Transport: transport.Config{TLS: cli}, Logger: childOutput}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The plugin serves every host that connects, one after the other or at
	// once.
	c1, err := plugin.Connect(ctx, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	c2, err := plugin.Connect(ctx, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("second Connect: %v", err)
	}
	if tr := c1.Info().Transport; tr.Kind != transport.KindTCP || !tr.TLS {
		t.Errorf("transport %v TLS %v", tr.Kind, tr.TLS)
	}
	externalCall(t, c1)
	externalCall(t, c2)
	if err := c1.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	externalCall(t, c2)

	// A host with a certificate from another CA is refused.
	other, _ := transport.NewCA("other-ca")
	bad, _ := other.ClientConfig("intruder", "127.0.0.1")
	badCfg := *cfg
	badCfg.Transport.TLS = bad
	if _, err := plugin.Connect(ctx, "tcp", addr, &badCfg); !errors.Is(err, negotiate.ErrUnauthorized) {
		t.Errorf("Connect with a foreign certificate: %v, want ErrUnauthorized", err)
	}
	// Another contract is refused too.
	otherCfg := *cfg
	otherCfg.Service = otherService
	if _, err := plugin.Connect(ctx, "tcp", addr, &otherCfg); !errors.Is(err, negotiate.ErrContractMismatch) {
		t.Errorf("Connect with another contract: %v, want ErrContractMismatch", err)
	}
	c2.Close()

	// SIGTERM ends a remote plugin gracefully.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(5 * time.Second); err != nil {
		t.Errorf("remote plugin after SIGTERM: %v; stderr: %s", err, p.stderr.String())
	}
}

// A Session supervises a remote plugin: when it goes away, the session
// reconnects with backoff once it is back.
func TestSessionRemoteReconnect(t *testing.T) {
	ca, err := transport.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	server, _ := ca.ServerBundle("echo", "127.0.0.1")
	p := startExternal(t, plugin.ListenEnv("tcp", "127.0.0.1:0", nil, server)...)
	addr := listening(t, p)
	cli, _ := ca.ClientConfig("host", "127.0.0.1")
	s := startSession(t, &plugin.Config{Name: "remote", Address: addr,
		Transport: transport.Config{TLS: cli}, Backoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		MaxRestarts: 100, HealthInterval: 50 * time.Millisecond, Logger: childOutput})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := s.Call(ctx, "echo", []byte("1")); err != nil || string(out) != "1" {
		t.Fatalf("call: %q, %v", out, err)
	}
	if st := s.Status(); st.PID != -1 || st.State != "ready" {
		t.Errorf("status %+v", st)
	}

	p.cmd.Process.Kill()
	p.wait(5 * time.Second)
	waitState(t, s, "restarting", 5*time.Second)
	time.Sleep(150 * time.Millisecond) // a few failed reconnections
	p2 := startExternal(t, plugin.ListenEnv("tcp", addr, nil, server)...)
	listening(t, p2)
	st := waitState(t, s, "ready", 10*time.Second)
	if st.Restarts < 2 {
		t.Errorf("restarts %d, want some failed attempts before the plugin came back", st.Restarts)
	}
	if out, err := s.Call(ctx, "echo", []byte("2")); err != nil || string(out) != "2" {
		t.Errorf("call after reconnecting: %q, %v", out, err)
	}
}
