//go:build linux

package plugin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/plugin"
)

func init() {
	// wraps serves "wrapped", whose handler wraps a *rpc.Error.
	roles["wraps"] = func() int {
		m := rpc.NewMux()
		m.Handle("wrapped", func(context.Context, []byte) ([]byte, error) {
			return nil, fmt.Errorf("loading profile %q: %w", "ana", rpc.Errorf(rpc.CodeNotFound, "no such user"))
		})
		return serve(&plugin.Plugin{Name: "wraps", Mux: m})
	}
}

// checkErr asserts err's text (a regular expression matching all of it)
// and the sentinels it must and must not match.
func checkErr(t *testing.T, what string, err error, text string, is []error, isNot ...error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	if !regexp.MustCompile("^" + text + "$").MatchString(err.Error()) {
		t.Errorf("%s: %q\ndoes not match %q", what, err, text)
	}
	for _, s := range is {
		if !errors.Is(err, s) {
			t.Errorf("%s: %v does not match %v", what, err, s)
		}
	}
	for _, s := range isNot {
		if errors.Is(err, s) {
			t.Errorf("%s: %v matches %v", what, err, s)
		}
	}
}

// TestUserErrors: the errors a plugin's user meets, their texts and
// sentinels.
func TestUserErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("exit mid-call", func(t *testing.T) {
		cfg := unsupervised(pluginConfig("crash", crashEnv+"=100ms"))
		cfg.Mux = hostMux(nil)
		c, err := plugin.Launch(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Kill()
		_, err = c.Call(ctx, "sleep", []byte("5000"))
		text := `plugin "crash": the call failed: process exited \(pid \d+, exit status 3\)`
		checkErr(t, "call in flight", err, text, []error{plugin.ErrExited, rpc.ErrPeerGone}, rpc.ErrClosed, plugin.ErrClosed)
		_, err = c.Call(ctx, "echo", nil)
		checkErr(t, "next call", err, text, []error{plugin.ErrExited, rpc.ErrPeerGone}, rpc.ErrClosed)
	})
	t.Run("killed by a signal", func(t *testing.T) {
		c, err := plugin.Launch(ctx, unsupervised(pluginConfig("echo")))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Kill()
		pid := c.PID()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = c.Wait()
		_, err = c.Call(ctx, "echo", nil)
		checkErr(t, "call", err, `plugin "echo": the call failed: process exited \(pid \d+, signal: killed\)`,
			[]error{plugin.ErrExited, rpc.ErrPeerGone})
	})
	t.Run("never starts the handshake", func(t *testing.T) {
		cfg := pluginConfig("sleep")
		cfg.StartTimeout = 500 * time.Millisecond
		_, err := plugin.Launch(ctx, cfg)
		checkErr(t, "Launch", err, `plugin "sleep": start timed out: the process \(pid \d+\) ran for 500ms without starting the ringwire handshake; does its main call plugin.Main\?`,
			[]error{plugin.ErrStartTimeout})
	})
	t.Run("exits before the handshake", func(t *testing.T) {
		_, err := plugin.Launch(ctx, pluginConfig("exit"))
		checkErr(t, "Launch", err, `plugin "exit": process exited \(pid \d+, exit status 7\) before its handshake; does its main call plugin.Main\?; its last output: "exit role: giving up before Serve"`,
			[]error{plugin.ErrExited})
	})
	t.Run("after Stop", func(t *testing.T) {
		c, err := plugin.Launch(ctx, pluginConfig("echo"))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		_, err = c.Call(ctx, "echo", nil)
		checkErr(t, "call", err, `plugin "echo": closed \(Stop or Close was called\)`, []error{plugin.ErrClosed}, rpc.ErrPeerGone)
	})
	t.Run("session gave up", func(t *testing.T) {
		cfg := pluginConfig("crash", crashEnv+"=50ms")
		cfg.MaxRestarts = 1
		cfg.Backoff = 10 * time.Millisecond
		cfg.HealthInterval = -1
		s, err := plugin.Launch(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Stop(ctx)
		waitState(t, s, "failed", 10*time.Second)
		_, err = s.Call(ctx, "echo", nil)
		checkErr(t, "call", err, `plugin "crash": unavailable: gave up after 1 restart in a row: process exited \(pid \d+, exit status 3\)`,
			[]error{plugin.ErrUnavailable, plugin.ErrExited})
	})
	t.Run("unknown method", func(t *testing.T) {
		c, err := plugin.Launch(ctx, pluginConfig("echo"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Call(ctx, "nosuch", nil)
		checkErr(t, "call", err, `remote: unimplemented: unknown method "nosuch"`, []error{rpc.ErrUnknownMethod})
	})
	t.Run("wrapped remote error", func(t *testing.T) {
		cfg := pluginConfig("wraps")
		c, err := plugin.Launch(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Call(ctx, "wrapped", nil)
		checkErr(t, "call", err, `remote: not found: loading profile "ana": no such user`, nil)
		var pe *rpc.Error
		if !errors.As(err, &pe) || pe.Code != rpc.CodeNotFound {
			t.Errorf("%v: want a *rpc.Error with CodeNotFound", err)
		}
	})
}

// TestBinaryChecksum: Config.SHA256 admits the binary it names and refuses
// any other, before starting anything.
func TestBinaryChecksum(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sum := h.Sum(nil)

	cfg := pluginConfig("echo")
	cfg.SHA256 = sum
	c, err := plugin.Launch(ctx, cfg)
	if err != nil {
		t.Fatalf("Launch with the right checksum: %v", err)
	}
	if out, err := c.Call(ctx, "echo", []byte("ok")); err != nil || string(out) != "ok" {
		t.Errorf("echo = %q, %v", out, err)
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", c.PID())); err != nil || exe != mustAbs(t, os.Args[0]) {
		t.Errorf("the plugin runs %q (%v), want %q", exe, err, os.Args[0])
	}
	c.Close()

	bad := bytes.Clone(sum)
	bad[0] ^= 1
	cfg.SHA256 = bad
	_, err = plugin.Launch(ctx, cfg)
	checkErr(t, "wrong checksum", err, `plugin "echo": .* has SHA-256 [0-9a-f]{64}, the host requires [0-9a-f]{64}`, []error{plugin.ErrUnauthorized})

	cfg = pluginConfig("echo")
	cfg.Path = filepath.Join(t.TempDir(), "missing")
	cfg.SHA256 = sum
	_, err = plugin.Launch(ctx, cfg)
	checkErr(t, "missing binary", err, `plugin "echo": cannot check the binary: open .*missing: no such file or directory`, []error{plugin.ErrConfig, os.ErrNotExist})
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
