package bench

import (
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/ringwire/ringwire/plugin"
)

// roleEnv names the role of a child started by the harness itself; go-plugin
// and ringwire children are recognised by their own launch variables.
const roleEnv = "RINGWIRE_BENCH_ROLE"

// roles are the children the harness starts by role name (each file adds
// its own in init).
var roles = map[string]func() int{}

// The test binary is also every benchmark's child process: the host
// re-executes it, and TestMain recognises the role from the environment
// before any test runs.
func TestMain(m *testing.M) {
	switch role := os.Getenv(roleEnv); {
	case role != "":
		f := roles[role]
		if f == nil {
			fmt.Fprintf(os.Stderr, "bench: unknown role %q\n", role)
			os.Exit(2)
		}
		os.Exit(f())
	case plugin.Launched(): // plugin.Launch, or an external plugin
		os.Exit(serveRingwire())
	case os.Getenv(gpHandshake.MagicCookieKey) == gpHandshake.MagicCookieValue: // go-plugin
		os.Exit(serveGoplugin())
	}
	os.Exit(m.Run())
}

// Bounds on every wait.
const (
	startTimeout = 10 * time.Second // a child's start and handshake
	callBudget   = 10 * time.Minute // the deadline of every call of one benchmark run
	stopTimeout  = 10 * time.Second // a child's graceful stop, then it is killed
)

// logger keeps the harness quiet unless something goes wrong.
var logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// executable is the path of this test binary, re-executed as the plugin.
func executable(tb testing.TB) string {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	return exe
}
