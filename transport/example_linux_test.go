package transport_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/ringwire/ringwire/transport"
)

// Stream code (here a byte echo; gRPC, net/rpc or HTTP the same way) runs
// over shared memory unchanged: Listen and Dial return a net.Listener and a
// net.Conn.
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
		_, _ = io.Copy(c, c)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := transport.Dial(ctx, "unix", addr, &transport.Config{Name: "plugin", Token: []byte("t0ken"), Logger: quiet})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	in, _ := transport.InfoOf(c)
	fmt.Println("transport:", in.Kind, "peer:", in.Peer.Name)
	if _, err := io.WriteString(c, "over shared memory"); err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 18)
	if _, err := io.ReadFull(c, buf); err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(buf))
	// Output:
	// transport: shm peer: host
	// over shared memory
}

// Mutual TLS between hosts without files: an in-memory CA issues the
// listener's and the dialler's certificates; the dialler's travels as one
// PEM bundle.
func ExampleNewCA() {
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
			_, _ = io.Copy(io.Discard, c)
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
	in, _ := transport.InfoOf(c)
	fmt.Println(in.Kind, "tls:", in.TLS, "compression:", in.Compression)
	// Output: tcp tls: true compression: lz4
}
