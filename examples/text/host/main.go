// Command host launches the text plugin binary and calls it through the
// typed methods of the shared api package:
//
//	go build -o /tmp/text-plugin ./examples/text/plugin
//	go run ./examples/text/host -plugin /tmp/text-plugin
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ringwire/ringwire/examples/text/api"
	"github.com/ringwire/ringwire/plugin"
)

func main() {
	path := flag.String("plugin", "./text-plugin", "the plugin binary (go build ./examples/text/plugin)")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err := run(*path); err != nil {
		fmt.Fprintln(os.Stderr, "host:", err)
		os.Exit(1)
	}
}

// guide:begin host
func run(path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := plugin.Launch(ctx, &plugin.Config{
		Name:    "text",
		Path:    path,
		Service: api.Service, // any text plugin 1.x that serves these methods
	})
	if err != nil {
		return err
	}
	defer client.Stop(context.Background())

	in := client.Info()
	fmt.Printf("plugin %s %s over %v, serving %d methods\n", in.Service, in.ServiceVersion, in.Transport.Kind, len(in.Methods))

	up, err := api.Upper.Call(ctx, client, []byte("hello, world"))
	if err != nil {
		return err
	}
	fmt.Printf("Upper: %s\n", up)

	g, err := api.Greet.Call(ctx, client, api.Greeting{Name: "Ada"})
	if err != nil {
		return err
	}
	fmt.Printf("Greet: %s\n", g.Message)

	n, err := api.Words.Call(ctx, client, []byte("the quick brown fox"))
	if err != nil {
		return err
	}
	fmt.Printf("Words: %d\n", n)

	_, err = api.Greet.Call(ctx, client, api.Greeting{})
	var perr *plugin.Error
	if errors.As(err, &perr) && perr.Code == plugin.CodeInvalidArgument {
		fmt.Printf("Greet without a name: %v\n", err)
	}

	// The zero-allocation form: the reply lands in a reused buffer.
	buf := make([]byte, 0, 64)
	up, buf, err = api.Upper.CallInto(ctx, client, []byte("again"), buf[:0])
	if err != nil {
		return err
	}
	fmt.Printf("Upper into a reused buffer: %s\n", up)
	return nil
}

// guide:end host
