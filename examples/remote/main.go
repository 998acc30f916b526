// Command remote runs the echo plugin as a remote service: the plugin process
// listens on TCP (loopback here; another host in production) with a server
// certificate, and the host dials it with mutual TLS. An in-memory CA mints
// both certificates; nothing is written to disk. The binary is its own
// plugin.
//
//	go run ./examples/remote
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/ringwire/ringwire/internal/transport"
	"github.com/ringwire/ringwire/plugin"
)

func echoPlugin() *plugin.Plugin {
	mux := plugin.NewMux()
	mux.Handle("echo.Echo", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	return &plugin.Plugin{Name: "echo", Version: "1.0.0", Description: "echoes what it is sent", Mux: mux}
}

func main() {
	if plugin.Launched() {
		plugin.Main(echoPlugin())
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "remote:", err)
		os.Exit(1)
	}
}

func run() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ca, err := transport.NewCA("example host")
	if err != nil {
		return err
	}
	serverBundle, err := ca.ServerBundle("echo", "127.0.0.1")
	if err != nil {
		return err
	}
	clientTLS, err := ca.ClientConfig("host", "127.0.0.1")
	if err != nil {
		return err
	}

	// Start the plugin as a server. In production it runs on its own host
	// (under systemd, in a container...), started with the same variables.
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), plugin.ListenEnv("tcp", "127.0.0.1:0", nil, serverBundle)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	addr, err := listeningAddr(out, 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Println("plugin listening on", addr)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := &plugin.Config{
		Name:      "echo",
		Transport: transport.Config{TLS: clientTLS},
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	client, err := plugin.Connect(ctx, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer client.Close()
	t := client.Info().Transport
	fmt.Printf("connected to %s %s over %s, tls %v, compression %s\n", client.Info().Name, client.Info().Version, t.Kind, t.TLS, t.Compression)

	payload := bytes.Repeat([]byte(`{"key":"value","n":12345},`), 2600) // ~64 KiB of JSON-like text
	const n = 200
	start := time.Now()
	for i := range n {
		got, err := client.Call(ctx, "echo.Echo", payload)
		if err != nil {
			return fmt.Errorf("call %d: %w", i, err)
		}
		if !bytes.Equal(got, payload) {
			return errors.New("echo differs")
		}
	}
	d := time.Since(start)
	s := client.Stats()
	fmt.Printf("%d echoes of %d KiB: %v each; %d payload bytes sent as %d on the wire (%.1fx smaller)\n",
		n, len(payload)>>10, d/n, s.BytesSent, s.WireBytesSent, float64(s.BytesSent)/float64(max(s.WireBytesSent, 1)))

	// A host with a certificate from another CA is refused.
	other, _ := transport.NewCA("someone else")
	otherTLS, _ := other.ClientConfig("intruder", "127.0.0.1")
	bad := *cfg
	bad.Transport.TLS = otherTLS
	if _, err := plugin.Connect(ctx, "tcp", addr, &bad); err != nil {
		fmt.Println("a host with another CA's certificate is refused:", firstLine(err))
	} else {
		return errors.New("a foreign certificate was accepted")
	}
	return nil
}

// listeningAddr reads the plugin's stdout until its "listening" line.
func listeningAddr(out interface{ Read([]byte) (int, error) }, timeout time.Duration) (string, error) {
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "RINGWIRE_LISTENING" {
				found <- f[2]
				break
			}
		}
		for sc.Scan() { // keep draining so the plugin never blocks on stdout
		}
	}()
	select {
	case a := <-found:
		return a, nil
	case <-time.After(timeout):
		return "", errors.New("the plugin did not report its address")
	}
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
