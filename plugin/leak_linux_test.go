//go:build linux

package plugin_test

import (
	"context"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/ringwire/ringwire/plugin"
)

// Launching, restarting and stopping plugins leaves no goroutine behind.
func TestNoGoroutineLeak(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	warm := launch(t, pluginConfig("echo")) // starts the package-wide helpers
	warm.Close()
	time.Sleep(50 * time.Millisecond)
	before := runtime.NumGoroutine()

	for range 2 {
		c, err := plugin.Launch(ctx, pluginConfig("echo"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Call(ctx, "echo", nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cfg := pluginConfig("echo")
	cfg.Backoff = 5 * time.Millisecond
	cfg.HealthInterval = 20 * time.Millisecond
	s, err := plugin.Launch(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(s.Status().PID, syscall.SIGKILL)
	waitFor(5*time.Second, func() bool { st := s.Status(); return st.Restarts == 1 && st.State == "ready" })
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	var now int
	if !waitFor(3*time.Second, func() bool { now = runtime.NumGoroutine(); return now <= before }) {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after:\n%s", before, now, buf[:runtime.Stack(buf, true)])
	}
}
