package plugin

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct{ in, network, addr string }{
		{"unix:/run/host.sock", "unix", "/run/host.sock"},
		{"tcp:127.0.0.1:7000", "tcp", "127.0.0.1:7000"},
		{"tcp6:[::1]:7000", "tcp6", "[::1]:7000"},
	} {
		n, a, err := parseAddress("X", tc.in)
		if err != nil || n != tc.network || a != tc.addr {
			t.Errorf("parseAddress(%q) = %q, %q, %v", tc.in, n, a, err)
		}
	}
	for _, in := range []string{"", "unix", "unix:", "udp:1.2.3.4:5", "/path"} {
		if _, _, err := parseAddress("X", in); !errors.Is(err, ErrConfig) {
			t.Errorf("parseAddress(%q): %v, want ErrConfig", in, err)
		}
	}
}

func TestChildEnv(t *testing.T) {
	base := []string{"PATH=/bin", envToken + "=stale", envConnect + "=unix:/x", "HOME=/root", envFD + "=9", envLogLevel + "=ERROR"}
	env := childEnv(base, "tok", slog.LevelWarn)
	want := []string{"PATH=/bin", "HOME=/root", envCookie + "=" + cookieValue, envFD + "=3", envToken + "=tok", envLogLevel + "=WARN"}
	if !slices.Equal(env, want) {
		t.Errorf("childEnv = %v, want %v", env, want)
	}
}

func TestBackoff(t *testing.T) {
	c := (&Config{Backoff: 100 * time.Millisecond, MaxBackoff: time.Second}).withDefaults()
	var got []time.Duration
	for n := 1; n <= 6; n++ {
		got = append(got, c.backoff(n))
	}
	want := []time.Duration{100e6, 200e6, 400e6, 800e6, 1e9, 1e9}
	if !slices.Equal(got, want) {
		t.Errorf("backoffs %v, want %v", got, want)
	}
	if d := c.backoff(1000); d != time.Second {
		t.Errorf("backoff(1000) = %v", d)
	}
}

func TestReadEnv(t *testing.T) {
	for _, k := range envNames {
		t.Setenv(k, "")
	}
	if _, err := readEnv(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "must be started by its host") {
		t.Errorf("empty environment: %v, want ErrConfig saying the plugin must be started by its host", err)
	}
	t.Setenv(envFD, "3")
	t.Setenv(envCookie, "someone-else")
	if _, err := readEnv(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "incompatible") {
		t.Errorf("wrong cookie: %v", err)
	}
	t.Setenv(envCookie, cookieValue)
	t.Setenv(envToken, "tok")
	e, err := readEnv()
	if err != nil || e.mode != modeLaunched || e.fd != 3 || string(e.token) != "tok" {
		t.Errorf("launched: %+v, %v", e, err)
	}
	t.Setenv(envFD, "")
	t.Setenv(envCookie, "")
	t.Setenv(envConnect, "tcp:127.0.0.1:1")
	t.Setenv(envListen, "tcp:127.0.0.1:2")
	if _, err := readEnv(); !errors.Is(err, ErrConfig) {
		t.Errorf("connect and listen: %v, want ErrConfig", err)
	}
	t.Setenv(envListen, "")
	path := filepath.Join(t.TempDir(), "b.pem")
	os.WriteFile(path, []byte("-----BEGIN CERTIFICATE-----\n"), 0o600)
	t.Setenv(envTLSBundle, path)
	e, err = readEnv()
	if err != nil || e.mode != modeConnect || e.network != "tcp" || !strings.HasPrefix(string(e.bundle), "-----BEGIN") {
		t.Errorf("connect with a bundle file: %+v, %v", e, err)
	}
	t.Setenv(envTLSBundle, filepath.Join(t.TempDir(), "missing.pem"))
	if _, err := readEnv(); !errors.Is(err, ErrConfig) {
		t.Errorf("missing bundle file: %v, want ErrConfig", err)
	}
}

func TestPluginCheck(t *testing.T) {
	p := &Plugin{Name: "x", Constants: map[string]string{reservedPrefix + "mine": "v"}}
	if err := p.check(); !errors.Is(err, ErrConfig) {
		t.Errorf("reserved constant: %v, want ErrConfig", err)
	}
	p = &Plugin{Name: "x", Description: "d", Constants: map[string]string{"k": "v"}}
	c := p.constants()
	if len(c) != 2 || c[descriptionKey] != "d" || len(p.Constants) != 1 {
		t.Errorf("constants %v (declared %v)", c, p.Constants)
	}
}

func TestConfigCheck(t *testing.T) {
	for _, c := range []*Config{
		{},                             // neither path nor address
		{Path: "x", StopTimeout: -1},   // negative budget
		{Path: "x", HealthTimeout: -1}, // negative timeout
	} {
		if err := c.withDefaults().check(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", c, err)
		}
	}
	if _, err := Launch(t.Context(), &Config{Name: "nopath"}); !errors.Is(err, ErrConfig) {
		t.Errorf("Launch without a path: %v, want ErrConfig", err)
	}
	if _, err := Connect(t.Context(), "tcp", "", &Config{Name: "noaddress"}); !errors.Is(err, ErrConfig) {
		t.Errorf("Connect without an address: %v, want ErrConfig", err)
	}
	if _, err := (&Registry{}).Add("x", nil); err != nil {
		t.Errorf("Add with a nil config: %v", err)
	}
}
