package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
)

// ListenConfig configures a host Listener for external plugins.
type ListenConfig struct {
	// Mux is what the host serves every plugin that connects (nil: nothing).
	Mux *rpc.Mux
	// Intercept wraps the host's calls to every accepted plugin.
	Intercept []rpc.ClientInterceptor
	// Service and Versions, or Contract, are what plugins must serve (see
	// Config.Service).
	Service  *rpc.Service
	Versions string
	Contract []byte
	// Token authenticates plugins: one that does not present it is refused
	// (negotiate.ErrUnauthorized). Required on Unix sockets, where it joins
	// the peer uid check; optional on TCP, where mutual TLS (Transport.TLS)
	// authenticates.
	Token []byte
	// Transport holds the base transport options; TCP needs Transport.TLS
	// requiring and verifying client certificates (transport.CA.ServerConfig
	// does). Contract and Token are filled in from the fields above.
	Transport transport.Config
	// StopTimeout is the graceful stop budget of the accepted Clients
	// (default 5s).
	StopTimeout time.Duration
	// Logger receives the runtime's messages (nil: slog.Default()).
	Logger *slog.Logger
}

// Listener accepts external plugins: processes started independently whose
// Serve dials the host (RINGWIRE_CONNECT).
type Listener struct {
	tl       *transport.Listener
	cfg      ListenConfig
	accepted chan transport.Conn // closed when the accept loop ends
	err      error               // why it ended; read after accepted is closed
	done     chan struct{}
	once     sync.Once
}

// Listen announces on network ("unix" or "tcp") and addr for external
// plugins.
func Listen(network, addr string, cfg *ListenConfig) (*Listener, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: nil ListenConfig", ErrConfig)
	}
	c := *cfg
	if (len(c.Contract) == 0) == (c.Service == nil) {
		return nil, fmt.Errorf("%w: ListenConfig needs Service or Contract (one of them)", ErrConfig)
	}
	if network == "unix" && len(c.Token) == 0 {
		return nil, fmt.Errorf("%w: a Unix listener needs ListenConfig.Token", ErrConfig)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = defaultStopTimeout
	}
	tc := c.Transport
	tc.Contract, tc.Token = c.Contract, c.Token
	c.host().declare(&tc)
	if tc.Name == "" {
		tc.Name = "host"
	}
	if tc.Logger == nil {
		tc.Logger = c.Logger
	}
	tl, err := transport.Listen(network, addr, &tc)
	if err != nil {
		return nil, fmt.Errorf("plugin: listen: %w", err)
	}
	l := &Listener{tl: tl, cfg: c, accepted: make(chan transport.Conn), done: make(chan struct{})}
	go l.loop()
	return l, nil
}

func (l *Listener) loop() {
	defer close(l.accepted)
	for {
		conn, err := l.tl.Accept()
		if err != nil {
			l.err = err
			return
		}
		select {
		case l.accepted <- conn:
		case <-l.done:
			conn.Close()
			return
		}
	}
}

// Accept waits for the next plugin whose handshake succeeded (failed ones
// are logged, never returned) and returns its Client. It returns ErrClosed
// after Close, and ctx's error if ctx ends first.
func (l *Listener) Accept(ctx context.Context) (*Client, error) {
	select {
	case conn, ok := <-l.accepted:
		if !ok {
			return nil, fmt.Errorf("%w: listener: %w", ErrClosed, l.err)
		}
		name := conn.Info().Peer.Name
		if name == "" {
			name = "external"
		}
		cfg := l.cfg.host()
		cfg.Name = name
		cfg = cfg.withDefaults()
		if err := cfg.admit(conn.Info()); err != nil {
			cfg.Logger.Warn("ringwire: external plugin refused", "err", err)
			conn.Close()
			return l.Accept(ctx)
		}
		peer := rpc.NewPeer(conn, rpc.Options{Mux: l.cfg.Mux, Logger: cfg.Logger, Intercept: l.cfg.Intercept})
		cl := newClient(cfg, peer, nil, nil)
		cfg.Logger.Info("ringwire: external plugin connected", "version", cl.info.Version,
			"transport", cl.info.Transport.Kind.String(), "tls", cl.info.Transport.TLS)
		return cl, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.done:
		return nil, fmt.Errorf("%w: listener", ErrClosed)
	}
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.tl.Addr() }

// ConnectEnv returns the environment that makes a plugin's Serve connect to
// this Listener with its token; clientBundle (a transport.CA ClientBundle)
// is needed on TCP.
func (l *Listener) ConnectEnv(clientBundle []byte) []string {
	a := l.Addr()
	return ConnectEnv(a.Network(), a.String(), l.cfg.Token, clientBundle)
}

// Close stops listening. Plugins already accepted stay connected.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.tl.Close()
	})
	return err
}

// host is the Config of the Clients the listener accepts.
func (c *ListenConfig) host() *Config {
	return &Config{Service: c.Service, Versions: c.Versions, Contract: c.Contract, Mux: c.Mux, Intercept: c.Intercept,
		StopTimeout: c.StopTimeout, Logger: c.Logger}
}
