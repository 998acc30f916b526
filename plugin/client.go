package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
)

// Client is the host's handle on one plugin: a process it launched
// (Launch), a remote plugin it dialled (Connect), or an external plugin that
// connected to a Listener. Its methods are safe for concurrent use.
//
// A Client supervises its plugin: it pings it every HealthInterval, and when
// the plugin dies or fails its health checks it ends it and, for a launched
// or remote plugin, starts a new instance with exponential backoff, up to
// MaxRestarts in a row (an external plugin reconnects by itself, as a new
// Client).
//
// Calls go to the current instance. When it dies, calls in flight fail at
// once with an error matching ErrPeerGone that names the exit status or
// signal, and also ErrPluginRestarted if the Client restarts the plugin.
// Calls made while a restart is under way wait for the new instance until
// their context ends (then they fail with ErrUnavailable and the context's
// error); calls made after the plugin ended for good fail at once, with
// ErrUnavailable when restarts ran out, with the end's own error when
// restarts are off, and with ErrClosed after Stop, Close or Kill. A Client
// never retries a call: it cannot know whether the call took effect.
// Objects created with New die with their instance.
type Client struct {
	cfg *Config // with defaults
	log *slog.Logger

	mu    sync.Mutex
	state state
	cur   *instance
	last  *instance // the most recent instance, running or ended
	fixed *instance // an accepted plugin's only instance (never reopened)
	// ready is cur while the state is ready or unhealthy, else nil: calls
	// read it without taking mu.
	ready       atomic.Pointer[instance]
	started     time.Time
	restarts    int // restart attempts since start
	consecutive int // restart attempts since the last stable run
	lastErr     error
	changed     chan struct{} // closed and replaced at every state change

	// Per run (start to Stop):
	stop      chan struct{}      // closed by Stop
	cancelRun context.CancelFunc // cancels launches and pings in progress
	runDone   chan struct{}      // closed when the run's goroutines have ended
}

// newClient returns an idle Client for cfg (copied; start validates it).
func newClient(cfg *Config) *Client {
	if cfg == nil {
		cfg = &Config{}
	}
	c := cfg.withDefaults()
	return &Client{cfg: c, log: c.Logger, changed: make(chan struct{})}
}

// name is the plugin's Config.Name.
func (s *Client) name() string { return s.cfg.Name }

// setState records a state change, logs it and wakes the waiters. s.mu is
// held.
func (s *Client) setState(st state) {
	old := s.state
	if old == st {
		return
	}
	s.state = st
	s.publish()
	close(s.changed)
	s.changed = make(chan struct{})
	switch st {
	case stateUnhealthy, stateRestarting, stateFailed:
		s.log.Warn("ringwire: plugin state", "state", st.String(), "from", old.String(), "err", s.lastErr)
	default:
		s.log.Info("ringwire: plugin state", "state", st.String(), "from", old.String())
	}
}

// publish updates ready after a change of state or of cur. s.mu is held.
func (s *Client) publish() {
	if s.state == stateReady || s.state == stateUnhealthy {
		s.ready.Store(s.cur)
	} else {
		s.ready.Store(nil)
	}
}

// start launches (or connects to) the plugin, bounded by ctx and
// StartTimeout, and starts supervising it. A failed start leaves the Client
// failed and is not retried. start may be called again after Stop or a
// failure (Registry.StartAll).
func (s *Client) start(ctx context.Context) error {
	if s.fixed == nil {
		if err := s.cfg.check(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	switch s.state {
	case stateIdle, stateStopped, stateFailed:
	default:
		st := s.state
		s.mu.Unlock()
		return fmt.Errorf("%w: plugin %q: started again while %v", ErrConfig, s.cfg.Name, st)
	}
	if s.cancelRun != nil {
		s.cancelRun() // the previous run's (it has ended)
	}
	runCtx, cancelRun := context.WithCancel(context.Background())
	s.stop, s.cancelRun, s.runDone = make(chan struct{}), cancelRun, make(chan struct{})
	s.restarts, s.consecutive, s.lastErr = 0, 0, nil
	stop, runDone := s.stop, s.runDone
	s.setState(stateStarting)
	s.mu.Unlock()

	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(runCtx, cancel)()
	c, err := s.open(lctx)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastErr = err
		if s.state == stateStarting {
			s.setState(stateFailed)
		}
		s.cancelRun()
		close(runDone)
		return err
	}
	s.cur, s.last, s.started = c, c, c.started
	s.publish()
	if s.state == stateStarting {
		s.setState(stateReady)
	}
	// Were Stop called meanwhile, the supervisor sees stop closed at once and
	// Stop ends this instance gracefully.
	go s.supervise(c, stop, runCtx, runDone)
	return nil
}

// open starts one instance.
func (s *Client) open(ctx context.Context) (*instance, error) {
	if s.fixed != nil {
		return s.fixed, nil // only at start: an accepted plugin is never restarted
	}
	if s.cfg.Address != "" {
		return connect(ctx, s.cfg)
	}
	return launch(ctx, s.cfg)
}

// supervise watches each instance and replaces it when it fails, until Stop
// or until it gives up.
func (s *Client) supervise(c *instance, stop <-chan struct{}, runCtx context.Context, runDone chan struct{}) {
	defer close(runDone)
	for {
		cause := s.watch(c, stop, runCtx)
		if cause == nil {
			return // stopping
		}
		again := s.retire(c, cause)
		if err := c.Kill(); err != nil {
			s.log.Error("ringwire: cannot reap a failed plugin", "err", err)
		}
		if !again {
			return
		}
		if c = s.restart(stop, runCtx); c == nil {
			return
		}
	}
}

// watch waits until instance c fails (and returns why) or Stop is called
// (nil).
func (s *Client) watch(c *instance, stop <-chan struct{}, runCtx context.Context) error {
	var tick <-chan time.Time
	if s.cfg.HealthInterval > 0 {
		t := time.NewTicker(s.cfg.HealthInterval)
		defer t.Stop()
		tick = t.C
	}
	fails := 0
	for {
		select {
		case <-stop:
			return nil
		case <-c.peer.Done():
			return s.lost(c, stop)
		case <-c.done:
			return s.lost(c, stop)
		case <-tick:
		}
		pctx, cancel := context.WithTimeout(runCtx, s.cfg.HealthTimeout)
		err := c.Ping(pctx)
		cancel()
		if runCtx.Err() != nil {
			return nil
		}
		if err == nil {
			fails = 0
			s.mu.Lock()
			if s.state == stateUnhealthy {
				s.setState(stateReady)
			}
			s.mu.Unlock()
			continue
		}
		if c.peer.Err() != nil {
			return s.lost(c, stop)
		}
		fails++
		s.mu.Lock()
		s.lastErr = errorf(s.cfg.Name, ErrUnavailable, err, "health check failed: ping %d of %d", fails, s.cfg.HealthFailures)
		if s.state == stateReady {
			s.setState(stateUnhealthy)
		}
		s.mu.Unlock()
		if fails >= s.cfg.HealthFailures {
			return errorf(s.cfg.Name, ErrUnavailable, err, "health check failed: %d pings in a row failed, the last", fails)
		}
	}
}

// lost describes the end of instance c's connection or process, or returns
// nil if Stop is under way.
func (s *Client) lost(c *instance, stop <-chan struct{}) error {
	select {
	case <-stop:
		return nil
	default:
	}
	if c.proc != nil && c.proc.waitExit(exitSettle) {
		return c.proc.exitErr()
	}
	return fmt.Errorf("connection lost: %w", c.peer.Err())
}

// mayRestart reports whether the end of instance c is followed by a restart.
// s.mu is held.
func (s *Client) mayRestart(c *instance) bool {
	if s.cfg.MaxRestarts < 0 || s.fixed != nil {
		return false
	}
	return s.consecutive < s.cfg.MaxRestarts || (c != nil && time.Since(c.started) >= s.cfg.MaxBackoff)
}

// retire records the failure of instance c and decides whether to restart:
// Restarting (true) or Failed (false).
func (s *Client) retire(c *instance, cause error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = cause
	if s.cur == c {
		s.cur = nil
		s.publish()
	}
	if s.state == stateStopping {
		return false
	}
	if !s.mayRestart(c) {
		s.giveUp()
		return false
	}
	if time.Since(c.started) >= s.cfg.MaxBackoff {
		s.consecutive = 0 // it ran long enough: start the backoff over
	}
	s.setState(stateRestarting)
	return true
}

// giveUp marks the Client Failed. s.mu is held.
func (s *Client) giveUp() {
	if s.fixed != nil {
		s.lastErr = errorf(s.cfg.Name, ErrUnavailable, s.lastErr, "unavailable: ended (an external plugin reconnects as a new Client)")
	} else if s.cfg.MaxRestarts < 0 {
		s.lastErr = errorf(s.cfg.Name, ErrUnavailable, s.lastErr, "unavailable: ended, and restarts are off")
	} else {
		s.lastErr = errorf(s.cfg.Name, ErrUnavailable, s.lastErr, "unavailable: gave up after %d restart%s in a row", s.consecutive, plural(s.consecutive))
	}
	s.setState(stateFailed)
}

// restart starts new instances with backoff until one runs (returned), the
// restarts run out or Stop is called (nil).
func (s *Client) restart(stop <-chan struct{}, runCtx context.Context) *instance {
	for {
		s.mu.Lock()
		if s.state == stateStopping {
			s.mu.Unlock()
			return nil
		}
		if s.consecutive >= s.cfg.MaxRestarts {
			s.giveUp()
			s.mu.Unlock()
			return nil
		}
		s.consecutive++
		s.restarts++
		n, delay := s.consecutive, s.cfg.backoff(s.consecutive)
		s.setState(stateRestarting)
		s.mu.Unlock()
		s.log.Info("ringwire: plugin restarting", "attempt", n, "backoff", delay)

		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			return nil
		}
		c, err := s.open(runCtx)
		s.mu.Lock()
		if err != nil && permanent(err) {
			// Another attempt would meet the same refusal.
			s.lastErr = errorf(s.cfg.Name, ErrUnavailable, err, "unavailable: not restarted again, the refusal is permanent")
			s.setState(stateFailed)
			s.mu.Unlock()
			s.log.Error("ringwire: plugin restart refused", "attempt", n, "err", err)
			return nil
		}
		if err != nil {
			s.lastErr = err
			s.mu.Unlock()
			s.log.Warn("ringwire: plugin restart failed", "attempt", n, "err", err)
			continue
		}
		s.cur, s.last, s.started = c, c, c.started
		s.publish()
		if s.state == stateRestarting {
			s.setState(stateReady)
		}
		s.mu.Unlock()
		return c
	}
}

// Stop ends supervision and the plugin gracefully within Config.StopTimeout
// (and ctx): it sends goaway and lets the calls in flight in both directions
// finish, closes the connection, and waits for the process to exit on its
// own (a plugin's Serve returns when its connection ends). A process still
// running when the budget is spent (plus up to half a second for it to see
// its connection close) gets SIGTERM and, after a short grace, SIGKILL (at
// once if ctx has ended: then only a moment's grace). The process is always
// reaped. Stop reports abandoned calls (an error matching
// context.DeadlineExceeded) and a kill (ErrKilled). Calls waiting for a
// restart fail with ErrUnavailable, later calls with ErrClosed. Stop on a
// Client that has ended already returns nil.
func (s *Client) Stop(ctx context.Context) error {
	return s.end(ctx, func(c *instance) error { return c.Stop(ctx) })
}

// Close is Stop with no deadline but StopTimeout.
func (s *Client) Close() error { return s.Stop(context.Background()) }

// Kill ends supervision and the plugin at once: SIGKILL for a launched
// plugin (waiting until it is reaped), closing the connection otherwise.
// Calls in flight fail with an error matching ErrPeerGone.
func (s *Client) Kill() error {
	return s.end(context.Background(), (*instance).Kill)
}

// end ends supervision, then the current instance with stop.
func (s *Client) end(ctx context.Context, stop func(*instance) error) error {
	s.mu.Lock()
	for s.state == stateStopping {
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.mu.Lock()
	}
	if s.state == stateIdle || s.state == stateStopped {
		s.mu.Unlock()
		return nil
	}
	s.setState(stateStopping)
	close(s.stop)
	s.cancelRun()
	runDone := s.runDone
	s.mu.Unlock()

	<-runDone // bounded: launches and pings are cancelled, backoffs interrupted
	s.mu.Lock()
	c := s.cur // it stays current while it drains: new calls meet its goaway
	s.mu.Unlock()
	var err error
	if c != nil {
		err = stop(c)
	}
	s.mu.Lock()
	s.cur = nil
	s.publish()
	s.setState(stateStopped)
	s.mu.Unlock()
	return err
}

// Status returns a snapshot of the Client.
func (s *Client) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{State: s.state.String(), Started: s.started, Restarts: s.restarts, PID: -1, LastErr: s.lastErr}
	if s.cur != nil {
		st.PID = s.cur.PID()
	}
	return st
}

// latest returns the current instance, else the last one, else nil.
func (s *Client) latest() *instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		return s.cur
	}
	return s.last
}

// Info is what the plugin declared in its handshake: name, version,
// description, constants, its service and methods, and the negotiated
// transport (of the current instance, else of the last one).
func (s *Client) Info() Info {
	if c := s.latest(); c != nil {
		return c.Info()
	}
	return Info{}
}

// PID is the process id of the plugin's current (else last) process, or -1
// for an external or remote plugin.
func (s *Client) PID() int {
	if c := s.latest(); c != nil {
		return c.PID()
	}
	return -1
}

// Stats returns the counters of the current (else last) instance's
// connection: messages, bytes, and on shared memory the waits and wakes.
func (s *Client) Stats() transport.Stats {
	if c := s.latest(); c != nil {
		return c.Stats()
	}
	return transport.Stats{}
}

// Ping checks that the plugin answers (a round trip through its reading
// loop, not through a handler), waiting for a restart under way as calls do.
func (s *Client) Ping(ctx context.Context) error {
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	return s.callErr(c, c.Ping(ctx))
}

// Wait waits until the plugin has ended for good (Stop, Close or Kill was
// called, or it ended with no restart left) and returns how its last
// instance ended: the process's exit error (nil for status 0) for a launched
// plugin, the connection's error (nil for a close by this side) otherwise.
func (s *Client) Wait() error {
	for {
		s.mu.Lock()
		st, ch, last, lastErr, runDone := s.state, s.changed, s.last, s.lastErr, s.runDone
		s.mu.Unlock()
		if st == stateStopped || st == stateFailed {
			if runDone != nil {
				<-runDone // the supervisor has reaped the last instance
			}
			if last == nil {
				return lastErr
			}
			return last.Wait()
		}
		<-ch
	}
}

// client returns the instance to call, waiting for a restart in progress.
func (s *Client) client(ctx context.Context) (*instance, error) {
	if c := s.ready.Load(); c != nil {
		return c, nil
	}
	for {
		s.mu.Lock()
		st, c, ch, last := s.state, s.cur, s.changed, s.lastErr
		s.mu.Unlock()
		switch st {
		case stateReady, stateUnhealthy:
			if c != nil {
				return c, nil
			}
		case stateStarting, stateRestarting:
		case stateStopping:
			if c != nil {
				return c, nil // it refuses new calls as its Stop drains it
			}
			return nil, errorf(s.cfg.Name, ErrClosed, nil, "closed (Stop or Close was called)")
		case stateStopped:
			return nil, errorf(s.cfg.Name, ErrClosed, nil, "closed (Stop or Close was called)")
		case stateFailed:
			if s.cfg.MaxRestarts < 0 || s.fixed != nil {
				s.mu.Lock()
				c := s.last
				s.mu.Unlock()
				if c != nil {
					return c, nil // its calls fail with how it ended
				}
			}
			if errors.Is(last, ErrUnavailable) {
				return nil, last // it says why already
			}
			return nil, errorf(s.cfg.Name, ErrUnavailable, last, "unavailable: failed")
		default:
			return nil, errorf(s.cfg.Name, ErrUnavailable, nil, "unavailable: %v", st)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, errorf(s.cfg.Name, ErrUnavailable, ctx.Err(), "unavailable: %v", st)
		}
	}
}

// callErr adds ErrPluginRestarted to the error of a call whose instance c
// died, when the Client restarts (or has restarted) the plugin.
func (s *Client) callErr(c *instance, err error) error {
	if err == nil || !errors.Is(err, rpc.ErrPeerGone) {
		return err
	}
	s.mu.Lock()
	var restarted bool
	switch {
	case s.cur != nil && s.cur != c, s.state == stateRestarting:
		restarted = true
	case s.state == stateReady, s.state == stateUnhealthy:
		restarted = s.mayRestart(c) // the supervisor has not noticed yet
	}
	s.mu.Unlock()
	if restarted {
		// err names the plugin already: say the restart after it.
		return fmt.Errorf("%w (%w)", err, ErrPluginRestarted)
	}
	return err
}

// Call invokes method on the current instance (see Client.Call and the
// Client documentation for failures).
func (s *Client) Call(ctx context.Context, method string, req []byte) ([]byte, error) {
	c, err := s.client(ctx)
	if err != nil {
		return nil, err
	}
	out, err := c.Call(ctx, method, req)
	return out, s.callErr(c, err)
}

// CallInto is Call that appends the reply to dst.
func (s *Client) CallInto(ctx context.Context, method string, req, dst []byte) ([]byte, error) {
	c, err := s.client(ctx)
	if err != nil {
		return dst, err
	}
	out, err := c.CallInto(ctx, method, req, dst)
	return out, s.callErr(c, err)
}

// CallView is CallInto's one-copy form: f sees the
// reply, in the connection's memory when this goroutine read it itself, and
// only until it returns.
func (s *Client) CallView(ctx context.Context, method string, req []byte, f func(reply []byte) error) error {
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	return s.callErr(c, c.CallView(ctx, method, req, f))
}

// New creates a remote object on the current instance; the handle dies with
// that instance.
func (s *Client) New(ctx context.Context, typ string, args []byte) (*rpc.Handle, error) {
	c, err := s.client(ctx)
	if err != nil {
		return nil, err
	}
	h, err := c.New(ctx, typ, args)
	if h != nil {
		rpc.SetHandleErrors(h, func(err error) error { return s.callErr(c, c.wrap(err)) })
	}
	return h, s.callErr(c, err)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
