package transport_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/ringwire/ringwire/transport"
)

// The public API's errors are the ones its connections return.
func TestDialErrors(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	addr := fmt.Sprintf("@ringwire-transport-test-%d", os.Getpid())
	l, err := transport.Listen("unix", addr, &transport.Config{Token: []byte("right"), Contract: []byte("v1"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		cfg  *transport.Config
		want error
	}{
		{"wrong token", &transport.Config{Token: []byte("wrong"), Contract: []byte("v1"), Logger: quiet}, transport.ErrUnauthorized},
		{"other contract", &transport.Config{Token: []byte("right"), Contract: []byte("v2"), Logger: quiet}, transport.ErrContractMismatch},
		{"bad ring size", &transport.Config{Token: []byte("right"), RingSize: 3, Logger: quiet}, transport.ErrConfig},
		{"tcp without tls", &transport.Config{}, transport.ErrConfig},
	} {
		network, a := "unix", addr
		if tc.name == "tcp without tls" {
			network, a = "tcp", "127.0.0.1:1"
		}
		c, err := transport.Dial(ctx, network, a, tc.cfg)
		if !errors.Is(err, tc.want) {
			if c != nil {
				c.Close()
			}
			t.Errorf("%s: Dial = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// InfoOf knows only the connections Dial and Listen made.
func TestInfoOf(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, ok := transport.InfoOf(a); ok {
		t.Fatal("InfoOf(net.Pipe) reported ok")
	}
	quiet := slog.New(slog.DiscardHandler)
	addr := fmt.Sprintf("@ringwire-transport-info-%d", os.Getpid())
	l, err := transport.Listen("unix", addr, &transport.Config{Name: "listener", Mode: transport.ModeFramed, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan transport.Info, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		in, _ := transport.InfoOf(c)
		accepted <- in
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := transport.Dial(ctx, "unix", addr, &transport.Config{Name: "dialler", Version: "1.2", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in, ok := transport.InfoOf(c)
	if !ok || in.Kind != transport.KindUnix || in.Peer.Name != "listener" || in.Peer.PID != os.Getpid() {
		t.Fatalf("dialler's InfoOf = %+v, %v; want a framed Unix connection to this process's listener", in, ok)
	}
	select {
	case in := <-accepted:
		if in.Kind != transport.KindUnix || in.Peer.Name != "dialler" || in.Peer.Version != "1.2" {
			t.Fatalf("listener's InfoOf = %+v", in)
		}
	case <-ctx.Done():
		t.Fatal("no connection accepted")
	}
}
