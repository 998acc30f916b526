//go:build linux

package plugin_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	negotiate "github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/internal/transport"
	"github.com/ringwire/ringwire/plugin"
)

func TestLaunchEchoAndMetadata(t *testing.T) {
	cfg := pluginConfig("echo")
	cfg.Mux = hostMux(nil)
	c := launch(t, cfg)

	// Metadata comes from the handshake, without a call.
	in := c.Info()
	if in.Name != "echo" || in.Version != "1.2.3" || in.Description != "echoes what it gets" {
		t.Errorf("Info: name %q version %q description %q", in.Name, in.Version, in.Description)
	}
	if len(in.Constants) != 2 || in.Constants["greeting"] != "hello" || in.Constants["answer"] != "42" {
		t.Errorf("Info.Constants = %v, want greeting and answer only", in.Constants)
	}
	if in.Transport.Kind != transport.KindShm {
		t.Errorf("transport %v, want shm", in.Transport.Kind)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := c.Call(ctx, "echo", []byte("ping"))
	if err != nil || string(out) != "ping" {
		t.Fatalf("echo: %q, %v", out, err)
	}
	out, err = c.Call(ctx, "pid", nil)
	if err != nil || string(out) != strconv.Itoa(c.PID()) {
		t.Errorf("pid: %q, %v; PID() = %d", out, err, c.PID())
	}
	// The plugin calls back into the host during a call.
	out, err = c.Call(ctx, "callback", []byte("x"))
	if err != nil || string(out) != "host:x" {
		t.Errorf("callback: %q, %v", out, err)
	}
	// Remote objects.
	h, err := c.New(ctx, "counter", nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for want := uint64(1); want <= 2; want++ {
		out, err := h.Call(ctx, "add", nil)
		if err != nil || len(out) != 8 || binary.LittleEndian.Uint64(out) != want {
			t.Fatalf("counter.add: %x, %v; want %d", out, err, want)
		}
	}
	if err := c.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	buf, err := c.CallInto(ctx, "echo", []byte("into"), make([]byte, 0, 16))
	if err != nil || string(buf) != "into" {
		t.Errorf("CallInto: %q, %v", buf, err)
	}
	var seen string
	if err := c.CallView(ctx, "echo", []byte("view"), func(r []byte) error { seen = string(r); return nil }); err != nil || seen != "view" {
		t.Errorf("CallView: %q, %v", seen, err)
	}
}

func TestLaunchContractMismatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := pluginConfig("echo")
	cfg.Service = otherService
	_, err := plugin.Launch(ctx, cfg)
	t.Log(err)
	if !errors.Is(err, negotiate.ErrContractMismatch) {
		t.Fatalf("Launch of a plugin with another contract: %v, want ErrContractMismatch", err)
	}
}

func TestLaunchWrongToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := plugin.Launch(ctx, pluginConfig("badtoken"))
	t.Log(err)
	if !errors.Is(err, negotiate.ErrUnauthorized) {
		t.Fatalf("Launch of a plugin with a wrong token: %v, want ErrUnauthorized", err)
	}
}

func TestLaunchExitBeforeServe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := plugin.Launch(ctx, pluginConfig("exit"))
	t.Log(err)
	if !errors.Is(err, plugin.ErrExited) || !strings.Contains(err.Error(), "exit status 7") {
		t.Fatalf("Launch of a plugin that exits: %v, want ErrExited with its status", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("failure took %v: the exit should end the wait at once", d)
	}
}

func TestLaunchStartTimeout(t *testing.T) {
	cfg := pluginConfig("sleep")
	cfg.StartTimeout = 300 * time.Millisecond
	start := time.Now()
	_, err := plugin.Launch(context.Background(), cfg)
	t.Log(err)
	if !errors.Is(err, plugin.ErrStartTimeout) {
		t.Fatalf("Launch of a plugin that never serves: %v, want ErrStartTimeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("timed out after %v, want about 300ms", d)
	}
}

// A plugin that prints a 1 MiB line and garbage before Serve launches, and
// its output is logged whole.
func TestLaunchNoisyOutput(t *testing.T) {
	rec := newRecorder()
	cfg := pluginConfig("noisy")
	cfg.Logger = slogNew(rec)
	c := launch(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := c.Call(ctx, "echo", []byte("still works")); err != nil || string(out) != "still works" {
		t.Fatalf("echo after the noise: %q, %v", out, err)
	}
	output := func(stream string) []record {
		return rec.records(func(r record) bool { return r.Attrs["stream"] == stream && r.Attrs["plugin"] == "noisy" })
	}
	want := []string{"bin\x00\xff\xfe\x01ary", "partial line without newline, continued"}
	if !waitFor(5*time.Second, func() bool { return len(output("stdout")) >= 3 && len(output("stderr")) >= 1 }) {
		rec.dump(t)
		t.Fatal("plugin output not logged")
	}
	out := output("stdout")
	if len(out[0].Msg) != bigLine || strings.Trim(out[0].Msg, "x") != "" || out[0].Attrs["part"] != "" {
		t.Errorf("first stdout record: %d bytes (part %q), want the whole %d-byte line", len(out[0].Msg), out[0].Attrs["part"], bigLine)
	}
	for i, w := range want {
		if out[i+1].Msg != w {
			t.Errorf("stdout record %d = %q, want %q", i+1, out[i+1].Msg, w)
		}
	}
	if got := output("stderr")[0].Msg; got != "to stderr" {
		t.Errorf("stderr record = %q, want %q", got, "to stderr")
	}
}

// Run by hand, a plugin says what it is and exits non-zero instead of
// waiting for a host.
func TestServeByHand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = withoutLaunchEnv(childEnv("echo"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("plugin run by hand: %v, want exit status 1", err)
	}
	if !strings.Contains(stderr.String(), "must be started by its host") {
		t.Errorf("stderr = %q, want the explanation", stderr.String())
	}
}

// withoutLaunchEnv removes the launch protocol's variables from env.
func withoutLaunchEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "RINGWIRE_PLUGIN_COOKIE", "RINGWIRE_PLUGIN_FD", "RINGWIRE_PLUGIN_TOKEN", "RINGWIRE_CONNECT", "RINGWIRE_LISTEN", "RINGWIRE_TLS_BUNDLE":
		default:
			out = append(out, kv)
		}
	}
	return out
}
