package transport

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// caValidity is how long a CA from NewCA is valid. Leaves it issues are
// valid as long, but never beyond the CA itself.
const caValidity = 365 * 24 * time.Hour

// caClockSkew back-dates certificates so a peer whose clock lags a little
// still accepts them.
const caClockSkew = time.Hour

// caMaxBundle bounds a bundle handed to ClientConfigFromBundle or
// ServerConfigFromBundle (ours are about 2 KiB).
const caMaxBundle = 64 << 10

// PEM headers of a bundle's blocks.
const (
	caRoleHeader       = "Ringwire-Role"
	caServerNameHeader = "Ringwire-Server-Name"
	caRoleCA           = "ca"
	caRoleClient       = "client"
	caRoleServer       = "server"
)

// CA is an in-memory certificate authority for mutual TLS between a host and
// its plugins: an ECDSA P-256 self-signed root whose key never leaves the
// process. Nothing is written to disk. It is safe for concurrent use.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

// NewCA creates a CA named name (its subject's common name), valid for
// caValidity from now and allowed to sign leaves only (path length 0).
func NewCA(name string) (*CA, error) {
	if err := caCheckName(name); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("transport: CA key: %w", err)
	}
	serial, err := caSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"ringwire"}},
		NotBefore:             now.Add(-caClockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("transport: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("transport: CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: key, pool: pool}, nil
}

// caSerial returns a random positive 128-bit serial number.
func caSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("transport: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// certificate returns the CA's certificate (tests check its validity). It is
// shared: do not modify it.
func (ca *CA) certificate() *x509.Certificate { return ca.cert }

// certPool returns a new pool holding only the CA's certificate.
func (ca *CA) certPool() *x509.CertPool { return ca.pool.Clone() }

// issue creates a leaf certificate and key for name, good for one use only:
// usage is x509.ExtKeyUsageServerAuth or x509.ExtKeyUsageClientAuth, so a
// server's certificate is refused when presented as a client's, and the
// reverse (crypto/tls checks the extended key usage of both). Its common name is name; its subject alternative
// names are the URI "ringwire:" + name (URL-escaped), name itself as a DNS
// name when it is a valid one, and hosts — each an IP address or a DNS name.
// A client verifies a server against these names (tls.Config.ServerName).
func (ca *CA) issue(usage x509.ExtKeyUsage, name string, hosts ...string) (tls.Certificate, error) {
	if err := caCheckName(name); err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name, Organization: []string{"ringwire"}},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{usage},
		URIs:                  []*url.URL{{Scheme: "ringwire", Opaque: url.PathEscape(name)}},
		BasicConstraintsValid: true,
	}
	if caValidDNSName(name) {
		tmpl.DNSNames = append(tmpl.DNSNames, name)
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if !caValidDNSName(h) {
			return tls.Certificate{}, fmt.Errorf("transport: certificate host %q is neither an IP address nor a DNS name: %w", h, ErrConfig)
		}
		if !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	serial, err := caSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl.SerialNumber = serial
	now := time.Now()
	tmpl.NotBefore = now.Add(-caClockSkew)
	if tmpl.NotBefore.Before(ca.cert.NotBefore) {
		tmpl.NotBefore = ca.cert.NotBefore
	}
	tmpl.NotAfter = now.Add(caValidity)
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	if !tmpl.NotAfter.After(now) {
		return tls.Certificate{}, fmt.Errorf("transport: the CA expired on %v: %w", ca.cert.NotAfter, ErrConfig)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: leaf key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: leaf certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: leaf certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// ServerConfig returns a TLS 1.3 server configuration with a fresh leaf for
// name and hosts that requires clients to present a certificate from this CA.
func (ca *CA) ServerConfig(name string, hosts ...string) (*tls.Config, error) {
	cert, err := ca.issue(x509.ExtKeyUsageServerAuth, name, hosts...)
	if err != nil {
		return nil, err
	}
	return caServerConfig(cert, ca.certPool()), nil
}

// ClientConfig returns a TLS 1.3 client configuration with a fresh leaf for
// name that trusts only this CA and expects the server to be serverName
// (empty: tls.Dial fills it in from the address dialled).
func (ca *CA) ClientConfig(name, serverName string) (*tls.Config, error) {
	cert, err := ca.issue(x509.ExtKeyUsageClientAuth, name)
	if err != nil {
		return nil, err
	}
	return caClientConfig(cert, ca.certPool(), serverName), nil
}

func caServerConfig(cert tls.Certificate, pool *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
}

func caClientConfig(cert tls.Certificate, pool *x509.CertPool, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
	}
}

// ClientBundle issues a client leaf for name and returns it as PEM, with the
// CA certificate, the leaf's key and serverName, for handing a launched
// plugin its credentials (through its environment, say). The bundle holds a
// private key: treat it as a secret. ClientConfigFromBundle reads it back.
func (ca *CA) ClientBundle(name, serverName string) ([]byte, error) {
	if serverName != "" && !caValidDNSName(serverName) && net.ParseIP(serverName) == nil {
		return nil, fmt.Errorf("transport: server name %q: %w", serverName, ErrConfig)
	}
	cert, err := ca.issue(x509.ExtKeyUsageClientAuth, name)
	if err != nil {
		return nil, err
	}
	h := map[string]string{caRoleHeader: caRoleClient}
	if serverName != "" {
		h[caServerNameHeader] = serverName
	}
	return ca.bundle(cert, h)
}

// ServerBundle issues a server leaf for name and hosts and returns it as PEM
// with the CA certificate and the leaf's key, for a remote plugin that serves
// TCP with mutual TLS. ServerConfigFromBundle reads it back.
func (ca *CA) ServerBundle(name string, hosts ...string) ([]byte, error) {
	cert, err := ca.issue(x509.ExtKeyUsageServerAuth, name, hosts...)
	if err != nil {
		return nil, err
	}
	return ca.bundle(cert, map[string]string{caRoleHeader: caRoleServer})
}

func (ca *CA) bundle(cert tls.Certificate, leafHeaders map[string]string) ([]byte, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("transport: bundle key: %w", err)
	}
	var b bytes.Buffer
	for _, blk := range []*pem.Block{
		{Type: "CERTIFICATE", Headers: map[string]string{caRoleHeader: caRoleCA}, Bytes: ca.cert.Raw},
		{Type: "CERTIFICATE", Headers: leafHeaders, Bytes: cert.Certificate[0]},
		{Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := pem.Encode(&b, blk); err != nil {
			return nil, fmt.Errorf("transport: bundle: %w", err)
		}
	}
	return b.Bytes(), nil
}

// ClientConfigFromBundle turns a ClientBundle back into a client TLS
// configuration. It checks that the leaf was issued by the bundle's CA for
// client authentication and matches the key.
func ClientConfigFromBundle(pemBytes []byte) (*tls.Config, error) {
	b, err := caParseBundle(pemBytes, caRoleClient, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	return caClientConfig(b.cert, b.pool, b.serverName), nil
}

// ServerConfigFromBundle turns a ServerBundle back into a server TLS
// configuration that requires client certificates from the bundle's CA.
func ServerConfigFromBundle(pemBytes []byte) (*tls.Config, error) {
	b, err := caParseBundle(pemBytes, caRoleServer, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	return caServerConfig(b.cert, b.pool), nil
}

type caBundle struct {
	cert       tls.Certificate
	pool       *x509.CertPool
	serverName string
}

func caParseBundle(pemBytes []byte, role string, usage x509.ExtKeyUsage) (*caBundle, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("transport: %s bundle: %s: %w", role, fmt.Sprintf(format, args...), ErrConfig)
	}
	if len(pemBytes) > caMaxBundle {
		return nil, bad("%d bytes, more than %d", len(pemBytes), caMaxBundle)
	}
	var caCert, leaf *x509.Certificate
	var leafDER []byte
	var key any
	serverName := ""
	rest := pemBytes
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		switch {
		case blk.Type == "CERTIFICATE" && blk.Headers[caRoleHeader] == caRoleCA:
			if caCert != nil {
				return nil, bad("two CA certificates")
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, bad("CA certificate: %v", err)
			}
			caCert = c
		case blk.Type == "CERTIFICATE" && blk.Headers[caRoleHeader] == role:
			if leaf != nil {
				return nil, bad("two %s certificates", role)
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, bad("%s certificate: %v", role, err)
			}
			leaf, leafDER = c, blk.Bytes
			serverName = blk.Headers[caServerNameHeader]
		case blk.Type == "PRIVATE KEY" && len(blk.Headers) == 0:
			if key != nil {
				return nil, bad("two private keys")
			}
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, bad("private key: %v", err)
			}
			key = k
		default:
			return nil, bad("unexpected %q block (role %q)", blk.Type, blk.Headers[caRoleHeader])
		}
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, bad("text that is not PEM")
	}
	switch {
	case caCert == nil:
		return nil, bad("no CA certificate")
	case leaf == nil:
		return nil, bad("no %s certificate", role)
	case key == nil:
		return nil, bad("no private key")
	case !caCert.IsCA:
		return nil, bad("the CA certificate is not a CA")
	}
	if serverName != "" && !caValidDNSName(serverName) && net.ParseIP(serverName) == nil {
		return nil, bad("server name %q", serverName)
	}
	signer, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, bad("the key is a %T, not ECDSA", key)
	}
	if !signer.PublicKey.Equal(leaf.PublicKey) {
		return nil, bad("the key does not match the %s certificate", role)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return nil, bad("the %s certificate does not verify against the CA: %v", role, err)
	}
	return &caBundle{
		cert:       tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: signer, Leaf: leaf},
		pool:       pool,
		serverName: serverName,
	}, nil
}

// caCheckName accepts a certificate name: 1 to 64 bytes of printable UTF-8
// (64 is X.509's bound on a common name).
func caCheckName(name string) error {
	if name == "" || len(name) > 64 || !utf8.ValidString(name) {
		return fmt.Errorf("transport: certificate name %q must be 1 to 64 bytes of UTF-8: %w", name, ErrConfig)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("transport: certificate name %q has an unprintable character: %w", name, ErrConfig)
		}
	}
	return nil
}

// caValidDNSName reports whether s is a DNS name fit for a certificate: dot
// separated labels of letters, digits, '-' and '_' (not at a label's ends
// for '-'), an optional leading "*." wildcard, at most 253 bytes.
func caValidDNSName(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
