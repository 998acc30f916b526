//go:build linux

package plugin_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/plugin"
)

// startSession starts a Client and stops it at cleanup.
func startSession(t *testing.T, cfg *plugin.Config) *plugin.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var s *plugin.Client
	var err error
	if cfg.Address != "" {
		s, err = plugin.Connect(ctx, "tcp", cfg.Address, cfg)
	} else {
		s, err = plugin.Launch(ctx, cfg)
	}
	if err != nil {
		t.Fatalf("Launch or Connect: %v", err)
	}
	t.Cleanup(func() {
		pid := s.Status().PID
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
		if st := s.Status(); st.State != "stopped" {
			t.Errorf("after Stop: state %v", st.State)
		}
		if pid > 0 && !waitGone(pid, 5*time.Second) {
			t.Errorf("process %d outlived Stop", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return s
}

// waitState waits up to d for the session to reach st.
func waitState(t *testing.T, s *plugin.Client, st string, d time.Duration) plugin.Status {
	t.Helper()
	if !waitFor(d, func() bool { return s.Status().State == st }) {
		got := s.Status()
		t.Fatalf("state %v (restarts %d, last error %v) after %v, want %v", got.State, got.Restarts, got.LastErr, d, st)
	}
	return s.Status()
}

// waitRestarted waits up to d for the session to be ready after n restarts.
func waitRestarted(t *testing.T, s *plugin.Client, n int, d time.Duration) plugin.Status {
	t.Helper()
	if !waitFor(d, func() bool { st := s.Status(); return st.Restarts >= n && st.State == "ready" }) {
		got := s.Status()
		t.Fatalf("state %v, %d restarts (last error %v) after %v, want ready after %d", got.State, got.Restarts, got.LastErr, d, n)
	}
	return s.Status()
}

// kill -9 of the plugin in the middle of a call: the call fails within
// 100ms, the session restarts the plugin, the next call succeeds.
func TestSessionKillMidCall(t *testing.T) {
	entered := make(chan struct{}, 1)
	rec := newRecorder()
	cfg := pluginConfig("echo")
	cfg.Mux = hostMux(entered)
	cfg.Logger = slogNew(rec)
	cfg.HealthInterval = 200 * time.Millisecond
	cfg.Backoff = 10 * time.Millisecond
	s := startSession(t, cfg)
	first := s.Status()
	if first.State != "ready" || first.PID <= 0 {
		t.Fatalf("after Start: %+v", first)
	}

	type result struct {
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := s.Call(ctx, "block", nil)
		done <- result{err, time.Now()}
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking handler never started")
	}
	killed := time.Now()
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the call in flight did not return after its plugin was killed")
	}
	took := r.at.Sub(killed)
	t.Logf("call failed %v after SIGKILL: %v", took, r.err)
	if !errors.Is(r.err, rpc.ErrPeerGone) || !errors.Is(r.err, plugin.ErrPluginRestarted) {
		t.Errorf("call error %v, want ErrPeerGone and ErrPluginRestarted", r.err)
	}
	if took >= 100*time.Millisecond {
		t.Errorf("the call failed %v after SIGKILL, want < 100ms", took)
	}

	st := waitRestarted(t, s, 1, 10*time.Second)
	if st.Restarts != 1 || st.PID == first.PID || st.PID <= 0 || !st.Started.After(first.Started) {
		t.Errorf("after the restart: %+v (first PID %d)", st, first.PID)
	}
	if !errors.Is(st.LastErr, plugin.ErrExited) {
		t.Errorf("LastErr = %v, want ErrExited", st.LastErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := s.Call(ctx, "pid", nil)
	if err != nil || string(out) != strconv.Itoa(st.PID) {
		t.Errorf("call after the restart: %q, %v (PID %d)", out, err, st.PID)
	}
	if processGone(first.PID) == false {
		t.Errorf("the killed plugin %d was not reaped", first.PID)
	}
}

// A plugin that stops answering pings (SIGSTOP) is killed and restarted.
func TestSessionHealthRestart(t *testing.T) {
	cfg := pluginConfig("echo")
	cfg.HealthInterval = 50 * time.Millisecond
	cfg.HealthTimeout = 100 * time.Millisecond
	cfg.HealthFailures = 2
	cfg.Backoff = 10 * time.Millisecond
	s := startSession(t, cfg)
	first := s.Status()
	if err := syscall.Kill(first.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(first.PID, syscall.SIGKILL) }) // in case

	st := waitRestarted(t, s, 1, 10*time.Second)
	if st.Restarts != 1 || st.PID == first.PID {
		t.Errorf("after the health restart: %+v (first PID %d)", st, first.PID)
	}
	if !errors.Is(st.LastErr, plugin.ErrUnavailable) || !strings.Contains(st.LastErr.Error(), "health check failed: 2 pings in a row failed") {
		t.Errorf("LastErr = %v, want ErrUnavailable saying the health check failed", st.LastErr)
	}
	if !waitGone(first.PID, 5*time.Second) {
		t.Errorf("the stopped plugin %d is still there", first.PID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := s.Call(ctx, "echo", []byte("again")); err != nil || string(out) != "again" {
		t.Errorf("call after the restart: %q, %v", out, err)
	}
}

// A plugin that keeps crashing is restarted MaxRestarts times with growing
// backoff, then the session fails.
func TestSessionMaxRestarts(t *testing.T) {
	rec := newRecorder()
	cfg := pluginConfig("crash", crashEnv+"=150ms")
	cfg.Logger = slogNew(rec)
	cfg.MaxRestarts = 3
	cfg.Backoff = 40 * time.Millisecond
	cfg.MaxBackoff = 2 * time.Second
	cfg.HealthInterval = -1
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s, err := plugin.Launch(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer s.Stop(ctx)
	st := waitState(t, s, "failed", 15*time.Second)
	if st.Restarts != 3 || st.PID != -1 {
		t.Errorf("failed status: %+v, want 3 restarts and no PID", st)
	}
	if !errors.Is(st.LastErr, plugin.ErrUnavailable) || !errors.Is(st.LastErr, plugin.ErrExited) {
		t.Errorf("LastErr = %v, want ErrUnavailable wrapping ErrExited", st.LastErr)
	}
	if _, err := s.Call(ctx, "echo", nil); !errors.Is(err, plugin.ErrUnavailable) {
		t.Errorf("call on a failed session: %v, want ErrUnavailable", err)
	}

	// Each restart waits its backoff (40, 80, 160ms) after the failure:
	// measure from the "restarting" record to the next process start.
	restarting := rec.records(func(r record) bool { return r.Msg == "ringwire: plugin restarting" })
	launched := rec.records(func(r record) bool { return r.Msg == "ringwire: plugin process started" })
	if len(restarting) != 3 || len(launched) != 4 {
		rec.dump(t)
		t.Fatalf("%d restarting and %d process started records, want 3 and 4", len(restarting), len(launched))
	}
	var prev time.Duration
	for i, r := range restarting {
		want := cfg.Backoff << i
		if r.Attrs["backoff"] != want.String() {
			t.Errorf("restart %d: backoff %s, want %v", i+1, r.Attrs["backoff"], want)
		}
		gap := launched[i+1].Time.Sub(r.Time)
		t.Logf("restart %d: backoff %v, relaunched after %v", i+1, want, gap)
		if gap < want || gap <= prev {
			t.Errorf("restart %d: relaunched %v after the failure, want at least %v and more than the previous %v", i+1, gap, want, prev)
		}
		prev = gap
	}
	if err := s.Stop(ctx); err != nil {
		t.Errorf("Stop of a failed session: %v", err)
	}
	if st := s.Status(); st.State != "stopped" {
		t.Errorf("after Stop: %v", st.State)
	}
}

// Calls made during a restart wait for the new instance.
func TestSessionCallWaitsForRestart(t *testing.T) {
	cfg := pluginConfig("echo")
	cfg.Backoff = 200 * time.Millisecond
	s := startSession(t, cfg)
	pid := s.Status().PID
	syscall.Kill(pid, syscall.SIGKILL)
	waitState(t, s, "restarting", 5*time.Second)

	// A call whose deadline ends first fails with ErrUnavailable.
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Call(short, "echo", nil); !errors.Is(err, plugin.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("short call during the restart: %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	ctx, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	out, err := s.Call(ctx, "echo", []byte("waited"))
	if err != nil || string(out) != "waited" {
		t.Errorf("call during the restart: %q, %v", out, err)
	}
	if st := s.Status(); st.Restarts != 1 || st.State != "ready" {
		t.Errorf("status %+v", st)
	}
}

// A plugin that dies with restarts turned off: the call fails with
// ErrPeerGone alone, the session fails.
func TestSessionNoRestart(t *testing.T) {
	entered := make(chan struct{}, 1)
	cfg := pluginConfig("echo")
	cfg.Mux = hostMux(entered)
	cfg.MaxRestarts = -1
	s := startSession(t, cfg)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := s.Call(ctx, "block", nil)
		done <- err
	}()
	<-entered
	syscall.Kill(s.Status().PID, syscall.SIGKILL)
	select {
	case err := <-done:
		if !errors.Is(err, rpc.ErrPeerGone) || errors.Is(err, plugin.ErrPluginRestarted) {
			t.Errorf("call error %v, want ErrPeerGone without ErrPluginRestarted", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("call did not return")
	}
	st := waitState(t, s, "failed", 5*time.Second)
	if st.Restarts != 0 {
		t.Errorf("restarts %d", st.Restarts)
	}
}

// Concurrent calls through kills and restarts: every call returns, with a
// reply or with one of the documented errors.
func TestSessionCallsThroughRestarts(t *testing.T) {
	cfg := pluginConfig("echo")
	cfg.Backoff = 5 * time.Millisecond
	cfg.HealthInterval = 100 * time.Millisecond
	s := startSession(t, cfg)
	stop := make(chan struct{})
	type tally struct{ ok, gone, unavailable int }
	results := make(chan tally, 8)
	for range 8 {
		go func() {
			var n tally
			defer func() { results <- n }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				out, err := s.Call(ctx, "echo", []byte("x"))
				cancel()
				switch {
				case err == nil && string(out) == "x":
					n.ok++
				case errors.Is(err, rpc.ErrPeerGone):
					n.gone++
				case errors.Is(err, plugin.ErrUnavailable):
					n.unavailable++
				default:
					t.Errorf("call: %q, %v", out, err)
					return
				}
			}
		}()
	}
	for i := range 3 {
		time.Sleep(100 * time.Millisecond)
		pid := s.Status().PID
		if pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		waitRestarted(t, s, i+1, 5*time.Second)
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	var total tally
	for range 8 {
		select {
		case n := <-results:
			total.ok += n.ok
			total.gone += n.gone
			total.unavailable += n.unavailable
		case <-time.After(10 * time.Second):
			t.Fatal("a caller hung")
		}
	}
	t.Logf("calls: %d ok, %d failed with the plugin, %d unavailable; %d restarts", total.ok, total.gone, total.unavailable, s.Status().Restarts)
	if st := s.Status(); st.Restarts != 3 || st.State != "ready" {
		t.Errorf("status %+v", st)
	}
	if total.ok == 0 {
		t.Error("no call succeeded")
	}
}

// TestSessionHandleAfterRestart: a remote object's handle dies with its
// instance; once the Client has restarted the plugin, calling or
// destroying the handle says so (ErrPluginRestarted, ErrPeerGone), as a
// call through the Client would, not "closed".
func TestSessionHandleAfterRestart(t *testing.T) {
	cfg := pluginConfig("echo")
	cfg.HealthInterval = 200 * time.Millisecond
	cfg.Backoff = 10 * time.Millisecond
	s := startSession(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, err := s.New(ctx, "counter", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Call(ctx, "add", nil); err != nil {
		t.Fatal(err)
	}
	first := s.Status()
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool {
		st := s.Status()
		return st.State == "ready" && st.PID != first.PID
	}) {
		t.Fatalf("not restarted: %+v", s.Status())
	}
	_, err = h.Call(ctx, "add", nil)
	if !errors.Is(err, plugin.ErrPluginRestarted) || !errors.Is(err, plugin.ErrPeerGone) || errors.Is(err, plugin.ErrClosed) {
		t.Errorf("a call on a handle of the killed instance: %v, want ErrPluginRestarted and ErrPeerGone", err)
	}
	if err := h.Destroy(ctx); err != nil && (!errors.Is(err, plugin.ErrPeerGone) || errors.Is(err, plugin.ErrClosed)) {
		t.Errorf("Destroy of a handle of the killed instance: %v, want nil or ErrPeerGone", err)
	}
	// A new handle on the new instance works.
	h2, err := s.New(ctx, "counter", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h2.Call(ctx, "add", nil); err != nil {
		t.Fatal(err)
	}
}
