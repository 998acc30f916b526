package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// Dial connects to a Listener at address ("unix" or "tcp"; "tcp4", "tcp6"
// too) and runs the handshake. Over a Unix socket it uses shared memory when
// both sides can, framed messages otherwise; over TCP, framed messages inside
// TLS (cfg.TLS; ServerName defaults to the address's host).
func Dial(ctx context.Context, network, address string, cfg *Config) (Conn, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	tcp := isTCP(network)
	if !tcp && network != "unix" {
		return nil, fmt.Errorf("%w: network %q (want unix or tcp)", ErrConfig, network)
	}
	if tcp && cfg.TLS == nil && !cfg.InsecurePlaintextTCP {
		return nil, fmt.Errorf("%w: TCP needs TLS (Config.TLS) or the explicit InsecurePlaintextTCP", ErrConfig)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s %s: %w", network, address, err)
	}
	if tcp && cfg.TLS != nil {
		tc := cfg.TLS.Clone()
		if tc.ServerName == "" {
			if host, _, err := net.SplitHostPort(address); err == nil {
				tc.ServerName = host
			}
		}
		nc = tls.Client(nc, tc)
	}
	return Client(ctx, nc, cfg)
}

func isTCP(network string) bool {
	return network == "tcp" || network == "tcp4" || network == "tcp6"
}

// Listener accepts connections and runs each handshake in its own goroutine,
// so a slow or silent peer does not hold up others. Failed handshakes are
// logged (cfg.Logger) and never returned by Accept. Peers that have not yet
// authenticated get a small budget (a first-byte deadline, an
// authentication deadline, bounds per source and in total; see admit.go and
// docs/transport.md) that a flood of them cannot turn against an honest
// client: accepting never stops, and a newcomer displaces the oldest
// stranger instead.
type Listener struct {
	nl   net.Listener
	cfg  *Config
	ctx  context.Context
	stop context.CancelFunc
	out  chan Conn
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
	err  error // why the accept loop ended (under mu)
	mu   sync.Mutex
	// adm bounds the handshakes in progress (admit.go).
	adm admission
	// strangers rate-limits the log of unauthenticated handshakes that failed.
	strangers strangerLog
}

// Listen announces on a "unix" or "tcp" address. TCP requires cfg.TLS with
// client certificates required and verified (mutual TLS), unless
// cfg.InsecurePlaintextTCP is set. A Unix socket file is made 0600 (owner
// only) unless cfg.AllowUIDs lets other users in, whose access to the file
// is then the caller's to grant. The Listener keeps a copy of cfg.
func Listen(network, address string, cfg *Config) (*Listener, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	tcp := isTCP(network)
	if !tcp && network != "unix" {
		return nil, fmt.Errorf("%w: network %q (want unix or tcp)", ErrConfig, network)
	}
	if tcp {
		switch {
		case cfg.TLS == nil && !cfg.InsecurePlaintextTCP:
			return nil, fmt.Errorf("%w: TCP needs TLS (Config.TLS) or the explicit InsecurePlaintextTCP", ErrConfig)
		case cfg.TLS != nil && cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert:
			return nil, fmt.Errorf("%w: TLS listener must require and verify client certificates (mutual TLS)", ErrConfig)
		}
	}
	nl, err := net.Listen(network, address)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s %s: %w", network, address, err)
	}
	if !tcp && len(cfg.AllowUIDs) == 0 && !strings.HasPrefix(address, "@") {
		// Only our uid may connect anyway: the socket file says so too, so
		// that other users cannot even reach the handshake.
		if err := os.Chmod(address, 0o600); err != nil {
			nl.Close()
			return nil, fmt.Errorf("transport: listen %s %s: %w", network, address, err)
		}
	}
	if tcp && cfg.TLS != nil {
		nl = tls.NewListener(nl, cfg.TLS)
	}
	return serve(nl, cfg), nil
}

// NewListener runs the handshake on connections accepted from nl, which the
// Listener owns. Use it for listeners made elsewhere (systemd sockets, an
// inherited descriptor); TLS, if wanted, must already wrap nl.
func NewListener(nl net.Listener, cfg *Config) (*Listener, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return serve(nl, cfg), nil
}

func serve(nl net.Listener, cfg *Config) *Listener {
	ctx, stop := context.WithCancel(context.Background())
	own := *cfg // later changes to the caller's Config do not reach running handshakes
	l := &Listener{nl: nl, cfg: &own, ctx: ctx, stop: stop, out: make(chan Conn), done: make(chan struct{})}
	l.wg.Add(1)
	go l.loop()
	return l
}

func (l *Listener) loop() {
	defer l.wg.Done()
	// Handshake goroutines, displaced ones included until they notice:
	// twice the admission bounds.
	sem := make(chan struct{}, 2*(listenMaxSilent+listenMaxPending))
	var backoff time.Duration
	for {
		select {
		case sem <- struct{}{}:
		case <-l.done:
			return
		}
		nc, err := l.nl.Accept()
		if err != nil {
			<-sem
			if !errors.Is(err, net.ErrClosed) {
				// Out of descriptors and the like: back off and retry, as
				// net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.cfg.logger().Warn("ringwire: accept failed; retrying", "err", err, "in", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-l.done:
					return
				}
			}
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			l.shut()
			return
		}
		backoff = 0
		key := sourceKey(nc)
		p := l.adm.admit(nc, key)
		if p == nil {
			nc.Close() // cannot happen: the silent pool holds strangers only
			<-sem
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer func() { <-sem }()
			defer l.adm.release(p)
			l.handshake(p)
		}()
	}
}

// handshake runs the server side of p's handshake within the budget of a
// stranger until it authenticates, and hands the connection to Accept.
func (l *Listener) handshake(p *pendingConn) {
	nc := p.nc
	limit := min(listenFirstByte, l.cfg.handshakeTimeout())
	if !refusedAtOnce(nc, l.cfg) {
		if err := awaitFirstByte(socketOf(nc), limit); err != nil {
			if frameIsTimeout(err) {
				err = fmt.Errorf("%w: handshake: nothing received within %v", ErrTimeout, limit)
			} else {
				err = fmt.Errorf("%w: the peer hung up before its handshake: %w", ErrPeerGone, err)
			}
			l.strangers.failed(l.cfg.logger(), nc.RemoteAddr(), err)
			nc.Close()
			return
		}
	}
	if !l.adm.talk(p) {
		l.cfg.logger().Warn("ringwire: handshakes from this source fill the listener's budget and have authenticated; connection closed",
			"remote", addrString(nc.RemoteAddr()), "source", p.key)
		nc.Close()
		return
	}
	// Not authenticated in time: closed, which ends the handshake.
	t := time.AfterFunc(min(listenAuthTimeout, l.cfg.handshakeTimeout())-time.Since(p.started), func() {
		if !l.adm.isAuthed(p) {
			nc.Close()
		}
	})
	defer t.Stop()
	ctx := withAuthenticated(l.ctx, func() { l.adm.authenticated(p) })
	c, err := Server(ctx, nc, l.cfg)
	if err != nil {
		if !l.adm.isAuthed(p) {
			l.strangers.failed(l.cfg.logger(), nc.RemoteAddr(), err)
		} // else Server logged it
		return
	}
	select {
	case l.out <- c:
	case <-l.done:
		c.Close()
	}
}

// Accept returns the next connection whose handshake succeeded.
func (l *Listener) Accept() (Conn, error) {
	select {
	case c := <-l.out:
		return c, nil
	case <-l.done:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil && !errors.Is(l.err, net.ErrClosed) {
		return nil, fmt.Errorf("%w: %w", ErrClosed, l.err)
	}
	return nil, fmt.Errorf("transport: listener: %w (%w)", ErrClosed, net.ErrClosed)
}

// Close stops listening, abandons handshakes in progress and waits for its
// goroutines. Connections already accepted stay open.
func (l *Listener) Close() error {
	l.shut()
	err := l.nl.Close()
	l.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// shut ends Accept and the handshakes in progress.
func (l *Listener) shut() {
	l.once.Do(func() {
		close(l.done)
		l.stop()
	})
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.nl.Addr() }
