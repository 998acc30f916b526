// Command plugin is the text service's plugin binary: build it, and a host
// launches it (see ../host). Run by hand it says so and exits.
package main

import (
	"bytes"
	"context"
	"log/slog"

	"github.com/ringwire/ringwire/examples/text/api"
	"github.com/ringwire/ringwire/plugin"
)

// guide:begin plugin
func main() {
	mux := plugin.NewMux()
	api.Upper.Handle(mux, func(ctx context.Context, s []byte) ([]byte, error) {
		return bytes.ToUpper(s), nil
	})
	api.Greet.Handle(mux, func(ctx context.Context, g api.Greeting) (api.Greeting, error) {
		if g.Name == "" {
			return api.Greeting{}, plugin.Errorf(plugin.CodeInvalidArgument, "greet: no name given")
		}
		slog.Info("greeting", "name", g.Name) // reaches the host's logger at level INFO
		return api.Greeting{Name: g.Name, Message: "hello, " + g.Name}, nil
	})
	api.Words.Handle(mux, func(ctx context.Context, s []byte) (int, error) {
		return len(bytes.Fields(s)), nil
	})
	plugin.Main(&plugin.Plugin{
		Name:    "text",
		Version: "1.1.0",
		Service: api.Service, // Main refuses to start if mux lacks one of its methods
		Mux:     mux,
	})
}

// guide:end plugin
