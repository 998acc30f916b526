package plugin

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
	"github.com/ringwire/ringwire/ring"
)

// instance is one run of a plugin under a Client: a launched process, an
// external plugin that connected to a Listener, or a remote plugin the host
// dialled, with its connection. Its methods are safe for concurrent use.
type instance struct {
	cfg     *Config
	peer    *rpc.Peer
	info    Info
	proc    *process  // nil unless launched
	live    *liveness // launched: ends the liveness channel
	started time.Time
	done    chan struct{}

	stopping atomic.Bool // Stop was called: the end is expected
	killed   atomic.Bool // Kill was called, or the process died
}

func newInstance(cfg *Config, peer *rpc.Peer, proc *process, live *liveness) *instance {
	c := &instance{cfg: cfg, peer: peer, info: infoFrom(peer.Info()), proc: proc, live: live, started: time.Now()}
	if proc == nil {
		c.done = make(chan struct{})
		go func() {
			<-peer.Done()
			close(c.done)
		}()
		return c
	}
	c.done = make(chan struct{})
	go c.watch()
	return c
}

// watch ties a launched plugin's process and connection together: when the
// process exits the connection is closed (even if a grandchild inherited the
// socket), and a process whose connection ended without a Stop gets
// StopTimeout to exit before it is killed.
func (c *instance) watch() {
	log := c.cfg.Logger
	select {
	case <-c.proc.exited:
	case <-c.peer.Done():
		c.live.end()
		if !c.proc.waitExit(c.cfg.StopTimeout) && !c.stopping.Load() {
			log.Warn("ringwire: plugin connection ended but the process did not exit; killing it",
				"pid", c.proc.pid, "err", c.peer.Err())
			c.killed.Store(true)
			_ = c.proc.kill()
		}
	}
	<-c.proc.exited
	if !c.stopping.Load() {
		c.killed.Store(true)
	}
	c.peer.Close()
	c.live.end()
	if c.stopping.Load() {
		log.Info("ringwire: plugin exited", "pid", c.proc.pid, "status", exitStatus(c.proc.err))
	} else {
		log.Warn("ringwire: plugin exited", "pid", c.proc.pid, "status", exitStatus(c.proc.err))
	}
	close(c.done)
}

// Call invokes method on the plugin. When the plugin
// dies, calls in flight fail with an error matching ErrPeerGone.
func (c *instance) Call(ctx context.Context, method string, req []byte) ([]byte, error) {
	out, err := c.peer.Call(ctx, method, req)
	return out, c.wrap(err)
}

// CallInto is Call that appends the reply to dst.
func (c *instance) CallInto(ctx context.Context, method string, req, dst []byte) ([]byte, error) {
	out, err := c.peer.CallInto(ctx, method, req, dst)
	return out, c.wrap(err)
}

// CallView is the one-copy form of a call: f sees
// the reply in place and only until it returns; f must be short and must not
// call the plugin.
func (c *instance) CallView(ctx context.Context, method string, req []byte, f func(reply []byte) error) error {
	return c.wrap(c.peer.CallView(ctx, method, req, f))
}

// New creates a remote object of type typ on the plugin.
func (c *instance) New(ctx context.Context, typ string, args []byte) (*rpc.Handle, error) {
	h, err := c.peer.New(ctx, typ, args)
	if h != nil {
		rpc.SetHandleErrors(h, c.wrap)
	}
	return h, c.wrap(err)
}

// Ping checks that the plugin answers (a round trip through its reading
// loop, not through a handler).
func (c *instance) Ping(ctx context.Context) error { return c.wrap(c.peer.Ping(ctx)) }

// wrap makes the end of a plugin that died (or was killed) read as
// ErrPeerGone even where this side closed the connection after
// noticing it.
func (c *instance) wrap(err error) error {
	if err == nil {
		return nil
	}
	gone := errors.Is(err, rpc.ErrPeerGone) || (c.killed.Load() && errors.Is(err, rpc.ErrClosed))
	switch {
	case c.stopping.Load() && (errors.Is(err, rpc.ErrGoAway) || errors.Is(err, rpc.ErrClosed)):
		// Still matches what the Peer said (the goaway error during the
		// stop, ErrClosed after it).
		return &pluginError{name: c.cfg.Name, what: "closed (Stop or Close was called)", sentinels: []error{ErrClosed, err}}
	case gone && isCorrupt(c.peer.Err()):
		// This side found the plugin's data broken and hung up; the
		// plugin's exit that follows is not the story.
		return &pluginError{name: c.cfg.Name, what: "the call failed: the plugin broke the protocol", sentinels: []error{ErrCorrupt, rpc.ErrPeerGone}, cause: c.peer.Err()}
	case gone && c.proc != nil && c.proc.waitExit(exitSettle):
		// Matches ErrExited and ErrPeerGone, not
		// ErrClosed: this side did not close.
		return &pluginError{name: c.cfg.Name, what: "the call failed", sentinels: []error{rpc.ErrPeerGone}, cause: c.proc.exitErr()}
	case gone && !errors.Is(err, rpc.ErrPeerGone):
		return errorf(c.cfg.Name, rpc.ErrPeerGone, nil, "the call failed: the plugin was killed")
	}
	return err
}

// Stats returns the connection's counters (messages, bytes, and on shared
// memory the waits and wakes).
func (c *instance) Stats() transport.Stats { return c.peer.Stats() }

// Info is what the plugin declared in the handshake: name, version,
// description, constants, and the negotiated transport.
func (c *instance) Info() Info { return c.info }

// PID is the launched plugin's process id, or -1 for an external or remote
// plugin.
func (c *instance) PID() int {
	if c.proc == nil {
		return -1
	}
	return c.proc.pid
}

// Wait waits until Done and returns how the plugin ended: the process's exit
// error (nil for status 0) for a launched plugin, the connection's error
// (nil for a close by this side) otherwise.
func (c *instance) Wait() error {
	<-c.done
	if c.proc != nil {
		return c.proc.err
	}
	if err := c.peer.Err(); !errors.Is(err, rpc.ErrClosed) {
		return err
	}
	return nil
}

// Stop ends the plugin gracefully within Config.StopTimeout (and ctx): it
// sends goaway and lets the calls in flight in both directions finish, closes
// the connection, and waits for the process to exit on its own (a plugin's
// Serve returns when its connection ends). A process still running when the
// budget is spent (plus up to half a second for it to see its connection
// close) gets SIGTERM and, after a short grace, SIGKILL (at once if ctx has
// ended: then only a moment's grace). The process is always reaped. Stop
// reports abandoned calls (an error matching context.DeadlineExceeded) and a
// kill (ErrKilled).
func (c *instance) Stop(ctx context.Context) error {
	c.stopping.Store(true)
	dctx, cancel := context.WithTimeout(ctx, c.cfg.StopTimeout)
	defer cancel()
	var errs []error
	if err := c.peer.Shutdown(dctx); err != nil {
		errs = append(errs, fmt.Errorf("plugin %q: calls in flight abandoned: %w", c.cfg.Name, err))
	}
	if c.proc == nil {
		<-c.done
		return errors.Join(errs...)
	}
	select {
	case <-c.proc.exited:
	case <-dctx.Done():
		// The drain used the whole budget, so the connection closed just
		// now: give the plugin a moment to see it and exit on its own
		// before it is signalled.
		if ctx.Err() == nil {
			c.proc.waitExit(closeSettle)
		}
	}
	if !c.proc.hasExited() {
		if ctx.Err() == nil {
			c.cfg.Logger.Warn("ringwire: plugin did not exit after its connection closed; sending SIGTERM", "pid", c.proc.pid)
			if err := c.proc.terminate(); err == nil && c.proc.waitExit(termGrace(c.cfg.StopTimeout)) {
				<-c.done
				return errors.Join(errs...)
			}
		} else if c.proc.waitExit(exitSettle) {
			// The caller is out of time, but the plugin was on its way out.
			<-c.done
			return errors.Join(errs...)
		}
		c.cfg.Logger.Warn("ringwire: plugin still running; sending SIGKILL", "pid", c.proc.pid)
		errs = append(errs, fmt.Errorf("%w: plugin %q (process %d)", ErrKilled, c.cfg.Name, c.proc.pid))
		if err := c.proc.kill(); err != nil {
			return errors.Join(append(errs, err)...) // not reaped: do not wait for Done
		}
	}
	<-c.done
	return errors.Join(errs...)
}

// closeSettle is how long Stop waits for a plugin to exit on its own after a
// drain that used the whole budget closed its connection: a plugin exits
// within milliseconds of its connection closing, more on a loaded machine.
const closeSettle = 500 * time.Millisecond

// termGrace is how long a process gets between SIGTERM and SIGKILL.
func termGrace(stop time.Duration) time.Duration {
	return min(max(stop/4, 100*time.Millisecond), 2*time.Second)
}

// Kill ends the plugin at once: SIGKILL for a launched plugin (waiting until
// it is reaped), closing the connection otherwise. Calls in flight fail with
// an error matching ErrPeerGone.
func (c *instance) Kill() error {
	c.killed.Store(true)
	if c.proc == nil {
		c.peer.Close()
		<-c.done
		return nil
	}
	err := c.proc.kill()
	if err == nil {
		<-c.done
	}
	return err
}

// isCorrupt reports whether err says the peer's data broke the protocol, at
// any layer.
func isCorrupt(err error) bool {
	return err != nil && (errors.Is(err, rpc.ErrCorrupt) || errors.Is(err, transport.ErrCorrupt) || errors.Is(err, ring.ErrCorrupt))
}
