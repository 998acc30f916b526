package plugin

import (
	"maps"
	"slices"
	"strings"

	"github.com/ringwire/ringwire/internal/transport"
)

// reservedPrefix starts the constant keys the runtime uses for itself; a
// Plugin may not declare such keys, and Info.Constants never shows them.
const reservedPrefix = "ringwire."

// descriptionKey carries Plugin.Description in the handshake's constants.
const descriptionKey = reservedPrefix + "description"

// Info is what a plugin declared about itself in the handshake, read by the
// host without a call.
type Info struct {
	Name, Version, Description string
	// Constants are the plugin's exported constants (without the runtime's
	// reserved keys).
	Constants map[string]string
	// Service and ServiceVersion name the service the plugin declares
	// (Plugin.Service), and Methods lists every method it serves with its
	// signature, as "name(request codec -> reply codec)", in name order;
	// all empty for a plugin that declares no service.
	Service, ServiceVersion string
	Methods                 []string
	// Transport is what the handshake negotiated (shared memory, Unix or
	// TCP, TLS, compression) and the raw declaration of the peer.
	Transport transport.Info
}

// infoFrom extracts a plugin's Info from a connection's negotiated info.
func infoFrom(t transport.Info) Info {
	in := Info{Name: t.Peer.Name, Version: t.Peer.Version, Transport: t, Constants: map[string]string{}}
	for k, v := range t.Peer.Constants {
		switch {
		case k == descriptionKey:
			in.Description = v
		case strings.HasPrefix(k, reservedPrefix):
		default:
			in.Constants[k] = v
		}
	}
	if d, ok, err := readDeclaration(t.Peer.Constants, servesKey); ok && err == nil {
		in.Service, in.ServiceVersion = d.name, d.version
		for _, m := range d.methods {
			in.Methods = append(in.Methods, m.String())
		}
		slices.Sort(in.Methods)
	}
	return in
}

// constants is what a plugin declares in its handshake: its constants plus
// the reserved description key.
func (p *Plugin) constants() map[string]string {
	c := maps.Clone(p.Constants)
	if p.Description != "" {
		if c == nil {
			c = map[string]string{}
		}
		c[descriptionKey] = p.Description
	}
	return c
}
