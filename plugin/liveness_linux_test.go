//go:build linux

package plugin_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
	"github.com/ringwire/ringwire/plugin"
)

// Liveness of a supervised plugin that stops reading (SIGSTOP), on every
// transport the plugin runtime offers: a launched plugin over shared memory
// ("shm") or framed Unix ("framed"), and a remote plugin the Client dials
// over TCP with mutual TLS ("tcp", Config.Address). While it is stopped the
// host keeps sending it 1 MiB calls, so its ring or socket is full: a health
// ping or a goaway that waited for room without a bound would hang the
// Session.

var liveTransports = []string{"shm", "framed", "tcp"}

// liveRig is a Client on one transport.
type liveRig struct {
	s       *plugin.Client
	rec     *recorder
	entered chan struct{}
	ext     *extProc // the remote plugin's process (tcp only)
	remote  bool
}

// startLive starts a Client on transport tr (tweak adjusts its Config).
func startLive(t *testing.T, tr string, tweak func(*plugin.Config)) *liveRig {
	t.Helper()
	r := &liveRig{rec: newRecorder(), entered: make(chan struct{}, 1)}
	var cfg *plugin.Config
	want := transport.KindShm
	switch tr {
	case "shm", "framed":
		cfg = pluginConfig("echo")
		cfg.Transport.Mode = transport.ModeShm
		if tr == "framed" {
			cfg.Transport.Mode, want = transport.ModeFramed, transport.KindUnix
		}
	case "tcp":
		ca, err := transport.NewCA("test-ca")
		if err != nil {
			t.Fatal(err)
		}
		server, err := ca.ServerBundle("echo", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		r.ext = startExternal(t, plugin.ListenEnv("tcp", "127.0.0.1:0", nil, server)...)
		addr := listening(t, r.ext)
		cli, err := ca.ClientConfig("host", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		cfg = &plugin.Config{Name: "remote", Address: addr,
			Transport: transport.Config{TLS: cli}, StopTimeout: 2 * time.Second}
		r.remote, want = true, transport.KindTCP
	default:
		t.Fatalf("unknown transport %q", tr)
	}
	cfg.Mux = hostMux(r.entered)
	cfg.Logger = slogNew(r.rec)
	tweak(cfg)
	r.s = startSession(t, cfg)
	if k := r.s.Info().Transport.Kind; k != want {
		t.Fatalf("transport %v, want %v", k, want)
	}
	// Runs before startSession's Stop (and startExternal's SIGTERM): a
	// plugin still stopped is resumed, so that Stop can end it even where a
	// send to it cannot be bounded yet. A remote plugin is our own child
	// (signalled through its os.Process); a launched one only while the
	// Session still holds that very process (not reaped: the pid is still
	// its).
	pid := r.s.Status().PID
	t.Cleanup(func() {
		if r.remote {
			_ = r.ext.cmd.Process.Signal(syscall.SIGCONT)
		} else if r.s.Status().PID == pid {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	return r
}

// pid is the plugin process's id.
func (r *liveRig) pid() int {
	if r.remote {
		return r.ext.cmd.Process.Pid
	}
	return r.s.Status().PID
}

// signal sends sig to the plugin process.
func (r *liveRig) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	var err error
	if r.remote {
		err = r.ext.cmd.Process.Signal(sig)
	} else {
		err = syscall.Kill(r.s.Status().PID, sig)
	}
	if err != nil {
		t.Fatalf("%v to the plugin: %v", sig, err)
	}
}

// blockCall starts a call of "block" (20 s deadline) and waits until its
// handler runs; the channel gets its error.
func (r *liveRig) blockCall(t *testing.T) <-chan error {
	t.Helper()
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := r.s.Call(ctx, "block", nil)
		res <- err
	}()
	select {
	case <-r.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking handler never started")
	}
	return res
}

// filler keeps n goroutines calling "echo" with 1 MiB (random bytes, 200 ms
// deadlines) until stopped, so the plugin's ring or socket fills once it
// stops reading.
type filler struct {
	stop chan struct{}
	wg   sync.WaitGroup
	ok   atomic.Int64
	fail atomic.Int64
}

func fill(s *plugin.Client, n int) *filler {
	f := &filler{stop: make(chan struct{})}
	for g := range n {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			req := make([]byte, 1<<20)
			_, _ = rand.NewChaCha8([32]byte{byte(g)}).Read(req)
			for range 1000 {
				select {
				case <-f.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				_, err := s.Call(ctx, "echo", req)
				cancel()
				if err == nil {
					f.ok.Add(1)
				} else {
					f.fail.Add(1)
					if errors.Is(err, rpc.ErrPeerGone) || errors.Is(err, plugin.ErrUnavailable) {
						time.Sleep(5 * time.Millisecond) // between instances
					}
				}
			}
		}()
	}
	return f
}

// end stops the fillers and reports whether they all returned within d.
func (f *filler) end(d time.Duration) bool {
	close(f.stop)
	done := make(chan struct{})
	go func() {
		f.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// stateAfter returns when the session first entered state st after t0
// (from its log), or the zero time.
func (r *liveRig) stateAfter(st string, t0 time.Time) time.Time {
	for _, rec := range r.rec.records(func(rec record) bool { return rec.Msg == "ringwire: plugin state" }) {
		if rec.Attrs["state"] == st && !rec.Time.Before(t0) {
			return rec.Time
		}
	}
	return time.Time{}
}

// TestLiveSessionStopped (5): a plugin SIGSTOPped in the middle of a call,
// with 1 MiB calls filling its ring or socket, is marked unhealthy and
// restarted within HealthInterval × HealthFailures + HealthTimeout + 1 s.
// A launched plugin is killed and relaunched (Ready again within the
// bound); a remote one cannot be replaced while its process is stopped, so
// its connection is given up (Restarting) within the bound and the Client
// reconnects once the process is resumed.
func TestLiveSessionStopped(t *testing.T) {
	const (
		interval = 100 * time.Millisecond
		timeout  = 100 * time.Millisecond
		failures = 2
		bound    = interval*failures + timeout + time.Second
	)
	for _, tr := range liveTransports {
		t.Run(tr, func(t *testing.T) {
			r := startLive(t, tr, func(c *plugin.Config) {
				c.HealthInterval, c.HealthTimeout, c.HealthFailures = interval, timeout, failures
				c.Backoff, c.MaxBackoff, c.MaxRestarts = 10*time.Millisecond, 100*time.Millisecond, 100
				c.StartTimeout = 2 * time.Second // a reconnection to a stopped remote plugin hangs in its handshake
			})
			first := r.pid()
			block := r.blockCall(t)
			f := fill(r.s, 4)
			time.Sleep(50 * time.Millisecond)
			r.signal(t, syscall.SIGSTOP)
			stopped := time.Now()

			// Launched: Ready again with a new process. Remote: the
			// connection given up (Restarting after at least one restart).
			replaced := func() bool {
				st := r.s.Status()
				if r.remote {
					return st.Restarts >= 1
				}
				return st.Restarts >= 1 && st.State == "ready"
			}
			ok := waitFor(bound+4*time.Second, replaced)
			took := time.Since(stopped)
			st := r.s.Status()
			unhealthy := r.stateAfter("unhealthy", stopped)
			t.Logf("%v after SIGSTOP: %v, %d restarts, pid %d (was %d); unhealthy after %v; last error: %v",
				took.Round(time.Millisecond), st.State, st.Restarts, st.PID, first, sinceOr(unhealthy, stopped), st.LastErr)
			if !ok {
				t.Fatalf("not replaced %v after SIGSTOP (bound %v): %v", took.Round(time.Millisecond), bound, st.State)
			}
			if took > bound {
				t.Errorf("replaced %v after SIGSTOP, want within %v", took.Round(time.Millisecond), bound)
			}
			if unhealthy.IsZero() {
				t.Errorf("the session never reported the plugin unhealthy; states: %v", r.rec.states())
			}
			if (!errors.Is(st.LastErr, plugin.ErrUnavailable) || !strings.Contains(st.LastErr.Error(), "health check failed")) && !r.remote {
				t.Errorf("LastErr %v, want ErrUnavailable saying the health check failed", st.LastErr)
			}
			select {
			case err := <-block:
				if !errors.Is(err, rpc.ErrPeerGone) || !errors.Is(err, plugin.ErrPluginRestarted) {
					t.Errorf("the call in flight: %v, want ErrPeerGone and ErrPluginRestarted", err)
				}
			case <-time.After(time.Second):
				t.Errorf("the call in flight did not return when its plugin was replaced")
			}
			if r.remote {
				r.signal(t, syscall.SIGCONT)
				waitState(t, r.s, "ready", 10*time.Second)
			} else if !waitGone(first, 5*time.Second) {
				t.Errorf("the stopped plugin %d is still there", first)
			}
			if !f.end(5 * time.Second) {
				t.Errorf("the 1 MiB calls (200 ms deadlines) did not return within 5s")
			}
			t.Logf("1 MiB calls: %d ok, %d failed", f.ok.Load(), f.fail.Load())
			// A call works again. (With health checks this tight, a loaded
			// machine may fail the new instance's pings too and restart it
			// once more while the 1 MiB calls ran: then the next one works.)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := 0; ; i++ {
				out, err := r.s.Call(ctx, "echo", []byte("again"))
				if err == nil && string(out) == "again" {
					break
				}
				st := r.s.Status()
				if i == 0 && errors.Is(err, plugin.ErrPluginRestarted) {
					t.Logf("the first call after the restart met another restart: %v (%d restarts, last error %v)", err, st.Restarts, st.LastErr)
					continue
				}
				t.Errorf("a call after the restart: %q, %v (now %v, %d restarts, last error %v; states %v)", out, err, st.State, st.Restarts, st.LastErr, r.rec.states())
				break
			}
		})
	}
}

// TestLiveSessionStopWhileStopped (6): Session.Stop(ctx) returns by ctx's
// deadline (300 ms) + 200 ms although the plugin does not read (SIGSTOP,
// its ring or socket full, a call and a health ping in flight). A launched
// plugin is killed and reaped; a remote one's connection is closed.
func TestLiveSessionStopWhileStopped(t *testing.T) {
	const (
		deadline = 300 * time.Millisecond
		margin   = 200 * time.Millisecond
	)
	for _, tr := range liveTransports {
		t.Run(tr, func(t *testing.T) {
			r := startLive(t, tr, func(c *plugin.Config) {
				// A ping is nearly always in flight, and none fails the
				// plugin during the test.
				c.HealthInterval, c.HealthTimeout, c.HealthFailures = 100*time.Millisecond, time.Second, 100
				c.StopTimeout = 2 * time.Second
			})
			pid := r.pid()
			r.blockCall(t)
			f := fill(r.s, 4)
			time.Sleep(50 * time.Millisecond)
			r.signal(t, syscall.SIGSTOP)
			time.Sleep(300 * time.Millisecond) // the ring or socket fills

			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			res := make(chan error, 1)
			go func() { res <- r.s.Stop(ctx) }()
			var err error
			select {
			case err = <-res:
			case <-time.After(deadline + 5*time.Second):
				buf := make([]byte, 1<<20)
				t.Errorf("Stop did not return %v after its deadline; resuming the plugin\n%s", 5*time.Second, buf[:runtime.Stack(buf, true)])
				r.signal(t, syscall.SIGCONT)
				select {
				case err = <-res:
					t.Logf("Stop returned once the plugin was resumed: %v", err)
				case <-time.After(10 * time.Second):
					t.Fatalf("Stop still hung 10s after the plugin was resumed")
				}
			}
			took := time.Since(start)
			t.Logf("Stop(%v) returned after %v: %v", deadline, took.Round(time.Millisecond), err)
			if took > deadline+margin {
				t.Errorf("Stop returned %v after it was called, want within %v + %v", took.Round(time.Millisecond), deadline, margin)
			}
			if st := r.s.Status(); st.State != "stopped" {
				t.Errorf("state after Stop: %v", st.State)
			}
			if !r.remote && !waitGone(pid, 2*time.Second) {
				t.Errorf("the plugin %d outlived Stop", pid)
			}
			if !f.end(5 * time.Second) {
				t.Errorf("the 1 MiB calls (200 ms deadlines) did not return within 5s of Stop")
			}
		})
	}
}

func sinceOr(t, t0 time.Time) any {
	if t.IsZero() {
		return "never"
	}
	return t.Sub(t0).Round(time.Millisecond)
}
