package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// caTestTimeout bounds every connection and handshake in these tests.
const caTestTimeout = 10 * time.Second

func caMustCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", name, err)
	}
	return ca
}

func caMust[T any](t *testing.T) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// caServerResult is what the test server saw of its one connection.
type caServerResult struct {
	handshakeErr error
	peerName     string // the client certificate's common name
	line         string // what the client sent
}

// caServe listens on loopback, accepts one TLS connection, reads a line and
// answers "pong:" + line. The result arrives on the channel.
func caServe(t *testing.T, cfg *tls.Config) (string, <-chan caServerResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan caServerResult, 1)
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			res <- caServerResult{handshakeErr: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(caTestTimeout))
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			res <- caServerResult{handshakeErr: err}
			return
		}
		r := caServerResult{}
		if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
			r.peerName = pc[0].Subject.CommonName
		}
		line, err := bufio.NewReader(tc).ReadString('\n')
		if err != nil {
			r.handshakeErr = err
			res <- r
			return
		}
		r.line = strings.TrimSuffix(line, "\n")
		tc.Write([]byte("pong:" + line))
		res <- r
	}()
	return ln.Addr().String(), res
}

// caDial connects to addr and runs the client handshake, within a deadline.
func caDial(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, caTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(caTestTimeout))
	tc := tls.Client(c, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), caTestTimeout)
	defer cancel()
	return tc, tc.HandshakeContext(ctx)
}

func caResult(t *testing.T, res <-chan caServerResult) caServerResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(2 * caTestTimeout):
		t.Fatal("the server never finished")
		return caServerResult{}
	}
}

// caPingPong sends a line and checks the server's answer.
func caPingPong(t *testing.T, tc *tls.Conn, res <-chan caServerResult, wantPeer string) {
	t.Helper()
	if _, err := tc.Write([]byte("ping\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := bufio.NewReader(tc).ReadString('\n')
	if err != nil || got != "pong:ping\n" {
		t.Fatalf("read %q, %v", got, err)
	}
	r := caResult(t, res)
	if r.handshakeErr != nil || r.line != "ping" || r.peerName != wantPeer {
		t.Fatalf("server saw %+v, want peer %q and line ping", r, wantPeer)
	}
	if v := tc.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("TLS version %#x, want 1.3", v)
	}
}

// caRefusedByServer checks that a handshake the server refused shows on
// both sides: a server handshake error and a client that cannot read.
func caRefusedByServer(t *testing.T, tc *tls.Conn, clientErr error, res <-chan caServerResult) {
	t.Helper()
	if clientErr == nil {
		// In TLS 1.3 the client finishes first; the refusal arrives as an
		// alert on its first read.
		tc.Write([]byte("ping\n"))
		if n, err := tc.Read(make([]byte, 16)); err == nil {
			t.Errorf("client read %d bytes from a server that should have refused it", n)
		}
	}
	if r := caResult(t, res); r.handshakeErr == nil {
		t.Errorf("the server accepted the client (peer %q)", r.peerName)
	}
}

func TestTLSHandshake(t *testing.T) {
	ca := caMustCA(t, "host-ca")
	srv := caMust[*tls.Config](t)(ca.ServerConfig("host", "127.0.0.1", "localhost"))
	for _, serverName := range []string{"host", "127.0.0.1", "localhost"} {
		t.Run(serverName, func(t *testing.T) {
			addr, res := caServe(t, srv)
			cli := caMust[*tls.Config](t)(ca.ClientConfig("plugin-a", serverName))
			tc, err := caDial(t, addr, cli)
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			caPingPong(t, tc, res, "plugin-a")
			if cn := tc.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "host" {
				t.Errorf("server certificate CN %q, want host", cn)
			}
		})
	}
}

func TestTLSNoClientCertificate(t *testing.T) {
	ca := caMustCA(t, "host-ca")
	addr, res := caServe(t, caMust[*tls.Config](t)(ca.ServerConfig("host")))
	cli := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.certPool(), ServerName: "host"}
	tc, err := caDial(t, addr, cli)
	caRefusedByServer(t, tc, err, res)
}

func TestTLSForeignClientCertificate(t *testing.T) {
	ca, other := caMustCA(t, "host-ca"), caMustCA(t, "other-ca")
	addr, res := caServe(t, caMust[*tls.Config](t)(ca.ServerConfig("host")))
	cli := caMust[*tls.Config](t)(other.ClientConfig("intruder", "host"))
	cli.RootCAs = ca.certPool() // it trusts the server: only its own certificate is wrong
	tc, err := caDial(t, addr, cli)
	caRefusedByServer(t, tc, err, res)
}

func TestTLSForeignServerCertificate(t *testing.T) {
	ca, other := caMustCA(t, "host-ca"), caMustCA(t, "other-ca")
	srv := caMust[*tls.Config](t)(other.ServerConfig("host"))
	srv.ClientCAs = ca.certPool() // it would accept the client: only its own certificate is wrong
	addr, res := caServe(t, srv)
	_, err := caDial(t, addr, caMust[*tls.Config](t)(ca.ClientConfig("plugin", "host")))
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("client handshake: %v, want x509.UnknownAuthorityError", err)
	}
	if r := caResult(t, res); r.handshakeErr == nil {
		t.Error("the server finished a handshake the client refused")
	}
}

// TestTLSServerCertificateAsClient: a certificate the CA issued to a server
// (a remote plugin's ServerBundle, say) does not authenticate a client.
func TestTLSServerCertificateAsClient(t *testing.T) {
	ca := caMustCA(t, "host-ca")
	addr, res := caServe(t, caMust[*tls.Config](t)(ca.ServerConfig("host")))
	stolen := caMust[*tls.Config](t)(ca.ServerConfig("another-plugin", "127.0.0.1"))
	cli := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.certPool(), ServerName: "host", Certificates: stolen.Certificates}
	tc, err := caDial(t, addr, cli)
	caRefusedByServer(t, tc, err, res)
}

// TestTLSClientCertificateAsServer: a certificate the CA issued to a client
// (a plugin's ClientBundle) does not authenticate a server.
func TestTLSClientCertificateAsServer(t *testing.T) {
	ca := caMustCA(t, "host-ca")
	stolen := caMust[tls.Certificate](t)(ca.issue(x509.ExtKeyUsageClientAuth, "host", "127.0.0.1"))
	addr, res := caServe(t, caServerConfig(stolen, ca.certPool()))
	_, err := caDial(t, addr, caMust[*tls.Config](t)(ca.ClientConfig("plugin", "host")))
	var invalid x509.CertificateInvalidError
	if !errors.As(err, &invalid) || invalid.Reason != x509.IncompatibleUsage {
		t.Errorf("client handshake: %v, want x509.CertificateInvalidError (incompatible usage)", err)
	}
	if r := caResult(t, res); r.handshakeErr == nil {
		t.Error("the server finished a handshake the client refused")
	}
}

func TestTLSWrongServerName(t *testing.T) {
	ca := caMustCA(t, "host-ca")
	addr, res := caServe(t, caMust[*tls.Config](t)(ca.ServerConfig("host", "127.0.0.1")))
	_, err := caDial(t, addr, caMust[*tls.Config](t)(ca.ClientConfig("plugin", "someone-else")))
	var hostErr x509.HostnameError
	if !errors.As(err, &hostErr) {
		t.Errorf("client handshake: %v, want x509.HostnameError", err)
	}
	caResult(t, res)
}

func TestTLSOldVersionRefused(t *testing.T) {
	ca := caMustCA(t, "host-ca")
	addr, res := caServe(t, caMust[*tls.Config](t)(ca.ServerConfig("host")))
	cli := caMust[*tls.Config](t)(ca.ClientConfig("plugin", "host"))
	cli.MinVersion, cli.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if _, err := caDial(t, addr, cli); err == nil {
		t.Error("a TLS 1.2 client completed a handshake")
	}
	if r := caResult(t, res); r.handshakeErr == nil {
		t.Error("the server accepted TLS 1.2")
	}
}

func TestTLSBundles(t *testing.T) {
	ca := caMustCA(t, "host-ca")
	t.Run("Client", func(t *testing.T) {
		bundle := caMust[[]byte](t)(ca.ClientBundle("plugin-b", "host"))
		if bytes.IndexByte(bundle, 0) >= 0 {
			t.Fatal("the bundle cannot travel in an environment variable")
		}
		cli, err := ClientConfigFromBundle(bundle)
		if err != nil {
			t.Fatal(err)
		}
		if cli.ServerName != "host" || cli.MinVersion != tls.VersionTLS13 {
			t.Errorf("ServerName %q, MinVersion %#x", cli.ServerName, cli.MinVersion)
		}
		addr, res := caServe(t, caMust[*tls.Config](t)(ca.ServerConfig("host")))
		tc, err := caDial(t, addr, cli)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		caPingPong(t, tc, res, "plugin-b")
	})
	t.Run("Server", func(t *testing.T) {
		srv, err := ServerConfigFromBundle(caMust[[]byte](t)(ca.ServerBundle("remote", "127.0.0.1")))
		if err != nil {
			t.Fatal(err)
		}
		if srv.ClientAuth != tls.RequireAndVerifyClientCert {
			t.Errorf("ClientAuth %v", srv.ClientAuth)
		}
		addr, res := caServe(t, srv)
		tc, err := caDial(t, addr, caMust[*tls.Config](t)(ca.ClientConfig("host", "127.0.0.1")))
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		caPingPong(t, tc, res, "host")
		// A client of another CA is refused by the bundle's server too.
		other := caMustCA(t, "other-ca")
		addr, res = caServe(t, srv)
		cli := caMust[*tls.Config](t)(other.ClientConfig("intruder", "127.0.0.1"))
		cli.RootCAs = ca.certPool()
		tc, err = caDial(t, addr, cli)
		caRefusedByServer(t, tc, err, res)
	})
	t.Run("NoServerName", func(t *testing.T) {
		cli, err := ClientConfigFromBundle(caMust[[]byte](t)(ca.ClientBundle("plugin", "")))
		if err != nil || cli.ServerName != "" {
			t.Fatalf("ServerName %q, %v", cli.ServerName, err)
		}
	})
}

func TestTLSBundleRejects(t *testing.T) {
	ca, other := caMustCA(t, "host-ca"), caMustCA(t, "other-ca")
	good := caMust[[]byte](t)(ca.ClientBundle("plugin", "host"))
	server := caMust[[]byte](t)(ca.ServerBundle("remote", "127.0.0.1"))
	foreign := caMust[[]byte](t)(other.ClientBundle("plugin", "host"))
	blocks := func(b []byte) [][]byte { // the bundle's three PEM blocks
		parts := bytes.SplitAfter(b, []byte("-----\n"))
		var out [][]byte
		for i := 0; i+1 < len(parts); i += 2 {
			out = append(out, append(append([]byte(nil), parts[i]...), parts[i+1]...))
		}
		return out
	}
	g, f := blocks(good), blocks(foreign)
	if len(g) != 3 || len(f) != 3 {
		t.Fatalf("bundles split into %d and %d blocks, want 3", len(g), len(f))
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for name, b := range map[string][]byte{
		"empty":              nil,
		"garbage":            []byte("not pem at all"),
		"truncated":          good[:len(good)/2],
		"trailing text":      cat(good, []byte("trailing")),
		"no key":             cat(g[0], g[1]),
		"no CA":              cat(g[1], g[2]),
		"no leaf":            cat(g[0], g[2]),
		"two keys":           cat(g[0], g[1], g[2], g[2]),
		"other key":          cat(g[0], g[1], f[2]),
		"leaf of another CA": cat(g[0], f[1], f[2]),
		"CA is a leaf":       cat(bytes.Replace(g[1], []byte("client"), []byte("ca"), 1), g[1], g[2]),
		"server bundle":      server,
		"oversized":          cat(good, bytes.Repeat([]byte("\n"), caMaxBundle)),
		"unknown block":      cat(good, []byte("-----BEGIN THING-----\nAAAA\n-----END THING-----\n")),
		"bad server name":    bytes.Replace(good, []byte("Server-Name: host"), []byte("Server-Name: a b"), 1),
	} {
		if _, err := ClientConfigFromBundle(b); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	if _, err := ServerConfigFromBundle(good); !errors.Is(err, ErrConfig) {
		t.Errorf("a client bundle as a server's: %v, want ErrConfig", err)
	}
}

func TestCACertificates(t *testing.T) {
	before := time.Now()
	ca := caMustCA(t, "host-ca")
	root := ca.certificate()
	if !root.IsCA || !root.BasicConstraintsValid || root.MaxPathLen != 0 || !root.MaxPathLenZero {
		t.Errorf("CA constraints: IsCA %v, valid %v, MaxPathLen %d (zero %v)",
			root.IsCA, root.BasicConstraintsValid, root.MaxPathLen, root.MaxPathLenZero)
	}
	if root.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("the CA cannot sign certificates")
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Errorf("the CA is not self-signed: %v", err)
	}
	if pk, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || pk.Curve != elliptic.P256() {
		t.Errorf("CA key %T, want ECDSA P-256", root.PublicKey)
	}
	if d := root.NotAfter.Sub(before); d < caValidity-time.Minute || d > caValidity+time.Minute {
		t.Errorf("the CA is valid for %v, want %v", d, caValidity)
	}
	if root.SerialNumber.Sign() <= 0 || root.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v", root.SerialNumber)
	}
	if root.Subject.CommonName != "host-ca" {
		t.Errorf("CA CN %q", root.Subject.CommonName)
	}

	cert := caMust[tls.Certificate](t)(ca.issue(x509.ExtKeyUsageServerAuth, "plugin-a", "127.0.0.1", "::1", "example.internal", "plugin-a"))
	leaf := cert.Leaf
	if leaf == nil {
		t.Fatal("Issue left Leaf nil")
	}
	if leaf.IsCA {
		t.Error("a leaf is a CA")
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("leaf key usage %v, want digital signature only", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("leaf extended key usage %v, want server auth only", leaf.ExtKeyUsage)
	}
	if leaf.Subject.CommonName != "plugin-a" {
		t.Errorf("leaf CN %q", leaf.Subject.CommonName)
	}
	if got := strings.Join(leaf.DNSNames, ","); got != "plugin-a,example.internal" {
		t.Errorf("DNS names %q", got)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IP addresses %v", leaf.IPAddresses)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "ringwire:plugin-a" {
		t.Errorf("URIs %v", leaf.URIs)
	}
	if leaf.NotAfter.After(root.NotAfter) || leaf.NotBefore.Before(root.NotBefore) {
		t.Errorf("leaf valid %v–%v outside the CA's %v–%v", leaf.NotBefore, leaf.NotAfter, root.NotBefore, root.NotAfter)
	}
	if leaf.SerialNumber.Cmp(root.SerialNumber) == 0 || leaf.SerialNumber.BitLen() > 128 {
		t.Errorf("leaf serial %v", leaf.SerialNumber)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.certPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("a server leaf does not verify for server auth: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.certPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("a server leaf verifies for client auth")
	}
	if err := leaf.VerifyHostname("example.internal"); err != nil {
		t.Error(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: caMustCA(t, "other").certPool()}); err == nil {
		t.Error("a leaf verifies against another CA")
	}
	if pk, ok := cert.PrivateKey.(*ecdsa.PrivateKey); !ok || !pk.PublicKey.Equal(leaf.PublicKey) {
		t.Error("the private key does not match the leaf")
	}

	// A name that is no DNS name still gets its URI.
	odd := caMust[tls.Certificate](t)(ca.issue(x509.ExtKeyUsageClientAuth, "my plugin/1"))
	if len(odd.Leaf.DNSNames) != 0 || len(odd.Leaf.URIs) != 1 || odd.Leaf.URIs[0].String() != "ringwire:my%20plugin%2F1" {
		t.Errorf("DNS %v, URIs %v", odd.Leaf.DNSNames, odd.Leaf.URIs)
	}
	// Every certificate gets its own serial.
	again := caMust[tls.Certificate](t)(ca.issue(x509.ExtKeyUsageClientAuth, "plugin-a"))
	if again.Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("two leaves share a serial number")
	}
}

func TestCAInvalidInput(t *testing.T) {
	if _, err := NewCA(""); !errors.Is(err, ErrConfig) {
		t.Errorf("NewCA(\"\"): %v", err)
	}
	ca := caMustCA(t, "host-ca")
	for _, tc := range []struct {
		name  string
		hosts []string
	}{
		{"", nil},
		{strings.Repeat("n", 65), nil},
		{"tab\there", nil},
		{"\xff", nil},
		{"ok", []string{"bad host"}},
		{"ok", []string{""}},
		{"ok", []string{"-leading.example"}},
		{"ok", []string{"fe80::1%eth0"}},
	} {
		if _, err := ca.issue(x509.ExtKeyUsageServerAuth, tc.name, tc.hosts...); !errors.Is(err, ErrConfig) {
			t.Errorf("Issue(%q, %q): %v, want ErrConfig", tc.name, tc.hosts, err)
		}
	}
	if _, err := ca.ClientBundle("ok", "bad name"); !errors.Is(err, ErrConfig) {
		t.Errorf("ClientBundle with a bad server name: %v", err)
	}
}

func TestCAPoolIsACopy(t *testing.T) {
	ca, other := caMustCA(t, "host-ca"), caMustCA(t, "other-ca")
	ca.certPool().AddCert(other.certificate())
	foreign := caMust[tls.Certificate](t)(other.issue(x509.ExtKeyUsageClientAuth, "x"))
	if _, err := foreign.Leaf.Verify(x509.VerifyOptions{Roots: ca.certPool()}); err == nil {
		t.Error("changing a returned pool changed the CA's trust")
	}
}
