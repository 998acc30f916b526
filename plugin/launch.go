package plugin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
)

// exitSettle is how long a failed launch waits for the child to exit on its
// own (to report its exit status) before killing it.
const exitSettle = 100 * time.Millisecond

// Launch starts the plugin binary cfg.Path, connects to it and supervises it
// (see Client: health pings, restarts). Each process it starts gets
// one end of a Unix socket pair as descriptor 3 and a random 256-bit token in
// its environment (the token, not the uid, authenticates here: SO_PEERCRED on
// a socket pair names its creator, the host); the host runs the listening side
// of the handshake on the other end, checks the token and the contract, and
// serves cfg.Mux to the plugin. Starting and the handshake are bounded by
// cfg.StartTimeout and ctx; on any failure the child is killed and reaped.
//
// The plugin's stdout and stderr are logged line by line (see maxLogLine).
// Stop or Close the Client when done; Kill ends it at once.
func Launch(ctx context.Context, cfg *Config) (*Client, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: nil Config", ErrConfig)
	}
	c := cfg.withDefaults()
	if c.Path == "" {
		return nil, fmt.Errorf("%w: plugin %q: Launch needs Config.Path", ErrConfig, c.Name)
	}
	c.Address = ""
	s := newClient(c)
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func launch(ctx context.Context, c *Config) (*instance, error) {
	token := newToken()
	hostEnd, childEnd, err := socketPair()
	if err != nil {
		return nil, fmt.Errorf("plugin %q: %w", c.Name, err)
	}
	cmd := exec.Command(c.Path, c.Args...)
	bin, err := c.verifiedBinary(cmd)
	if err != nil {
		hostEnd.Close()
		childEnd.Close()
		return nil, err
	}
	cmd.Env = childEnv(c.Env, token, hostLevel(c.Logger))
	cmd.Dir = c.Dir
	cmd.ExtraFiles = []*os.File{childEnd}
	setProcAttr(cmd)
	proc, err := startProcess(cmd, c.Logger, childEnd)
	if bin != nil {
		bin.Close()
	}
	if err != nil {
		hostEnd.Close()
		return nil, fmt.Errorf("plugin %q: %w", c.Name, err)
	}
	c.Logger.Debug("ringwire: plugin process started", "pid", proc.pid, "path", c.Path)

	hctx, cancel := context.WithTimeout(ctx, c.StartTimeout)
	defer cancel()
	// A child that dies before its handshake ends the wait at once.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-proc.exited:
			cancel()
		case <-stop:
		}
	}()
	live := newLiveness(hostEnd)
	conn, err := transport.Server(hctx, hostEnd, c.transportConfig([]byte(token)))
	if err == nil {
		if err = c.admit(conn.Info()); err != nil {
			conn.Close()
		}
	} else {
		err = hint(err)
	}
	if err != nil {
		live.end()
		exited := proc.waitExit(exitSettle)
		if kerr := proc.kill(); kerr != nil {
			c.Logger.Error("ringwire: cannot reap a plugin whose launch failed", "err", kerr)
		}
		switch {
		case refused(err):
			// The plugin was told why; its exit follows from that.
			return nil, fmt.Errorf("plugin %q: launch: %w", c.Name, err)
		case exited:
			return nil, &pluginError{name: c.Name, what: fmt.Sprintf("%v before its handshake; does its main call plugin.Main?%s",
				proc.exitErr(), proc.lastOutput()), sentinels: []error{ErrExited}}
		case ctx.Err() == nil && errors.Is(hctx.Err(), context.DeadlineExceeded):
			return nil, errorf(c.Name, ErrStartTimeout, nil, "start timed out: the process (pid %d) ran for %v without starting "+
				"the ringwire handshake; does its main call plugin.Main?%s", proc.pid, c.StartTimeout, proc.lastOutput())
		}
		return nil, fmt.Errorf("plugin %q: launch: %w", c.Name, err)
	}
	peer := rpc.NewPeer(conn, rpc.Options{Mux: c.Mux, Logger: c.Logger, Intercept: c.Intercept})
	cl := newInstance(c, peer, proc, live)
	in := cl.info
	c.Logger.Info("ringwire: plugin launched", "pid", proc.pid, "name", in.Name, "version", in.Version,
		"transport", in.Transport.Kind.String())
	return cl, nil
}

// refused reports whether a handshake failed on a decision (contract,
// token, version, credentials) rather than on the plugin's absence.
func refused(err error) bool {
	for _, e := range []error{handshake.ErrContractMismatch, handshake.ErrUnauthorized, handshake.ErrVersion, handshake.ErrRefused} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// permanent reports whether a failed start would fail again the same way:
// the plugin does not serve what the host needs, speaks no common version,
// or is not authorised.
func permanent(err error) bool {
	for _, e := range []error{handshake.ErrContractMismatch, handshake.ErrUnauthorized, handshake.ErrVersion} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// newToken returns 256 random bits, hex encoded (the environment carries
// text).
func newToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand aborts the program instead)
	return hex.EncodeToString(b[:])
}
