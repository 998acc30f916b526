package bench

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/ringwire/ringwire/plugin"
)

// The test binary is also every benchmark's plugin process: the host
// re-executes it, and TestMain recognises the role from the environment
// before any test runs.
func TestMain(m *testing.M) {
	switch {
	case os.Getenv(plugin.EnvCookie) != "": // launched by plugin.Launch
		os.Exit(serveRingwire())
	case os.Getenv(gpHandshake.MagicCookieKey) == gpHandshake.MagicCookieValue: // go-plugin
		os.Exit(serveGoplugin())
	case os.Getenv(rawRoleEnv) != "":
		os.Exit(serveRaw())
	}
	os.Exit(m.Run())
}

// sizes are the payload sizes of every benchmark (request and reply).
var sizes = []struct {
	name string
	n    int
}{{"10B", 10}, {"1KiB", 1 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}}

// Bounds on every wait.
const (
	startTimeout = 10 * time.Second // a child's start and handshake
	callBudget   = 10 * time.Minute // the deadline of every call of one benchmark run
	stopTimeout  = 10 * time.Second // a child's graceful stop, then it is killed
)

// logger keeps the harness quiet unless something goes wrong.
var logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// executable is the path of this test binary, re-executed as the plugin.
func executable(tb testing.TB) string {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	return exe
}

// payload returns n bytes of a recognisable pattern.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}
