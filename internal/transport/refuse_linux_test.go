package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	hs "github.com/ringwire/ringwire/internal/handshake"
	negotiate "github.com/ringwire/ringwire/internal/handshake"
)

// logCapture is a slog.Handler that keeps the errors of failed handshakes.
type logCapture struct {
	mu   sync.Mutex
	errs []error
	ch   chan error
}

func newLogCapture() *logCapture { return &logCapture{ch: make(chan error, 16)} }

func (h *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCapture) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logCapture) WithGroup(string) slog.Handler            { return h }
func (h *logCapture) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && a.Key == "err" {
			select {
			case h.ch <- err:
			default:
			}
		}
		return true
	})
	return nil
}

// next waits at most d for the next logged handshake error.
func (h *logCapture) next(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-h.ch:
		return err
	case <-time.After(d):
		t.Fatalf("no handshake failure logged within %v", d)
	}
	return nil
}

// expectNothingServed checks that the listener hands out no connection.
func expectNothingServed(t *testing.T, l *Listener) {
	t.Helper()
	got := make(chan Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			got <- c
		}
	}()
	select {
	case c := <-got:
		c.Close()
		t.Fatal("a refused peer was served")
	case <-time.After(200 * time.Millisecond):
	}
}

func TestXprocFallback(t *testing.T) {
	cases := []struct {
		name               string
		parent, child      Mode
		tcp                bool
		want               string
		parentErr, nothing bool
	}{
		{name: "both-auto-shm", want: "ok shm"},
		{name: "child-framed", child: ModeFramed, want: "ok unix"},
		{name: "parent-framed", parent: ModeFramed, want: "ok unix"},
		{name: "forced-shm", parent: ModeShm, child: ModeShm, want: "ok shm"},
		{name: "remote-tcp-mtls", tcp: true, want: "ok tcp"},
		{name: "parent-shm-child-framed", parent: ModeShm, child: ModeFramed, want: "err refused", parentErr: true},
		{name: "parent-framed-child-shm", parent: ModeFramed, child: ModeShm, want: "err refused", parentErr: true},
	}
	modeName := map[Mode]string{ModeAuto: "", ModeShm: "shm", ModeFramed: "framed"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := newLogCapture()
			cfg := &Config{Mode: tc.parent, Logger: slog.New(logs)}
			k := KindUnix
			if tc.tcp {
				k = KindTCP
			}
			l, spec := listenCombo(t, combo{kind: k}, cfg)
			cfg.Mode = tc.parent // listenCombo set its combo's mode (the Listener keeps a copy)
			spec.Mode, spec.Comp = modeName[tc.child], ""
			if !tc.tcp {
				// listenCombo fixed the modes for its combo; the test's win.
				l.Close()
				var err error
				l, err = Listen("unix", unixAddr(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				spec.Addr = l.Addr().String()
			}
			got := make(chan Conn, 1)
			go func() {
				if c, err := l.Accept(); err == nil {
					got <- c
				}
			}()
			line := dialReport(t, spec)
			if !strings.HasPrefix(line, tc.want) {
				t.Fatalf("child: %q, want %q", line, tc.want)
			}
			if tc.parentErr {
				if err := logs.next(t, 5*time.Second); err == nil {
					t.Fatal("no error on the listener's side")
				}
				return
			}
			select {
			case c := <-got:
				if c.Info().Kind.String() != strings.TrimPrefix(tc.want, "ok ") {
					t.Fatalf("parent negotiated %v, child %q", c.Info().Kind, line)
				}
				c.Close()
			case <-time.After(5 * time.Second):
				t.Fatal("the parent accepted nothing")
			}
		})
	}
}

func TestXprocRefusals(t *testing.T) {
	t.Run("wrong-token", func(t *testing.T) {
		logs := newLogCapture()
		l, spec := listenCombo(t, combo{kind: KindShm}, &Config{Token: []byte("s3cret"), Logger: slog.New(logs)})
		spec.Token = "guess"
		if line := dialReport(t, spec); !strings.HasPrefix(line, "err unauthorized") || strings.Contains(line, "s3cret") {
			t.Fatalf("child: %q", line)
		}
		if err := logs.next(t, 5*time.Second); !errors.Is(err, negotiate.ErrUnauthorized) {
			t.Fatalf("listener: %v", err)
		}
		expectNothingServed(t, l)
	})
	t.Run("right-token", func(t *testing.T) {
		l, spec := listenCombo(t, combo{kind: KindShm}, &Config{Token: []byte("s3cret")})
		spec.Token = "s3cret"
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Close()
			}
		}()
		if line := dialReport(t, spec); line != "ok shm" {
			t.Fatalf("child: %q", line)
		}
	})
	t.Run("uid-not-allowed", func(t *testing.T) {
		if os.Getuid() != 0 {
			t.Skip("needs root to run the child under another uid")
		}
		logs := newLogCapture()
		l, spec := listenCombo(t, combo{kind: KindUnix}, &Config{Logger: slog.New(logs)})
		spec.UID = "65534"
		if line := dialReport(t, spec); !strings.HasPrefix(line, "err unauthorized") {
			t.Fatalf("child: %q", line)
		}
		if err := logs.next(t, 5*time.Second); !errors.Is(err, negotiate.ErrUnauthorized) || !strings.Contains(err.Error(), "65534") {
			t.Fatalf("listener: %v", err)
		}
		expectNothingServed(t, l)
	})
	t.Run("client-checks-listener-uid", func(t *testing.T) {
		if os.Getuid() != 0 {
			t.Skip("needs root to run the child under another uid")
		}
		l, spec := listenCombo(t, combo{kind: KindUnix}, &Config{AllowUIDs: []int{65534}})
		spec.UID = "65534"
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Close()
			}
		}()
		// The child's own check refuses a root listener unless allowed, so
		// the child must allow uid 0: it does not; expect its refusal.
		line := dialReport(t, spec)
		if !strings.HasPrefix(line, "err unauthorized") || !strings.Contains(line, "uid 0") {
			t.Fatalf("child: %q", line)
		}
	})
	t.Run("contract-mismatch", func(t *testing.T) {
		logs := newLogCapture()
		l, spec := listenCombo(t, combo{kind: KindShm}, &Config{Contract: []byte{0xaa, 0xbb}, Logger: slog.New(logs)})
		spec.Contract = "\x01\x02"
		line := dialReport(t, spec)
		if !strings.HasPrefix(line, "err contract") || !strings.Contains(line, "aabb") || !strings.Contains(line, "0102") {
			t.Fatalf("child: %q", line)
		}
		err := logs.next(t, 5*time.Second)
		if !errors.Is(err, negotiate.ErrContractMismatch) || !strings.Contains(err.Error(), "aabb") || !strings.Contains(err.Error(), "0102") {
			t.Fatalf("listener: %v", err)
		}
		expectNothingServed(t, l)
	})
}

// rawDial connects to l without a handshake.
func rawDial(t *testing.T, l *Listener) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout(l.Addr().Network(), l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	return nc
}

func TestRefusalsOnTheWire(t *testing.T) {
	t.Run("version-disjoint", func(t *testing.T) {
		logs := newLogCapture()
		l, _ := listenCombo(t, combo{kind: KindUnix}, &Config{Logger: slog.New(logs)})
		nc := rawDial(t, l)
		if err := hs.WriteMessage(nc, &hs.Hello{MinVersion: 90, MaxVersion: 99}); err != nil {
			t.Fatal(err)
		}
		m, err := hs.ReadMessage(nc)
		if err != nil {
			t.Fatal(err)
		}
		ref, ok := m.(*hs.Refuse)
		if !ok || !errors.Is(ref.Err(), negotiate.ErrVersion) {
			t.Fatalf("got %#v, want a version refusal", m)
		}
		if err := logs.next(t, 5*time.Second); !errors.Is(err, negotiate.ErrVersion) {
			t.Fatalf("listener: %v", err)
		}
		expectNothingServed(t, l)
	})
	t.Run("garbage", func(t *testing.T) {
		logs := newLogCapture()
		l, _ := listenCombo(t, combo{kind: KindUnix}, &Config{Logger: slog.New(logs)})
		nc := rawDial(t, l)
		if _, err := nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		if err := logs.next(t, 5*time.Second); !errors.Is(err, negotiate.ErrMalformed) {
			t.Fatalf("listener: %v", err)
		}
		expectNothingServed(t, l)
	})
	t.Run("silent-peer", func(t *testing.T) {
		logs := newLogCapture()
		l, _ := listenCombo(t, combo{kind: KindUnix}, &Config{HandshakeTimeout: 200 * time.Millisecond, Logger: slog.New(logs)})
		nc := rawDial(t, l)
		start := time.Now()
		if err := logs.next(t, 5*time.Second); !errors.Is(err, ErrTimeout) {
			t.Fatalf("listener: %v", err)
		}
		// The listener hung up on us.
		if _, err := nc.Read(make([]byte, 1)); err == nil {
			t.Fatal("the silent peer's connection is still open")
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("refused after %v, the timeout is 200ms", d)
		}
		expectNothingServed(t, l)
	})
	t.Run("tcp-without-client-certificate", func(t *testing.T) {
		logs := newLogCapture()
		l, _ := listenCombo(t, combo{kind: KindTCP}, &Config{Logger: slog.New(logs)})
		tc := &tls.Config{RootCAs: ca(t).certPool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := Dial(ctx, "tcp", l.Addr().String(), &Config{TLS: tc})
		if !errors.Is(err, negotiate.ErrUnauthorized) {
			t.Fatalf("dial: %v", err)
		}
		if err := logs.next(t, 5*time.Second); !errors.Is(err, negotiate.ErrUnauthorized) {
			t.Fatalf("listener: %v", err)
		}
		expectNothingServed(t, l)
	})
	t.Run("tcp-certificate-from-another-ca", func(t *testing.T) {
		logs := newLogCapture()
		l, _ := listenCombo(t, combo{kind: KindTCP}, &Config{Logger: slog.New(logs)})
		tc := intruderTLS(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := Dial(ctx, "tcp", l.Addr().String(), &Config{TLS: tc}); !errors.Is(err, negotiate.ErrUnauthorized) {
			t.Fatalf("dial: %v", err)
		}
		if err := logs.next(t, 5*time.Second); !errors.Is(err, negotiate.ErrUnauthorized) {
			t.Fatalf("listener: %v", err)
		}
		expectNothingServed(t, l)
	})
	t.Run("tcp-expired-client-certificate", func(t *testing.T) {
		logs := newLogCapture()
		l, _ := listenCombo(t, combo{kind: KindTCP}, &Config{Logger: slog.New(logs)})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := Dial(ctx, "tcp", l.Addr().String(), &Config{TLS: expiredTLS(t)}); !errors.Is(err, negotiate.ErrUnauthorized) {
			t.Fatalf("dial: %v", err)
		}
		if err := logs.next(t, 5*time.Second); !errors.Is(err, negotiate.ErrUnauthorized) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("listener: %v", err)
		}
		expectNothingServed(t, l)
	})
	t.Run("tcp-replayed-handshake", func(t *testing.T) {
		// What an eavesdropper recorded of a good client's connection,
		// played again on a connection of its own.
		logs := newLogCapture()
		l, _ := listenCombo(t, combo{kind: KindTCP}, &Config{Logger: slog.New(logs)})
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Close()
			}
		}()
		tc, err := ca(t).ClientConfig("plugin", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		nc, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rec := &recordingNetConn{Conn: nc}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := Client(ctx, tls.Client(rec, tc), &Config{TLS: tc})
		if err != nil {
			t.Fatalf("the good client: %v", err)
		}
		c.Close()
		replay, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer replay.Close()
		if _, err := replay.Write(rec.sent()); err != nil {
			t.Fatal(err)
		}
		if err := logs.next(t, 5*time.Second); !errors.Is(err, negotiate.ErrUnauthorized) {
			t.Fatalf("listener, on the replay: %v", err)
		}
		expectNothingServed(t, l)
	})
	t.Run("tcp-plaintext-refused-by-config", func(t *testing.T) {
		if _, err := Listen("tcp", "127.0.0.1:0", &Config{}); !errors.Is(err, ErrConfig) {
			t.Fatalf("listen: %v", err)
		}
		if _, err := Dial(context.Background(), "tcp", "127.0.0.1:1", &Config{}); !errors.Is(err, ErrConfig) {
			t.Fatalf("dial: %v", err)
		}
	})
}

// TestDialCancelled: cancelling the context ends a handshake with a silent
// listener promptly, with an error naming both the timeout and the cause.
func TestDialCancelled(t *testing.T) {
	nl, err := net.Listen("unix", unixAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	go func() {
		if c, err := nl.Accept(); err == nil {
			defer c.Close()
			_, _ = c.Read(make([]byte, 1<<16)) // takes the hello, answers nothing
			time.Sleep(5 * time.Second)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err = Dial(ctx, "unix", nl.Addr().String(), &Config{Logger: quietLogger})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.Canceled) {
		t.Fatalf("dial: %v, want ErrTimeout and context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("dial returned after %v", d)
	}
}

// TestUnverifiedClientCertificate: a listener whose TLS config asks for a
// client certificate without verifying it still refuses an unknown one.
func TestUnverifiedClientCertificate(t *testing.T) {
	sc, err := ca(t).ServerConfig("parent", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	sc.ClientAuth = tls.RequireAnyClientCert
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := newLogCapture()
	l, err := NewListener(tls.NewListener(nl, sc), &Config{Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tc := intruderTLS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = Dial(ctx, "tcp", l.Addr().String(), &Config{TLS: tc, Logger: quietLogger})
	if err := logs.next(t, 5*time.Second); !errors.Is(err, negotiate.ErrUnauthorized) {
		t.Fatalf("listener: %v", err)
	}
	expectNothingServed(t, l)
}

// intruderTLS is a client config that trusts the test CA but presents a
// certificate from another one.
func intruderTLS(t *testing.T) *tls.Config {
	t.Helper()
	other, err := NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := other.issue(x509.ExtKeyUsageClientAuth, "intruder")
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: ca(t).certPool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
}

// expiredTLS is a client config whose certificate, from the test CA, expired
// an hour ago.
func expiredTLS(t *testing.T) *tls.Config {
	t.Helper()
	authority := ca(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: "expired"},
		NotBefore:    now.Add(-2 * time.Hour),
		NotAfter:     now.Add(-time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, authority.cert, &key.PublicKey, authority.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: authority.certPool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// recordingNetConn keeps a copy of what is written through it.
type recordingNetConn struct {
	net.Conn
	mu  sync.Mutex
	out []byte
}

func (r *recordingNetConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.out = append(r.out, p...)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *recordingNetConn) sent() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.out...)
}

// TestUnixSocketMode: a Unix listener's socket file is the owner's only
// (0600) unless other uids are allowed, and another uid cannot even
// connect to it.
func TestUnixSocketMode(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		allow []int
		want  os.FileMode
	}{{"owner-only", nil, 0o600}, {"others-allowed", []int{65534}, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".sock")
			l, err := Listen("unix", path, &Config{AllowUIDs: tc.allow, Logger: quietLogger})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != 0 && fi.Mode().Perm() != tc.want {
				t.Fatalf("socket mode %v, want %v", fi.Mode().Perm(), tc.want)
			}
			if tc.want == 0 && fi.Mode().Perm() == 0o600 {
				t.Fatalf("socket mode %v with other uids allowed: left to the caller, not forced to 0600", fi.Mode().Perm())
			}
		})
	}
	if os.Getuid() != 0 {
		return
	}
	// Another uid, in a directory it may enter, is refused by the file
	// system before any handshake.
	open, err := os.MkdirTemp("", "ringwire-mode-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(open)
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(open, "owner.sock")
	l, err := Listen("unix", path, &Config{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	spec := childSpec{Role: "echo", Network: "unix", Addr: path, UID: "65534"}
	if line := dialReport(t, spec); !strings.Contains(line, "permission denied") {
		t.Fatalf("a child of uid 65534: %q, want permission denied", line)
	}
}

// levelCounter counts log records by level and keeps the WARN ones' attrs.
type levelCounter struct {
	mu    sync.Mutex
	warns []map[string]string
	debug int
}

func (h *levelCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *levelCounter) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *levelCounter) WithGroup(string) slog.Handler            { return h }
func (h *levelCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "ringwire: handshake failed" {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Level >= slog.LevelWarn {
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
		h.warns = append(h.warns, attrs)
	} else {
		h.debug++
	}
	return nil
}

// TestStrangerLogRateLimited: a flood of strangers' failed handshakes writes
// one WARN line a second, with the count of those it did not log, and the
// rest at DEBUG; a log is not something a stranger can flood.
func TestStrangerLogRateLimited(t *testing.T) {
	h := &levelCounter{}
	l, _ := listenCombo(t, combo{kind: KindUnix}, &Config{Logger: slog.New(h)})
	garbage := func() {
		nc := rawDial(t, l)
		defer nc.Close()
		_, _ = nc.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, nc) // until the listener hangs up
	}
	for range 50 {
		garbage()
	}
	h.mu.Lock()
	warns, debug := len(h.warns), h.debug
	h.mu.Unlock()
	if warns < 1 || warns > 2 || debug < 40 {
		t.Fatalf("50 failed handshakes in well under a second: %d WARN and %d DEBUG lines, want 1 or 2 WARN", warns, debug)
	}
	time.Sleep(strangerLogEvery + 100*time.Millisecond)
	garbage()
	// Each WARN line counts the failures logged only at DEBUG since the
	// one before it (a slow machine may have let a second WARN through
	// during the 50), so together they account for all 51.
	// The listener logs the failure as its handshake goroutine ends, which
	// may be just after the hang-up garbage waited for.
	deadline := time.Now().Add(5 * time.Second)
	h.mu.Lock()
	defer h.mu.Unlock()
	for len(h.warns) <= warns && time.Now().Before(deadline) {
		h.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
		h.mu.Lock()
	}
	if len(h.warns) <= warns {
		t.Fatalf("no WARN line a second later: %v", h.warns)
	}
	sum := 0
	for _, w := range h.warns {
		n, _ := strconv.Atoi(w["also_failed_since_last"])
		sum += n
	}
	if len(h.warns)+sum != 51 {
		t.Fatalf("the WARN lines %v account for %d failures, want 51", h.warns, len(h.warns)+sum)
	}
}
