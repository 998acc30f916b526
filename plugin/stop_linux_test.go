//go:build linux

package plugin_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/plugin"
)

// callAsync runs a call in the background once the plugin has entered its
// handler (the handler calls the host's "entered").
func callAsync(t *testing.T, c *plugin.Client, entered <-chan struct{}, method, req string) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := c.Call(ctx, method, []byte(req))
		if err == nil && string(out) != "slept" {
			err = errors.New("unexpected reply " + string(out))
		}
		done <- err
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never started")
	}
	return done
}

// Stop lets the call in flight finish, then the process exits and is reaped.
func TestStopDrainsInFlight(t *testing.T) {
	entered := make(chan struct{}, 1)
	cfg := pluginConfig("echo")
	cfg.Mux = hostMux(entered)
	cfg.StopTimeout = 5 * time.Second
	c := launch(t, cfg)
	pid := c.PID()
	call := callAsync(t, c, entered, "sleep", "300")

	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- c.Stop(context.Background()) }()
	// No new calls once the stop has begun.
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Call(ctx, "echo", nil); !errors.Is(err, rpc.ErrGoAway) {
		t.Errorf("call during the stop: %v, want ErrGoAway", err)
	}
	if err := <-call; err != nil {
		t.Errorf("the call in flight: %v, want it to complete", err)
	}
	var err error
	select {
	case err = <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return")
	}
	took := time.Since(start)
	t.Logf("Stop took %v: %v", took, err)
	if err != nil {
		t.Errorf("Stop: %v", err)
	}
	if took < 200*time.Millisecond || took > 3*time.Second {
		t.Errorf("Stop took %v, want the call's remaining ~250ms", took)
	}
	if err := c.Wait(); err != nil {
		t.Errorf("exit: %v, want status 0", err)
	}
	if !processGone(pid) {
		t.Errorf("process %d still exists (not reaped?)", pid)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) = %v after Stop, want ESRCH (reaped, no zombie)", pid, err)
	}
}

// A call that outlasts the stop budget is abandoned; the plugin still exits
// on its own once its connection closes.
func TestStopAbandonsSlowCall(t *testing.T) {
	entered := make(chan struct{}, 1)
	cfg := pluginConfig("echo")
	cfg.Mux = hostMux(entered)
	cfg.StopTimeout = 200 * time.Millisecond
	c := launch(t, cfg)
	call := callAsync(t, c, entered, "block", "")
	err := c.Stop(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, plugin.ErrKilled) {
		t.Errorf("Stop: %v, want DeadlineExceeded (abandoned call) without a kill", err)
	}
	select {
	case err := <-call:
		if err == nil {
			t.Error("the abandoned call succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the abandoned call did not return")
	}
	if err := c.Wait(); err != nil {
		t.Errorf("exit: %v, want status 0", err)
	}
}

// A plugin that ignores SIGTERM and outlives its connection is killed after
// the budget, and reaped.
func TestStopKillsStubborn(t *testing.T) {
	rec := newRecorder()
	cfg := pluginConfig("stubborn")
	cfg.StopTimeout = 300 * time.Millisecond
	cfg.Logger = slogNew(rec)
	c := launch(t, cfg)
	pid := c.PID()
	start := time.Now()
	err := c.Stop(context.Background())
	took := time.Since(start)
	t.Logf("Stop took %v: %v", took, err)
	if !errors.Is(err, plugin.ErrKilled) {
		t.Errorf("Stop: %v, want ErrKilled", err)
	}
	if took < 300*time.Millisecond || took > 3*time.Second {
		t.Errorf("Stop took %v, want the 300ms budget plus a grace", took)
	}
	var ee *exec.ExitError
	if err := c.Wait(); !errors.As(err, &ee) || !strings.Contains(err.Error(), "killed") {
		t.Errorf("exit: %v, want killed", err)
	}
	if !processGone(pid) {
		t.Errorf("process %d still exists", pid)
	}
	if n := len(rec.records(func(r record) bool { return strings.Contains(r.Msg, "SIGTERM") })); n != 1 {
		t.Errorf("%d SIGTERM records, want 1", n)
	}
}
