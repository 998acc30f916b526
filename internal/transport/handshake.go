package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/ringwire/ringwire/internal/duplex"
	hs "github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/ring"
)

// maxRingSize bounds the rings a dialler agrees to map.
const maxRingSize = 256 << 20

// Client runs the dialler's side of the handshake on nc and returns the
// negotiated Conn. nc belongs to the Conn from then on (and is closed if the
// handshake fails). A *net.UnixConn may switch to shared memory; a TCP
// connection must be a *tls.Conn unless cfg.InsecurePlaintextTCP is set.
// Refusals return errors matching hs.ErrVersion,
// hs.ErrContractMismatch, hs.ErrUnauthorized or
// hs.ErrRefused; a silent or slow peer, ErrTimeout.
func Client(ctx context.Context, nc net.Conn, cfg *Config) (Conn, error) {
	h, err := begin(ctx, nc, cfg)
	if err != nil {
		return nil, err
	}
	c, err := h.client()
	return h.finish(c, err)
}

// Server runs the accepting side of the handshake on nc: it authenticates the
// peer, chooses the transport and, for shared memory, creates the rings. It
// returns errors like Client's, after telling the peer why it was refused.
func Server(ctx context.Context, nc net.Conn, cfg *Config) (Conn, error) {
	h, err := begin(ctx, nc, cfg)
	if err != nil {
		return nil, err
	}
	c, err := h.server()
	return h.finish(c, err)
}

// handshake is one side's state while negotiating.
type handshake struct {
	ctx  context.Context
	nc   net.Conn
	uc   *net.UnixConn // nc itself when it is a Unix socket (shm possible)
	cfg  *Config
	kind Kind
	tls  *tls.Conn
	uid  int
	pid  int
	stop func() bool // detaches the context from nc's deadline
	// authed, if set (a Listener's handshakes), is called once the peer
	// has authenticated: TLS with a verified client certificate, or a hello
	// that was accepted.
	authed func()
	// trusted is set once the peer has authenticated.
	trusted bool
}

func begin(ctx context.Context, nc net.Conn, cfg *Config) (*handshake, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.check(); err != nil {
		nc.Close()
		return nil, err
	}
	h := &handshake{ctx: ctx, nc: nc, cfg: cfg, uid: -1, pid: -1, authed: authenticatedHook(ctx)}
	raw := nc
	if tc, ok := nc.(*tls.Conn); ok {
		h.tls = tc
		raw = tc.NetConn()
	}
	switch r := raw.(type) {
	case *net.UnixConn:
		h.kind = KindUnix
		if h.tls == nil {
			h.uc = r
		}
	case *net.TCPConn:
		h.kind = KindTCP
	default:
		h.kind = KindStream
	}
	if h.kind == KindTCP && h.tls == nil && !cfg.InsecurePlaintextTCP {
		nc.Close()
		return nil, fmt.Errorf("%w: TCP needs TLS (Config.TLS) or the explicit InsecurePlaintextTCP", ErrConfig)
	}
	deadline := time.Now().Add(cfg.handshakeTimeout())
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := nc.SetDeadline(deadline); err != nil {
		nc.Close()
		return nil, fmt.Errorf("transport: handshake: %w", err)
	}
	h.stop = context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	return h, nil
}

// finish logs the outcome and, on failure, closes the socket.
func (h *handshake) finish(c Conn, err error) (Conn, error) {
	log := h.cfg.logger()
	if err != nil {
		h.stop()
		h.nc.Close()
		if cerr := h.ctx.Err(); cerr != nil && errors.Is(err, ErrTimeout) {
			err = fmt.Errorf("%w (%w)", err, cerr)
		}
		if h.authed != nil && !h.trusted {
			// A stranger's failure: the Listener reports those, rate-limited.
			log.Debug("ringwire: handshake failed", "remote", addrString(h.nc.RemoteAddr()), "err", err)
			return nil, err
		}
		log.Warn("ringwire: handshake failed", "remote", addrString(h.nc.RemoteAddr()), "err", err)
		return nil, err
	}
	in := c.Info()
	log.Info("ringwire: connected", "transport", in.Kind.String(), "compression", in.Compression,
		"tls", in.TLS, "peer", in.Peer.Name, "peer_version", in.Peer.Version, "protocol", in.Version)
	return c, nil
}

// live ends the handshake phase: no deadline, no context.
func (h *handshake) live() error {
	if !h.stop() {
		// The context ended and its deadline-in-the-past is being (or has
		// been) set on nc: the handshake lost the race.
		return fmt.Errorf("%w: handshake: %w", ErrTimeout, context.Cause(h.ctx))
	}
	return h.nc.SetDeadline(time.Time{})
}

// authenticate checks the transport-level identity of the peer: the TLS
// handshake (certificates) or the Unix peer's uid.
func (h *handshake) authenticate(server bool) error {
	if h.tls != nil {
		if err := h.tls.HandshakeContext(h.ctx); err != nil {
			err = h.netErr("TLS handshake", err)
			if !errors.Is(err, ErrTimeout) && !errors.Is(err, hs.ErrUnauthorized) {
				// Certificates missing, expired, from another authority...
				err = fmt.Errorf("%w: %w", hs.ErrUnauthorized, err)
			}
			return err
		}
		if cs := h.tls.ConnectionState(); server && len(cs.VerifiedChains) == 0 {
			// Also catches a tls.Config that asks for a certificate without
			// verifying it (RequireAnyClientCert and the like).
			return fmt.Errorf("%w: mutual TLS: the client presented no verified certificate (%d unverified)", hs.ErrUnauthorized, len(cs.PeerCertificates))
		}
		return nil
	}
	if h.kind != KindUnix {
		return nil
	}
	uid, pid, err := peerCred(h.uc)
	if errors.Is(err, errors.ErrUnsupported) {
		return nil // this OS does not say; the token still applies
	}
	if err != nil {
		return fmt.Errorf("transport: handshake: peer credentials: %w", err)
	}
	h.uid, h.pid = uid, pid
	if !h.cfg.uidAllowed(uid) {
		return fmt.Errorf("%w: peer uid %d is neither ours (%d) nor allowed", hs.ErrUnauthorized, uid, os.Getuid())
	}
	return nil
}

// authenticated tells the Listener, if any, that the peer is no longer a
// stranger.
func (h *handshake) authenticated() {
	h.trusted = true
	if h.authed != nil {
		h.authed()
	}
}

// netErr classifies an error of the socket during the handshake.
func (h *handshake) netErr(what string, err error) error {
	var cv *tls.CertificateVerificationError
	var op *net.OpError
	switch {
	case errors.Is(err, hs.ErrMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
		return err
	case frameIsTimeout(err):
		return fmt.Errorf("%w: handshake: %s: %w", ErrTimeout, what, err)
	case errors.As(err, &cv):
		return fmt.Errorf("%w: %s: %w", hs.ErrUnauthorized, what, err)
	case h.tls != nil && errors.As(err, &op) && op.Op == "remote error":
		// A TLS alert from the peer: it rejected our certificate (or lack of one).
		return fmt.Errorf("%w: %s: %w", hs.ErrUnauthorized, what, err)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed):
		return fmt.Errorf("%w: %s: the peer hung up: %w", ErrPeerGone, what, err)
	}
	return fmt.Errorf("transport: handshake: %s: %w", what, err)
}

func (h *handshake) write(m hs.Message) error {
	if err := hs.WriteMessage(h.nc, m); err != nil {
		return h.netErr("write", err)
	}
	return nil
}

func (h *handshake) read() (hs.Message, error) {
	m, err := hs.ReadMessage(h.nc)
	if err != nil {
		return nil, h.netErr("read", err)
	}
	return m, nil
}

// refuse tells the peer why (best effort) and returns err.
func (h *handshake) refuse(reason hs.Reason, err error) error {
	_ = hs.WriteMessage(h.nc, &hs.Refuse{Reason: reason, Message: err.Error()})
	return err
}

// readAck waits for the dialler's Ack (or its refusal of our Accept).
func (h *handshake) readAck() error {
	m, err := h.read()
	if err != nil {
		return err
	}
	switch m := m.(type) {
	case *hs.Ack:
		return nil
	case *hs.Refuse:
		return m.Err()
	}
	return fmt.Errorf("%w: %T where an ack was expected", hs.ErrMalformed, m)
}

func (h *handshake) shmPossible() bool {
	return shmSupported && h.uc != nil && h.cfg.Mode != ModeFramed
}

func (h *handshake) ringOptions(maxMessage uint64) ring.Options {
	o := h.cfg.Ring
	o.MaxMessage = int(maxMessage)
	return o
}

func (h *handshake) info(version uint16, maxMessage uint64, name, ver string, contract []byte, constants map[string]string) Info {
	return Info{
		Kind:       h.kind,
		TLS:        h.tls != nil,
		Version:    version,
		MaxMessage: int(maxMessage),
		Peer: Peer{
			Name: name, Version: ver, Contract: contract, Constants: constants,
			UID: h.uid, PID: h.pid,
		},
	}
}

func (h *handshake) server() (Conn, error) {
	if err := h.authenticate(true); err != nil {
		if errors.Is(err, hs.ErrUnauthorized) && h.tls == nil {
			// The details (uids) stay in our log; the peer learns only that
			// it was refused.
			_ = hs.WriteMessage(h.nc, &hs.Refuse{Reason: hs.ReasonUnauthorized, Message: "peer credentials not allowed"})
		}
		return nil, err
	}
	if h.tls != nil {
		h.authenticated()
	}
	m, err := h.read()
	if err != nil {
		if errors.Is(err, hs.ErrMalformed) {
			return nil, h.refuse(hs.ReasonMalformed, err)
		}
		return nil, err
	}
	hello, ok := m.(*hs.Hello)
	if !ok {
		return nil, h.refuse(hs.ReasonMalformed, fmt.Errorf("%w: %T where a hello was expected", hs.ErrMalformed, m))
	}
	cfg := h.cfg
	p := hs.Policy{
		Shm:          h.shmPossible(),
		Compressions: cfg.compressions(h.kind),
		MaxMessage:   cfg.maxMessage(),
		RingSize:     uint32(cfg.ringSize()),
		Contract:     cfg.Contract,
		Token:        cfg.Token,
		Name:         cfg.Name,
		Version:      cfg.Version,
		Constants:    cfg.Constants,
	}
	acc, ref := hs.Select(&p, hello)
	if ref != nil {
		_ = h.write(ref)
		return nil, ref.Err()
	}
	h.authenticated()
	if cfg.Mode == ModeShm && acc.Transport != hs.TransportShm {
		return nil, h.refuse(hs.ReasonUnavailable, errNoShm("the peer", h))
	}
	if err := h.write(acc); err != nil {
		return nil, err
	}
	info := h.info(acc.Version, acc.MaxMessage, hello.Name, hello.Version, hello.Contract, hello.Constants)
	if acc.Transport == hs.TransportShm {
		end, err := duplex.Offer(h.uc, duplex.Config{
			Capacity: int(acc.RingSize),
			Options:  h.ringOptions(acc.MaxMessage),
			Confirm: func() error {
				if err := h.readAck(); err != nil {
					return err
				}
				return h.live()
			},
		})
		if err != nil {
			return nil, err
		}
		return newShmConn(end, info), nil
	}
	if err := h.readAck(); err != nil {
		return nil, err
	}
	if err := h.live(); err != nil {
		return nil, err
	}
	return h.framed(acc.Compression, info), nil
}

func (h *handshake) client() (Conn, error) {
	if err := h.authenticate(false); err != nil {
		return nil, err
	}
	cfg := h.cfg
	hello := &hs.Hello{
		MinVersion:   hs.MinVersion,
		MaxVersion:   hs.MaxVersion,
		Shm:          h.shmPossible(),
		Compressions: cfg.compressions(h.kind),
		MaxMessage:   cfg.maxMessage(),
		Contract:     cfg.Contract,
		Token:        cfg.Token,
		Name:         cfg.Name,
		Version:      cfg.Version,
		Constants:    cfg.Constants,
	}
	if cfg.Mode == ModeShm && !hello.Shm {
		return nil, errNoShm("this side", h)
	}
	if err := h.write(hello); err != nil {
		return nil, err
	}
	m, err := h.read()
	if err != nil {
		return nil, err
	}
	var acc *hs.Accept
	switch m := m.(type) {
	case *hs.Refuse:
		return nil, m.Err()
	case *hs.Accept:
		acc = m
	default:
		return nil, fmt.Errorf("%w: %T where an accept or refusal was expected", hs.ErrMalformed, m)
	}
	if err := hs.Check(hello, acc); err != nil {
		return nil, h.refuse(reasonOf(err), err)
	}
	if cfg.Mode == ModeShm && acc.Transport != hs.TransportShm {
		return nil, h.refuse(hs.ReasonUnavailable, errNoShm("the peer", h))
	}
	info := h.info(acc.Version, acc.MaxMessage, acc.Name, acc.AppVersion, acc.Contract, acc.Constants)
	if acc.Transport == hs.TransportShm {
		end, err := duplex.Accept(h.uc, duplex.Config{
			Capacity:    int(acc.RingSize), // checked before the Ack
			MaxCapacity: maxRingSize,
			Options:     h.ringOptions(acc.MaxMessage),
			Confirm: func() error {
				if err := h.write(&hs.Ack{}); err != nil {
					return err
				}
				return h.live()
			},
		})
		if err != nil {
			if errors.Is(err, ErrTimeout) || errors.Is(err, ErrPeerGone) || errors.Is(err, hs.ErrUnauthorized) {
				return nil, err
			}
			if frameIsTimeout(err) || frameIsPeerGone(err) {
				return nil, h.netErr("receiving the rings", err)
			}
			return nil, h.refuse(hs.ReasonUnavailable, fmt.Errorf("transport: mapping the offered rings: %w", err))
		}
		if end.Rx.Capacity() != int(acc.RingSize) {
			end.Close()
			return nil, fmt.Errorf("%w: rings of %d bytes where the accept said %d", ErrCorrupt, end.Rx.Capacity(), acc.RingSize)
		}
		return newShmConn(end, info), nil
	}
	if err := h.write(&hs.Ack{}); err != nil {
		return nil, err
	}
	if err := h.live(); err != nil {
		return nil, err
	}
	return h.framed(acc.Compression, info), nil
}

func errNoShm(who string, h *handshake) error {
	why := "not a Unix socket"
	switch {
	case !shmSupported:
		why = "no shared memory on this OS"
	case h.cfg.Mode == ModeFramed:
		why = "disabled"
	}
	if who != "this side" {
		why = "refused"
	}
	return fmt.Errorf("%w: %w: shared memory required (ModeShm) but %s cannot use it (%s)", hs.ErrRefused, errors.ErrUnsupported, who, why)
}

// reasonOf maps a Check error to the refusal reason sent back.
func reasonOf(err error) hs.Reason {
	switch {
	case errors.Is(err, hs.ErrVersion):
		return hs.ReasonVersion
	case errors.Is(err, hs.ErrContractMismatch):
		return hs.ReasonContract
	case errors.Is(err, hs.ErrUnauthorized):
		return hs.ReasonUnauthorized
	case errors.Is(err, hs.ErrMalformed):
		return hs.ReasonMalformed
	}
	return hs.ReasonOther
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// framed starts the framed transport on the handshake's socket.
func (h *handshake) framed(z hs.Compression, info Info) Conn {
	comp := framedCompNone
	switch z {
	case hs.CompressionLZ4:
		comp = framedCompLZ4
	case hs.CompressionZstd:
		comp = framedCompZstd
	}
	return newFramed(h.nc, framedOptions{
		Kind:        h.kind,
		Compression: comp,
		Threshold:   h.cfg.CompressThreshold,
		MaxMessage:  info.MaxMessage,
		Info:        info,
	})
}
