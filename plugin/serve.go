package plugin

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/seam"
	"github.com/ringwire/ringwire/internal/transport"
)

// drainTimeout bounds how long a plugin asked to stop (its context ended, or
// SIGTERM) waits for the calls in flight.
const drainTimeout = 5 * time.Second

// mode is how Serve reaches its host.
type mode int

const (
	modeNone     mode = iota
	modeLaunched      // inherited socket (Launch)
	modeConnect       // dial a host Listener
	modeListen        // listen for the host (remote)
)

// serveEnv is what the environment asks Serve to do.
type serveEnv struct {
	mode          mode
	fd            int
	token         []byte
	network, addr string
	bundle        []byte
}

func readEnv() (serveEnv, error) {
	e := serveEnv{token: []byte(os.Getenv(envToken))}
	cookie, fd := os.Getenv(envCookie), os.Getenv(envFD)
	connect, listen := os.Getenv(envConnect), os.Getenv(envListen)
	var err error
	switch {
	case fd != "" || cookie != "":
		if cookie != cookieValue {
			return e, fmt.Errorf("%w: %s=%q, want %q: launched by an incompatible host", ErrConfig, envCookie, cookie, cookieValue)
		}
		e.mode = modeLaunched
		if e.fd, err = strconv.Atoi(fd); err != nil || e.fd < 0 {
			return e, fmt.Errorf("%w: %s=%q is not a descriptor number", ErrConfig, envFD, fd)
		}
	case connect != "" && listen != "":
		return e, fmt.Errorf("%w: both %s and %s are set", ErrConfig, envConnect, envListen)
	case connect != "":
		e.mode = modeConnect
		e.network, e.addr, err = parseAddress(envConnect, connect)
	case listen != "":
		e.mode = modeListen
		e.network, e.addr, err = parseAddress(envListen, listen)
	default:
		return e, errNotLaunched
	}
	if err != nil {
		return e, err
	}
	if e.mode != modeLaunched {
		if e.bundle, err = tlsBundle(); err != nil {
			return e, err
		}
	}
	return e, nil
}

// Serve serves p to the host described by the environment (see the package
// documentation for the modes) and returns when the host goes away; the
// process should exit then. A launched or connected plugin serves one
// connection; a listening (remote) plugin serves every host that connects
// until SIGTERM. SIGTERM (and, when not launched, SIGINT) ends Serve
// gracefully: calls in flight finish first. A launched plugin ignores SIGINT:
// a terminal's Ctrl-C reaches the whole process group, and the host decides
// when its plugins stop.
//
// Serve also stops gracefully when ctx ends. In launched mode it removes the
// launch variables from the process's environment once read, so the
// plugin's own children do not inherit them.
//
// Serve returns nil when the host closed the connection, went away, or a
// signal or ctx asked the plugin to stop; an error when it could not reach
// or authenticate to its host, and one matching ErrConfig when the binary
// was run by hand.
func Serve(ctx context.Context, p *Plugin) error {
	sigs := []os.Signal{syscall.SIGTERM}
	if os.Getenv(envFD) != "" || os.Getenv(envCookie) != "" {
		signal.Ignore(os.Interrupt)
	} else {
		sigs = append(sigs, os.Interrupt)
	}
	ctx, stop := signal.NotifyContext(ctx, sigs...)
	defer stop()
	return serve(ctx, p)
}

// Main serves p (Serve) and exits the process: with status 0 when the host
// went away or asked the plugin to stop, or with status 1 and the error on
// stderr otherwise (for instance when the binary is run by hand). It is the
// whole body of a typical plugin's main function.
func Main(p *Plugin) {
	if err := Serve(context.Background(), p); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", filepath.Base(os.Args[0]), err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serve is Serve without its signal handling.
func serve(ctx context.Context, p *Plugin) error {
	if err := p.check(); err != nil {
		return err
	}
	e, err := readEnv()
	if err != nil {
		return err
	}
	cfg := p.transportConfig(e.token)
	log := p.logger()
	switch e.mode {
	case modeLaunched:
		if p.Logger == nil {
			// The host reads our stderr: send it records, not text.
			q := *p
			q.Logger = slog.New(LogHandler(os.Stderr, nil))
			slog.SetDefault(q.Logger)
			p, log = &q, q.Logger
			cfg.Logger = log
		}
		for _, n := range []string{envCookie, envFD, envToken, envLogLevel} {
			os.Unsetenv(n)
		}
		nc, err := inheritedConn(e.fd)
		if err != nil {
			return err
		}
		conn, err := transport.Client(ctx, nc, cfg)
		if err != nil {
			return fmt.Errorf("plugin: handshake with the host: %w", hint(err))
		}
		return servePeer(ctx, p, conn)
	case modeConnect:
		if e.network != "unix" && !plaintext(cfg, e.bundle) {
			if cfg.TLS, err = clientTLS(e.bundle); err != nil {
				return err
			}
		}
		conn, err := transport.Dial(ctx, e.network, e.addr, cfg)
		if err != nil {
			return fmt.Errorf("plugin: connecting to the host at %s:%s: %w", e.network, e.addr, hint(err))
		}
		log.Info("ringwire: plugin connected to its host", "network", e.network, "addr", e.addr)
		return servePeer(ctx, p, conn)
	default: // modeListen
		if e.network != "unix" && !plaintext(cfg, e.bundle) {
			if len(e.bundle) == 0 {
				return fmt.Errorf("%w: %s on TCP needs %s (a server bundle for mutual TLS)", ErrConfig, envListen, envTLSBundle)
			}
			if cfg.TLS, err = transport.ServerConfigFromBundle(e.bundle); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrConfig, envTLSBundle, err)
			}
		}
		return serveListener(ctx, p, e.network, e.addr, cfg)
	}
}

// plaintext reports whether a TCP connection keeps the TLS config the
// plugin set itself (or none, with InsecurePlaintextTCP): no bundle is
// given, and Plugin.Transport says how to go on without one.
func plaintext(cfg *transport.Config, bundle []byte) bool {
	return len(bundle) == 0 && (cfg.TLS != nil || cfg.InsecurePlaintextTCP)
}

func clientTLS(bundle []byte) (*tls.Config, error) {
	if len(bundle) == 0 {
		return nil, fmt.Errorf("%w: %s on TCP needs %s (a client bundle for mutual TLS)", ErrConfig, envConnect, envTLSBundle)
	}
	tc, err := transport.ClientConfigFromBundle(bundle)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, envTLSBundle, err)
	}
	return tc, nil
}

// servePeer serves one host connection until it ends or ctx does. A host
// whose declared needs the plugin does not meet is refused (the host,
// which reaches the same verdict, closes its end too).
func servePeer(ctx context.Context, p *Plugin, conn transport.Conn) error {
	if err := p.admit(conn.Info()); err != nil {
		conn.Close()
		return err
	}
	peer := rpc.NewPeer(conn, rpc.Options{Mux: p.mux(), Logger: p.logger(), Intercept: p.Intercept})
	if seam.PluginConn != nil {
		seam.PluginConn(conn)
	}
	select {
	case <-peer.Done():
	case <-ctx.Done():
		drain(peer)
	}
	return nil
}

// drain shuts a connection down gracefully, bounded by drainTimeout.
func drain(peer *rpc.Peer) {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	_ = peer.Shutdown(ctx)
}

// serveListener serves every host that connects to network/addr until ctx
// ends.
func serveListener(ctx context.Context, p *Plugin, network, addr string, cfg *transport.Config) error {
	l, err := transport.Listen(network, addr, cfg)
	if err != nil {
		return fmt.Errorf("plugin: %w", err)
	}
	log := p.logger()
	fmt.Fprintf(os.Stdout, "%s %s %s\n", listeningPrefix, network, l.Addr())
	log.Info("ringwire: plugin listening", "network", network, "addr", l.Addr().String())

	var (
		mu    sync.Mutex
		peers = map[*rpc.Peer]struct{}{}
		wg    sync.WaitGroup
	)
	accepted := make(chan error, 1)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				accepted <- err
				return
			}
			if err := p.admit(conn.Info()); err != nil {
				log.Warn("ringwire: host refused", "err", err)
				conn.Close()
				continue
			}
			peer := rpc.NewPeer(conn, rpc.Options{Mux: p.mux(), Logger: log, Intercept: p.Intercept})
			mu.Lock()
			peers[peer] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-peer.Done()
				mu.Lock()
				delete(peers, peer)
				mu.Unlock()
			}()
		}
	}()
	var result error
	select {
	case <-ctx.Done():
		l.Close()
		<-accepted // the accept loop has ended: no peer is added from now on
	case err := <-accepted:
		l.Close()
		result = fmt.Errorf("plugin: listener failed: %w", err)
	}
	mu.Lock()
	for peer := range peers {
		go drain(peer)
	}
	mu.Unlock()
	wg.Wait()
	return result
}
