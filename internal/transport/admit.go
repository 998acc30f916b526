package transport

// The Listener's budget for connections whose handshake is in progress.
//
// Before a peer has authenticated (TLS with a verified client certificate,
// or a hello whose token and contract were accepted) it is a stranger, and
// strangers get a small, cheap budget:
//
//   - a first-byte deadline (listenFirstByte): a connection that has sent
//     nothing by then is closed; until its first byte it is only a parked
//     goroutine (MSG_PEEK, nothing read) in the silent pool, at most
//     listenMaxSilent in all, the source holding the most giving way when
//     it is full (a per-source cap there would make a flood of one source
//     churn, and displace an honest client of that source before it
//     writes);
//   - an authentication deadline (listenAuthTimeout) from accept;
//   - once it talks, at most listenMaxPerSource handshakes at once per
//     source and listenMaxPending in all.
//
// A source is a TCP peer's IPv4 address or IPv6 /64, or a Unix peer's uid.
// A connection that would exceed a bound does not wait and is not refused:
// it takes the place of the oldest stranger of its own source (per-source
// bound) or of the source holding the most strangers (total bound), which
// is closed. Accepting therefore never stops. An honest client talks at
// once, so silent connections, however many, never stand in its way; its
// handshake (milliseconds) can be displaced only by listenMaxPerSource
// newer talking strangers from its own source, or by a flood that makes
// some other source hold more strangers than its own. Authenticated
// handshakes are never displaced; if they alone fill a bound the new
// connection is closed.

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"
)

const (
	// Connections that have sent nothing yet: cheap (a parked goroutine and
	// a descriptor), so many, and bounded in all only: when they fill the
	// pool the source holding the most gives way, oldest first.
	listenMaxSilent = 1024
	// Handshakes under way, before and after authentication.
	listenMaxPending   = 256
	listenMaxPerSource = 8
	// listenFirstByte bounds how long a new connection may stay silent.
	listenFirstByte = time.Second
	// listenAuthTimeout bounds how long a connection may take to
	// authenticate (it then has the rest of the handshake timeout).
	listenAuthTimeout = 2 * time.Second
)

// pendingConn is one connection in a pool, in its source's queue.
type pendingConn struct {
	nc      net.Conn
	key     string
	started time.Time
	pool    *connPool // where it is counted now; nil once released (under admission.mu)
	authed  bool      // under admission.mu
}

// connPool bounds the connections of one stage, in all and per source.
type connPool struct {
	max, perSource int
	total          int
	bySource       map[string][]*pendingConn // oldest first
}

// admission tracks the connections of one Listener whose handshake has not
// finished: first in the silent pool, then (from their first byte) in the
// handshake pool.
type admission struct {
	mu        sync.Mutex
	silent    connPool
	talking   connPool
	displaced int // connections closed to make room (tests, logs)
}

func (a *admission) init() {
	if a.silent.bySource == nil {
		a.silent = connPool{max: listenMaxSilent, perSource: listenMaxSilent, bySource: map[string][]*pendingConn{}}
		a.talking = connPool{max: listenMaxPending, perSource: listenMaxPerSource, bySource: map[string][]*pendingConn{}}
	}
}

// admit records nc, a new connection from source key: in the handshake
// pool if it has sent something already (an honest client writes at once),
// else in the silent pool. It returns nil when nc must be closed (every
// connection in its way has authenticated); a connection it displaced is
// closed already.
func (a *admission) admit(nc net.Conn, key string) *pendingConn {
	p := &pendingConn{nc: nc, key: key, started: time.Now()}
	pool := &a.silent
	if hasData(socketOf(nc)) {
		pool = &a.talking
	}
	a.mu.Lock()
	a.init()
	victim, ok := a.makeRoomLocked(pool, key)
	if ok {
		a.addLocked(pool, p)
	}
	a.mu.Unlock()
	if victim != nil {
		victim.nc.Close()
	}
	if !ok {
		return nil
	}
	return p
}

// talk moves p, which has sent its first byte, to the handshake pool. It
// reports false when p must be closed.
func (a *admission) talk(p *pendingConn) bool {
	a.mu.Lock()
	if p.pool == &a.talking {
		a.mu.Unlock()
		return true // admitted talking
	}
	if p.pool != &a.silent {
		a.mu.Unlock()
		return false // displaced meanwhile
	}
	a.removeLocked(p)
	victim, ok := a.makeRoomLocked(&a.talking, p.key)
	if ok {
		a.addLocked(&a.talking, p)
	}
	a.mu.Unlock()
	if victim != nil {
		victim.nc.Close()
	}
	return ok
}

// makeRoomLocked makes room in pool for one more connection from key:
// nothing to do, or the oldest stranger of key (key full) or of the source
// holding the most strangers (pool full) is taken out and returned, to be
// closed. ok is false when there is no room and nobody to displace.
func (a *admission) makeRoomLocked(pool *connPool, key string) (victim *pendingConn, ok bool) {
	switch {
	case len(pool.bySource[key]) >= pool.perSource:
		victim = a.pickVictim(pool, pool.bySource[key])
	case pool.total >= pool.max:
		victim = a.pickVictim(pool, pool.bySource[largestSource(pool)])
	default:
		return nil, true
	}
	if victim == nil {
		return nil, false
	}
	a.removeLocked(victim)
	a.displaced++
	return victim, true
}

func (a *admission) addLocked(pool *connPool, p *pendingConn) {
	pool.bySource[p.key] = append(pool.bySource[p.key], p)
	pool.total++
	p.pool = pool
}

// pickVictim chooses whom to displace among q: its oldest stranger, and in
// the silent pool its oldest stranger that is still silent (one that has
// just sent its first byte is about to move on; a few looks at most).
func (a *admission) pickVictim(pool *connPool, q []*pendingConn) *pendingConn {
	if pool == &a.silent {
		for i, p := range q {
			if i == 8 {
				break
			}
			if !p.authed && !hasData(socketOf(p.nc)) {
				return p
			}
		}
	}
	return oldestStranger(q)
}

// oldestStranger is the oldest connection of q that has not authenticated.
func oldestStranger(q []*pendingConn) *pendingConn {
	for _, p := range q {
		if !p.authed {
			return p
		}
	}
	return nil
}

// largestSource is the source of pool with the most strangers; of equals,
// the one whose oldest stranger is oldest.
func largestSource(pool *connPool) string {
	best, bestN := "", 0
	var bestAt time.Time
	for key, q := range pool.bySource {
		n := 0
		var first time.Time
		for _, p := range q {
			if !p.authed {
				if n == 0 {
					first = p.started
				}
				n++
			}
		}
		if n > bestN || (n == bestN && n > 0 && first.Before(bestAt)) {
			best, bestN, bestAt = key, n, first
		}
	}
	return best
}

func (a *admission) removeLocked(p *pendingConn) {
	pool := p.pool
	if pool == nil {
		return
	}
	p.pool = nil
	q := pool.bySource[p.key]
	for i, x := range q {
		if x == p {
			q = append(q[:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(pool.bySource, p.key)
	} else {
		pool.bySource[p.key] = q
	}
	pool.total--
}

// release ends p's handshake (done, failed or displaced).
func (a *admission) release(p *pendingConn) {
	a.mu.Lock()
	a.removeLocked(p)
	a.mu.Unlock()
}

// authenticated marks p as no longer a stranger: it is not displaced.
func (a *admission) authenticated(p *pendingConn) {
	a.mu.Lock()
	p.authed = true
	a.mu.Unlock()
}

// isAuthed reports whether p has authenticated.
func (a *admission) isAuthed(p *pendingConn) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return p.authed
}

// sourceKey names the source nc's handshakes count against: the IPv4
// address or IPv6 /64 of a TCP peer, the uid of a Unix peer ("" where the
// system does not say).
func sourceKey(nc net.Conn) string {
	switch a := nc.RemoteAddr().(type) {
	case *net.TCPAddr:
		if ip4 := a.IP.To4(); ip4 != nil {
			return ip4.String()
		}
		return a.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	if uc, ok := socketOf(nc).(*net.UnixConn); ok {
		if uid, _, err := peerCred(uc); err == nil {
			return "uid " + strconv.Itoa(uid)
		}
	}
	return ""
}

// authKey carries the hook the handshake calls once the peer has
// authenticated (a Listener's handshakes only).
type authKey struct{}

func withAuthenticated(ctx context.Context, f func()) context.Context {
	return context.WithValue(ctx, authKey{}, f)
}

func authenticatedHook(ctx context.Context) func() {
	f, _ := ctx.Value(authKey{}).(func())
	return f
}

// socketOf is the socket under nc (under TLS, the TCP connection).
func socketOf(nc net.Conn) net.Conn {
	if tc, ok := nc.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return nc
}

// refusedAtOnce reports whether the handshake will refuse nc before reading
// anything (a Unix peer whose uid is not allowed): there is no first byte
// to wait for.
func refusedAtOnce(nc net.Conn, cfg *Config) bool {
	uc, ok := socketOf(nc).(*net.UnixConn)
	if !ok {
		return false
	}
	uid, _, err := peerCred(uc)
	return err == nil && !cfg.uidAllowed(uid)
}

// strangerLogEvery is how often a Listener logs the failed handshakes of
// peers that never authenticated: a flood of them writes one WARN line a
// second (with the count), not one per connection.
const strangerLogEvery = time.Second

// strangerLog rate-limits the log of strangers' failed handshakes.
type strangerLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// failed logs err, a stranger's failed handshake: at WARN at most once per
// strangerLogEvery, naming how many were not logged since; at DEBUG
// otherwise.
func (s *strangerLog) failed(log *slog.Logger, remote net.Addr, err error) {
	s.mu.Lock()
	now := time.Now()
	if now.Sub(s.last) < strangerLogEvery {
		s.suppressed++
		s.mu.Unlock()
		log.Debug("ringwire: handshake failed", "remote", addrString(remote), "err", err)
		return
	}
	n := s.suppressed
	s.last, s.suppressed = now, 0
	s.mu.Unlock()
	if n > 0 {
		log.Warn("ringwire: handshake failed", "remote", addrString(remote), "err", err, "also_failed_since_last", n)
		return
	}
	log.Warn("ringwire: handshake failed", "remote", addrString(remote), "err", err)
}
