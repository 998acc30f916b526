package plugin

import (
	"context"
	"fmt"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
)

// Connect dials and supervises (see Client: health pings, reconnections) a
// remote plugin, one whose Serve listens (RINGWIRE_LISTEN),
// at network ("tcp" or "unix") and addr, runs the handshake as the dialler
// and serves cfg.Mux to it. TCP needs cfg.Transport.TLS (mutual TLS: a client
// certificate the plugin's CA trusts, e.g. transport.CA.ClientConfig);
// cfg.Transport.Token is presented as it is. The dial and the handshake are
// bounded by cfg.StartTimeout and ctx. Config's Path, Args, Env and Dir are
// not used.
func Connect(ctx context.Context, network, addr string, cfg *Config) (*Client, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: nil Config", ErrConfig)
	}
	c := cfg.withDefaults()
	c.Network, c.Address = network, addr
	s := newClient(c)
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func connect(ctx context.Context, c *Config) (*instance, error) {
	hctx, cancel := context.WithTimeout(ctx, c.StartTimeout)
	defer cancel()
	conn, err := transport.Dial(hctx, c.Network, c.Address, c.transportConfig(nil))
	if err != nil {
		return nil, fmt.Errorf("plugin %q: connect: %w", c.Name, hint(err))
	}
	if err := c.admit(conn.Info()); err != nil {
		conn.Close()
		return nil, fmt.Errorf("plugin %q: connect: %w", c.Name, err)
	}
	peer := rpc.NewPeer(conn, rpc.Options{Mux: c.Mux, Logger: c.Logger, Intercept: c.Intercept})
	cl := newInstance(c, peer, nil, nil)
	c.Logger.Info("ringwire: connected to remote plugin", "network", c.Network, "addr", c.Address,
		"name", cl.info.Name, "version", cl.info.Version, "transport", cl.info.Transport.Kind.String())
	return cl, nil
}
