package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
)

// Session supervises one plugin: it launches it (or, with Config.Address,
// connects to it), pings it every HealthInterval, and when the plugin dies or
// fails its health checks restarts it with exponential backoff, up to
// MaxRestarts in a row. Its methods are safe for concurrent use.
//
// Calls go to the current instance. When it dies, calls in flight fail at
// once with an error matching ErrPeerGone, and also
// ErrPluginRestarted if the Session restarts the plugin. Calls made while a
// restart is under way wait for the new instance until their context ends
// (then they fail with ErrUnavailable and the context's error); calls made
// when the Session is not running (idle, stopped, failed) fail at once with
// ErrUnavailable. A Session never retries a call: it cannot know whether the
// call took effect. Objects created with New die with their instance.
type Session struct {
	cfg *Config // with defaults
	log *slog.Logger

	mu          sync.Mutex
	state       state
	cur         *Client
	started     time.Time
	restarts    int // restart attempts since Start
	consecutive int // restart attempts since the last stable run
	lastErr     error
	changed     chan struct{} // closed and replaced at every state change

	// Per run (Start to Stop):
	stop      chan struct{}      // closed by Stop
	cancelRun context.CancelFunc // cancels launches and pings in progress
	runDone   chan struct{}      // closed when the run's goroutines have ended
}

// NewSession returns an idle Session for cfg (copied; see Start for its
// validation).
func NewSession(cfg *Config) *Session {
	if cfg == nil {
		cfg = &Config{}
	}
	c := cfg.withDefaults()
	return &Session{cfg: c, log: c.Logger, changed: make(chan struct{})}
}

// name is the plugin's Config.Name.
func (s *Session) name() string { return s.cfg.Name }

// setState records a state change, logs it and wakes the waiters. s.mu is
// held.
func (s *Session) setState(st state) {
	old := s.state
	if old == st {
		return
	}
	s.state = st
	close(s.changed)
	s.changed = make(chan struct{})
	switch st {
	case stateUnhealthy, stateRestarting, stateFailed:
		s.log.Warn("ringwire: plugin state", "state", st.String(), "from", old.String(), "err", s.lastErr)
	default:
		s.log.Info("ringwire: plugin state", "state", st.String(), "from", old.String())
	}
}

// Start launches (or connects to) the plugin, bounded by ctx and
// StartTimeout, and starts supervising it. A failed start leaves the Session
// Failed and is not retried. Start may be called again after Stop or a
// failure.
func (s *Session) Start(ctx context.Context) error {
	if err := s.cfg.check(); err != nil {
		return err
	}
	s.mu.Lock()
	switch s.state {
	case stateIdle, stateStopped, stateFailed:
	default:
		st := s.state
		s.mu.Unlock()
		return fmt.Errorf("%w: plugin %q: Start while %v", ErrConfig, s.cfg.Name, st)
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
		close(runDone)
		return err
	}
	s.cur, s.started = c, c.started
	if s.state == stateStarting {
		s.setState(stateReady)
	}
	// Were Stop called meanwhile, the supervisor sees stop closed at once and
	// Stop ends this instance gracefully.
	go s.supervise(c, stop, runCtx, runDone)
	return nil
}

// open starts one instance.
func (s *Session) open(ctx context.Context) (*Client, error) {
	if s.cfg.Address != "" {
		return connect(ctx, s.cfg)
	}
	return launch(ctx, s.cfg)
}

// supervise watches each instance and replaces it when it fails, until Stop
// or until it gives up.
func (s *Session) supervise(c *Client, stop <-chan struct{}, runCtx context.Context, runDone chan struct{}) {
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
func (s *Session) watch(c *Client, stop <-chan struct{}, runCtx context.Context) error {
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
		s.lastErr = fmt.Errorf("%w: ping %d of %d: %w", ErrUnhealthy, fails, s.cfg.HealthFailures, err)
		if s.state == stateReady {
			s.setState(stateUnhealthy)
		}
		s.mu.Unlock()
		if fails >= s.cfg.HealthFailures {
			return fmt.Errorf("%w: %d pings in a row failed, the last: %w", ErrUnhealthy, fails, err)
		}
	}
}

// lost describes the end of instance c's connection or process, or returns
// nil if Stop is under way.
func (s *Session) lost(c *Client, stop <-chan struct{}) error {
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
func (s *Session) mayRestart(c *Client) bool {
	if s.cfg.MaxRestarts < 0 {
		return false
	}
	return s.consecutive < s.cfg.MaxRestarts || (c != nil && time.Since(c.started) >= s.cfg.MaxBackoff)
}

// retire records the failure of instance c and decides whether to restart:
// Restarting (true) or Failed (false).
func (s *Session) retire(c *Client, cause error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = cause
	if s.cur == c {
		s.cur = nil
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

// giveUp marks the Session Failed. s.mu is held.
func (s *Session) giveUp() {
	if s.cfg.MaxRestarts < 0 {
		s.lastErr = errorf(s.cfg.Name, ErrUnavailable, s.lastErr, "unavailable: ended, and restarts are off")
	} else {
		s.lastErr = errorf(s.cfg.Name, ErrUnavailable, s.lastErr, "unavailable: gave up after %d restart%s in a row", s.consecutive, plural(s.consecutive))
	}
	s.setState(stateFailed)
}

// restart starts new instances with backoff until one runs (returned), the
// restarts run out or Stop is called (nil).
func (s *Session) restart(stop <-chan struct{}, runCtx context.Context) *Client {
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
		s.cur, s.started = c, c.started
		if s.state == stateRestarting {
			s.setState(stateReady)
		}
		s.mu.Unlock()
		return c
	}
}

// Stop ends supervision and stops the current instance gracefully (see
// Client.Stop), bounded by ctx and StopTimeout. Calls waiting for a restart
// fail with ErrUnavailable. Stop on a Session that is not running returns
// nil.
func (s *Session) Stop(ctx context.Context) error {
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
	c := s.cur
	s.cur = nil
	s.mu.Unlock()
	var err error
	if c != nil {
		err = c.Stop(ctx)
	}
	s.mu.Lock()
	s.setState(stateStopped)
	s.mu.Unlock()
	return err
}

// Status returns a snapshot of the Session.
func (s *Session) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{State: s.state.String(), Started: s.started, Restarts: s.restarts, PID: -1, LastErr: s.lastErr}
	if s.cur != nil {
		st.PID = s.cur.PID()
	}
	return st
}

// current returns the current instance, or nil while there is none.
func (s *Session) current() *Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Info is what the current instance declared in its handshake (zero while
// there is none).
func (s *Session) Info() Info {
	if c := s.current(); c != nil {
		return c.Info()
	}
	return Info{}
}

// client returns the instance to call, waiting for a restart in progress.
func (s *Session) client(ctx context.Context) (*Client, error) {
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
		case stateFailed:
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
// died, when the Session restarts (or has restarted) the plugin.
func (s *Session) callErr(c *Client, err error) error {
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
		return fmt.Errorf("%w: plugin %q: %w", ErrPluginRestarted, s.cfg.Name, err)
	}
	return err
}

// Call invokes method on the current instance (see Client.Call and the
// Session documentation for failures).
func (s *Session) Call(ctx context.Context, method string, req []byte) ([]byte, error) {
	c, err := s.client(ctx)
	if err != nil {
		return nil, err
	}
	out, err := c.Call(ctx, method, req)
	return out, s.callErr(c, err)
}

// CallInto is Call that appends the reply to dst.
func (s *Session) CallInto(ctx context.Context, method string, req, dst []byte) ([]byte, error) {
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
func (s *Session) CallView(ctx context.Context, method string, req []byte, f func(reply []byte) error) error {
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	return s.callErr(c, c.CallView(ctx, method, req, f))
}

// New creates a remote object on the current instance; the handle dies with
// that instance.
func (s *Session) New(ctx context.Context, typ string, args []byte) (*rpc.Handle, error) {
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
