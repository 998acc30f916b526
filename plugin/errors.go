package plugin

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/ringwire/ringwire/internal/errs"
	"github.com/ringwire/ringwire/internal/handshake"
)

// Sentinel errors, matched with errors.Is. Errors from the layers below keep
// their own sentinels too (transport.ErrPeerGone, handshake.ErrContractMismatch,
// handshake.ErrUnauthorized, transport.ErrTimeout...).
// errNotLaunched is Serve's error when the binary was run by hand.
var errNotLaunched = fmt.Errorf("%w: this program is a ringwire plugin and must be started by its host "+
	"(or run with RINGWIRE_CONNECT or RINGWIRE_LISTEN set)", ErrConfig)

var (
	// ErrConfig: a Config, Plugin or environment variable is unusable,
	// the plugin binary cannot be read, or Serve found none of the
	// environment a host sets (the binary was run by hand).
	ErrConfig = errors.New("plugin: invalid configuration")
	// ErrUnsupported: the operation needs a facility this system lacks. It
	// also matches errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("plugin: not supported on %s: %w", runtime.GOOS, errors.ErrUnsupported)
	// ErrStartTimeout: the plugin did not start and complete its handshake
	// within Config.StartTimeout.
	ErrStartTimeout = errors.New("plugin: start timed out")
	// ErrExited: the plugin process exited, before its handshake completed
	// or with calls in flight; the error names its exit status or signal.
	// A call's such error also matches ErrPeerGone.
	ErrExited = errors.New("plugin: process exited")
	// ErrPluginRestarted: a call was in flight when its plugin died and the
	// Client restarted it. Such errors also match ErrPeerGone.
	ErrPluginRestarted = errors.New("plugin: restarted")
	// ErrUnavailable: a Client has no running plugin (not started, or given
	// up after MaxRestarts), a call's context ended while it waited for a
	// restart, or (in Status.LastErr) the plugin stopped answering its
	// health pings.
	ErrUnavailable = errors.New("plugin: unavailable")
	// ErrKilled: a graceful stop ran out of budget and the plugin was killed.
	ErrKilled = errors.New("plugin: killed after the stop budget")
	// ErrClosed: use of a Listener, or of a Client after Close or Stop
	// (the same value as ErrClosed; it matches net.ErrClosed).
	ErrClosed = errs.Closed
	// ErrCorrupt: the plugin sent data that breaks the protocol (a record,
	// frame or message that fails validation); the host hung up on it. Such
	// errors also match ErrPeerGone. A plugin that does this is broken or
	// hostile.
	ErrCorrupt = errors.New("plugin: corrupt data from the plugin")
	// ErrContractMismatch: host and plugin do not agree on what the plugin
	// serves (another service, a version the host does not accept, a
	// method missing or with another signature, or unequal contract
	// hashes). It is permanent: a Client does not retry it.
	ErrContractMismatch = handshake.ErrContractMismatch
)

// pluginError is an error about one plugin: it reads
// `plugin "name": what: cause` and matches its sentinels (and what they
// match), so that the sentinel's own text ("plugin: ...") is not repeated
// after the name.
type pluginError struct {
	name      string
	what      string
	sentinels []error
	cause     error
}

func (e *pluginError) Error() string {
	s := fmt.Sprintf("plugin %q: %s", e.name, e.what)
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

func (e *pluginError) Is(target error) bool {
	for _, s := range e.sentinels {
		if errors.Is(s, target) {
			return true
		}
	}
	return false
}

func (e *pluginError) Unwrap() error { return e.cause }

// errorf returns a pluginError about plugin name matching sentinel.
func errorf(name string, sentinel, cause error, format string, args ...any) error {
	return &pluginError{name: name, what: fmt.Sprintf(format, args...), sentinels: []error{sentinel}, cause: cause}
}

// exitedError says how a plugin process ended; it matches ErrExited.
type exitedError struct {
	pid    int
	status string
}

func (e *exitedError) Error() string {
	return fmt.Sprintf("process exited (pid %d, %s)", e.pid, e.status)
}
func (e *exitedError) Is(target error) bool { return target == ErrExited }
