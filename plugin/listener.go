package plugin

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
)

// Listener accepts external plugins: processes started independently whose
// Serve dials the host (RINGWIRE_CONNECT).
type Listener struct {
	tl       *transport.Listener
	cfg      *Config             // with defaults
	base     Config              // as given: each accepted plugin's, named after it
	accepted chan transport.Conn // closed when the accept loop ends
	err      error               // why it ended; read after accepted is closed
	done     chan struct{}
	once     sync.Once
}

// Listen announces on network ("unix" or "tcp") and addr for external
// plugins. cfg describes what the host needs of them and serves them, as
// for Launch: Service (and Versions), Mux, Intercept,
// StopTimeout, Logger. cfg.Transport.Token authenticates the plugins: one
// that does not present it is refused (ErrUnauthorized). It is required on
// Unix sockets, where it joins the peer uid check, and optional on TCP,
// where mutual TLS authenticates (cfg.Transport.TLS must require and verify
// client certificates, as transport.CA.ServerConfig does). ConnectEnv gives
// a plugin the environment that makes it connect here.
func Listen(network, addr string, cfg *Config) (*Listener, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: nil Config", ErrConfig)
	}
	c := cfg.withDefaults()
	if network == "unix" && len(c.Transport.Token) == 0 {
		return nil, fmt.Errorf("%w: a Unix listener needs Config.Transport.Token", ErrConfig)
	}
	tc := c.Transport
	c.declare(&tc)
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
	l := &Listener{tl: tl, cfg: c, base: *cfg, accepted: make(chan transport.Conn), done: make(chan struct{})}
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
		c := l.base
		c.Name = name
		cfg := c.withDefaults()
		if err := cfg.admit(conn.Info()); err != nil {
			cfg.Logger.Warn("ringwire: external plugin refused", "err", err)
			conn.Close()
			return l.Accept(ctx)
		}
		peer := rpc.NewPeer(conn, rpc.Options{Mux: l.cfg.Mux, Logger: cfg.Logger, Intercept: l.cfg.Intercept})
		in := newInstance(cfg, peer, nil, nil)
		cfg.Logger.Info("ringwire: external plugin connected", "version", in.info.Version,
			"transport", in.info.Transport.Kind.String(), "tls", in.info.Transport.TLS)
		cl := newClient(cfg)
		cl.fixed = in
		if err := cl.start(ctx); err != nil {
			in.Kill()
			return nil, err
		}
		return cl, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.done:
		return nil, fmt.Errorf("%w: listener", ErrClosed)
	}
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.tl.Addr() }

// Close stops listening. Plugins already accepted stay connected.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.tl.Close()
	})
	return err
}
