package plugin

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
)

// Plugin describes what a plugin binary serves. Pass it to Serve.
type Plugin struct {
	// Name, Version and Description describe the plugin to its host, which
	// reads them from Client.Info without a call.
	Name, Version, Description string
	// Constants are exported metadata, also read from Client.Info. Keys
	// starting with reservedPrefix are refused.
	Constants map[string]string
	// Mux is what the plugin serves (nil: nothing); Mux.Intercept wraps
	// the calls it serves.
	Mux *rpc.Mux
	// Intercept wraps the plugin's calls to its host (callbacks).
	Intercept []rpc.ClientInterceptor
	// Service, if set, is the service the plugin implements: Serve checks
	// that Mux serves every one of its methods, and declares the service
	// and all the methods of Mux in the handshake, so that hosts built
	// against this version of the service or an older one with the same
	// major version accept it (see Config.Service). Without it the plugin
	// declares no service, and only hosts that need none accept it.
	Service *rpc.Service
	// Logger receives the plugin runtime's messages (nil: slog.Default()).
	// In a launched plugin, whatever it writes to stdout or stderr ends up in
	// the host's log.
	Logger *slog.Logger
	// Transport holds the plugin side's base transport options: the
	// compressions it accepts, ring waiting (Ring), MaxMessage,
	// InsecurePlaintextTCP for a plaintext TCP host, a TLS config of its
	// own. Serve fills in Name, Version, Constants, Contract, Token and
	// Logger from the fields above and the environment, and TLS from
	// RINGWIRE_TLS_BUNDLE when that is set.
	Transport transport.Config

	empty *rpc.Mux // served when Mux is nil
}

func (p *Plugin) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

func (p *Plugin) mux() *rpc.Mux {
	if p.Mux != nil {
		return p.Mux
	}
	if p.empty == nil {
		p.empty = rpc.NewMux()
	}
	return p.empty
}

// check validates what the plugin declares.
func (p *Plugin) check() error {
	if p == nil {
		return fmt.Errorf("%w: nil Plugin", ErrConfig)
	}
	for k := range p.Constants {
		if strings.HasPrefix(k, reservedPrefix) {
			return fmt.Errorf("%w: constant %q: keys starting with %q are reserved", ErrConfig, k, reservedPrefix)
		}
	}
	if len(p.Description) > handshake.MaxConstantValue {
		return fmt.Errorf("%w: description of %d bytes (at most %d)", ErrConfig, len(p.Description), handshake.MaxConstantValue)
	}
	if p.Service != nil {
		if err := rpc.CheckServed(p.Service, p.mux()); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	return nil
}

// transportConfig is the plugin's side of a handshake.
func (p *Plugin) transportConfig(token []byte) *transport.Config {
	c := p.Transport
	c.Name, c.Version, c.Constants = p.Name, p.Version, p.constants()
	c.Contract, c.Token, c.Logger = serviceContract, token, p.logger()
	if p.Service != nil {
		if c.Constants == nil {
			c.Constants = map[string]string{}
		}
		c.Constants[serviceKey] = p.Service.Name() + " " + p.Service.Version()
		putTable(c.Constants, servesKey, rpc.InfosOf(p.mux()))
	}
	return &c
}
