package plugin

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
)

// Defaults of Config.
const (
	defaultStartTimeout   = 10 * time.Second
	defaultHealthInterval = time.Second
	defaultHealthTimeout  = 500 * time.Millisecond
	defaultHealthFailures = 2
	defaultMaxRestarts    = 5
	defaultBackoff        = 100 * time.Millisecond
	defaultMaxBackoff     = 10 * time.Second
	defaultStopTimeout    = 5 * time.Second
)

// Config describes a plugin to the host: how to start it (or reach it), what
// the host serves it, and how its Client supervises it. Launch, Connect,
// Listen and Registry.Add keep a copy; zero durations and counts select the
// defaults.
type Config struct {
	// Name labels the plugin in logs, statuses and the Registry.
	Name string

	// Path is the plugin binary; Args are its arguments (without the
	// program name); Env is its environment (nil: this process's); Dir is
	// its working directory. The runtime adds the launch variables to Env
	// (and removes inherited ones).
	Path string
	Args []string
	// SHA256, if set, is the SHA-256 the binary at Path must have: Launch
	// checks it before starting the process (on Linux it then starts the
	// very file it checked) and fails with ErrUnauthorized otherwise (ErrConfig
	// if it cannot read it).
	SHA256 []byte
	Env    []string
	Dir    string

	// Network and Address, when Address is set, make the plugin remote (as
	// Connect does): a Registry's Client dials it (reconnecting with
	// backoff) instead of launching Path. Network defaults to "tcp".
	Network, Address string

	// Mux is what the host serves the plugin: the methods its handlers may
	// call back (CallerOf inside a handler). nil: nothing.
	Mux *rpc.Mux
	// Intercept wraps every call the host makes to the plugin (metrics,
	// tracing, auth: see ClientInterceptor); Mux.Intercept wraps
	// the calls it serves.
	Intercept []rpc.ClientInterceptor

	// Service is the service the host calls (the api package's
	// Service). The host then works with any plugin of that
	// service, at a version Versions accepts, that serves every method of
	// Service with the same signature, whatever else it serves; anything
	// else fails with ErrContractMismatch naming what differs. Without
	// Service the host needs nothing of the plugin's methods (a call to a
	// method it lacks fails with ErrUnknownMethod).
	Service *rpc.Service
	// Versions are the plugin versions of Service the host accepts:
	// comparisons such as ">=1.2.0 <2" (all must hold). Empty: the major
	// version of Service.
	Versions string

	// Transport holds the base transport options (Mode, RingSize, Ring,
	// MaxMessage, TLS for Connect...). Launch fills in Token and Contract;
	// Name defaults to "host". Connect sends Transport.Token as it is.
	Transport transport.Config

	// StartTimeout bounds starting the process and completing the
	// handshake (default 10s).
	StartTimeout time.Duration

	// HealthInterval is how often a Client pings the plugin, and
	// HealthTimeout how long each ping may take (defaults 1s and 500ms).
	// After HealthFailures failed pings in a row (default 2; the first
	// marks the plugin Unhealthy) the Client restarts it. A negative
	// HealthInterval turns health pings off.
	HealthInterval, HealthTimeout time.Duration
	HealthFailures                int

	// MaxRestarts bounds the restarts after consecutive failures (default
	// 5; negative: never restart). A run that stayed up for longer than
	// MaxBackoff resets the count and the backoff.
	MaxRestarts int

	// Backoff is the delay before the first restart; each further
	// consecutive restart doubles it, up to MaxBackoff (defaults 100ms and
	// 10s).
	Backoff, MaxBackoff time.Duration

	// StopTimeout is the graceful stop budget (default 5s): a stop sends
	// goaway and waits for the calls in flight and the process's exit up to
	// it; then the process gets SIGTERM and, after a short grace, SIGKILL.
	// It is always reaped.
	StopTimeout time.Duration

	// Logger receives the plugin's output (stdout and stderr, line by line)
	// and the runtime's messages, tagged plugin=<Name> (nil: slog.Default()).
	Logger *slog.Logger

	defaulted bool // withDefaults made this copy
}

// withDefaults returns a copy of c with the defaults filled in.
func (c *Config) withDefaults() *Config {
	o := *c
	if o.defaulted {
		return &o
	}
	o.defaulted = true
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.StartTimeout, defaultStartTimeout)
	def(&o.HealthInterval, defaultHealthInterval)
	def(&o.HealthTimeout, defaultHealthTimeout)
	def(&o.Backoff, defaultBackoff)
	def(&o.MaxBackoff, defaultMaxBackoff)
	def(&o.StopTimeout, defaultStopTimeout)
	if o.MaxBackoff < o.Backoff {
		o.MaxBackoff = o.Backoff
	}
	if o.HealthFailures <= 0 {
		o.HealthFailures = defaultHealthFailures
	}
	if o.MaxRestarts == 0 {
		o.MaxRestarts = defaultMaxRestarts
	}
	if o.Network == "" {
		o.Network = "tcp"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Name == "" {
		o.Name = o.Path
	}
	o.Logger = o.Logger.With("plugin", o.Name)
	return &o
}

// check validates a Config with its defaults.
func (c *Config) check() error {
	switch {
	case c.Address == "" && c.Path == "":
		return fmt.Errorf("%w: plugin %q: neither Path (launch) nor Address (remote) is set", ErrConfig, c.Name)
	case c.StartTimeout < 0, c.HealthTimeout < 0, c.Backoff < 0, c.StopTimeout < 0:
		return fmt.Errorf("%w: plugin %q: negative timeout or backoff", ErrConfig, c.Name)
	}
	return nil
}

// transportConfig is the host's side of a handshake with token.
func (c *Config) transportConfig(token []byte) *transport.Config {
	t := c.Transport
	c.declare(&t)
	if token != nil {
		t.Token = token
	}
	if t.Name == "" {
		t.Name = "host"
	}
	if t.Logger == nil {
		t.Logger = c.Logger
	}
	if t.HandshakeTimeout == 0 {
		// The start timeout bounds the handshake; the transport's shorter
		// default would fail plugins that take a while to initialise.
		t.HandshakeTimeout = c.StartTimeout
	}
	return &t
}

// backoff is the delay before the n-th consecutive restart (n >= 1).
func (c *Config) backoff(n int) time.Duration {
	d := c.Backoff
	for i := 1; i < n && d < c.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, c.MaxBackoff)
}
