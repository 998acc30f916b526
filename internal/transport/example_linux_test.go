package transport_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/ringwire/ringwire/internal/transport"
)

// A listener and a dialler on one Linux host agree on shared memory; the
// Conn carries whole messages.
func Example() {
	quiet := slog.New(slog.DiscardHandler)
	addr := fmt.Sprintf("@ringwire-example-%d", os.Getpid()) // abstract Unix socket
	l, err := transport.Listen("unix", addr, &transport.Config{Name: "host", Token: []byte("t0ken"), Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		m, err := c.Recv()
		if err != nil {
			return
		}
		_ = c.Send(m.Type, append([]byte("echo: "), m.Data...))
		c.Release()
		_, _ = c.Recv() // until the dialler hangs up
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := transport.Dial(ctx, "unix", addr, &transport.Config{Name: "plugin", Token: []byte("t0ken"), Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println("transport:", c.Info().Kind, "peer:", c.Info().Peer.Name)
	if err := c.Send(1, []byte("hello")); err != nil {
		log.Fatal(err)
	}
	m, err := c.Recv()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d %s\n", m.Type, m.Data)
	c.Release()
	// Output:
	// transport: shm peer: host
	// 1 echo: hello
}

// Mutual TLS without files: an in-memory CA issues the listener's and the
// dialler's certificates; the dialler's travels as one PEM bundle.
func ExampleCA() {
	quiet := slog.New(slog.DiscardHandler)
	ca, err := transport.NewCA("my host")
	if err != nil {
		log.Fatal(err)
	}
	server, err := ca.ServerConfig("host", "127.0.0.1")
	if err != nil {
		log.Fatal(err)
	}
	l, err := transport.Listen("tcp", "127.0.0.1:0", &transport.Config{TLS: server, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			_, _ = c.Recv()
			c.Close()
		}
	}()

	bundle, err := ca.ClientBundle("plugin", "127.0.0.1") // e.g. handed over in the environment
	if err != nil {
		log.Fatal(err)
	}
	client, err := transport.ClientConfigFromBundle(bundle)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := transport.Dial(ctx, "tcp", l.Addr().String(), &transport.Config{TLS: client, Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	in := c.Info()
	fmt.Println(in.Kind, "tls:", in.TLS, "compression:", in.Compression)
	// Output: tcp tls: true compression: lz4
}

// NetConn turns any Conn into a net.Conn, so stream protocols (net/rpc,
// gRPC, HTTP) run over shared memory unchanged.
func ExampleNetConn() {
	quiet := slog.New(slog.DiscardHandler)
	addr := fmt.Sprintf("@ringwire-example-netconn-%d", os.Getpid())
	l, err := transport.Listen("unix", addr, &transport.Config{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	nl := transport.NetListener(l)
	defer nl.Close()
	go func() {
		nc, err := nl.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		_, _ = io.Copy(nc, nc) // a byte-stream echo
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := transport.Dial(ctx, "unix", addr, &transport.Config{Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	nc := transport.NetConn(c)
	defer nc.Close()
	if _, err := io.WriteString(nc, "over shared memory"); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 18)
	if _, err := io.ReadFull(nc, buf); err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(buf))
	// Output: over shared memory
}
