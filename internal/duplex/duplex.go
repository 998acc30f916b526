package duplex

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"

	"github.com/ringwire/ringwire/ring"
	"github.com/ringwire/ringwire/shm"
)

// Config describes the rings an Offer creates.
type Config struct {
	// Capacity is each ring's data size, a power of two (Offer: default
	// 4 MiB; Accept: the size expected, 0 for any up to MaxCapacity).
	Capacity int
	// MaxRecord is the largest record payload (0: ring.DefaultMaxRecord).
	MaxRecord int
	// MaxCapacity bounds the capacity an Accept agrees to (default 256 MiB).
	MaxCapacity int
	// Options tune this side's waiting.
	Options ring.Options
	// Confirm, if set, runs after the rings are sent (Offer) or mapped
	// (Accept) and before the liveness watcher takes over the socket's read
	// side: the last chance to exchange messages on conn. An error aborts.
	Confirm func() error
}

const (
	// DefaultCapacity is the ring size chosen by the throughput benchmarks: a
	// 1 MiB ring was 3-5x slower than 4 MiB for 1 KiB and 64 KiB messages.
	DefaultCapacity    = 4 << 20
	defaultMaxCapacity = 256 << 20
	offerMagic         = 0x52465752 // "RWFR"
	offerSize          = 12         // magic u32 | capacity u32 | max record u32
)

// ErrProtocol reports a malformed offer on the control socket.
var ErrProtocol = errors.New("duplex: bad offer")

// End is one process's side: Tx writes to the peer, Rx reads from it.
type End struct {
	Tx *ring.Producer
	Rx *ring.Consumer

	conn  *net.UnixConn
	segs  [2]*shm.Segment
	watch *shm.Watcher
	life  lifetime
	err   error       // of the release, written by whoever releases
	freed atomic.Bool // set after err

	// goneMu is held by PeerGone while it holds its references, so that
	// Close can wait for a PeerGone in progress: the watcher's references
	// are internal, and a caller with none of its own expects Close to
	// release everything before it returns.
	goneMu sync.Mutex
}

func newEnd(conn *net.UnixConn) *End {
	e := &End{conn: conn}
	e.life.init(func() {
		e.err = e.release()
		e.freed.Store(true)
	})
	return e
}

func segmentSize(capacity int) int {
	page := os.Getpagesize()
	return (ring.Size(capacity) + page - 1) / page * page
}

// Offer creates both rings, sends them to the peer on conn and returns this
// side's End (Tx is ring 0, Rx ring 1). conn then watches the peer's liveness
// and belongs to the End; if Offer fails, conn stays open and the caller's,
// so it can still tell the peer why.
func Offer(conn *net.UnixConn, cfg Config) (_ *End, err error) {
	if cfg.Capacity == 0 {
		cfg.Capacity = DefaultCapacity
	}
	e := newEnd(conn)
	defer func() {
		if err != nil {
			e.conn = nil // the caller keeps it
			e.release()
		}
	}()
	for i := range e.segs {
		if e.segs[i], err = shm.Create(segmentSize(cfg.Capacity)); err != nil {
			return nil, err
		}
		if err = ring.Init(e.segs[i].Bytes(), cfg.Capacity, cfg.MaxRecord); err != nil {
			return nil, err
		}
	}
	var msg [offerSize]byte
	le.PutUint32(msg[0:], offerMagic)
	le.PutUint32(msg[4:], uint32(cfg.Capacity))
	le.PutUint32(msg[8:], uint32(max(cfg.MaxRecord, 0)))
	if err = shm.SendFds(conn, msg[:], e.segs[0].Fd(), e.segs[1].Fd()); err != nil {
		return nil, err
	}
	return e, e.attach(0, 1, cfg.Capacity, &cfg)
}

// Accept receives the rings offered by the peer on conn, verifies them and
// returns this side's End (Tx is ring 1, Rx ring 0). Like Offer, it leaves
// conn open and to the caller if it fails.
func Accept(conn *net.UnixConn, cfg Config) (_ *End, err error) {
	if cfg.MaxCapacity == 0 {
		cfg.MaxCapacity = defaultMaxCapacity
	}
	var msg [offerSize]byte
	n, fds, err := shm.RecvFds(conn, msg[:], 2)
	if err != nil {
		return nil, err
	}
	e := newEnd(conn)
	defer func() {
		if err != nil {
			e.conn = nil // the caller keeps it
			e.release()
		}
	}()
	capacity := int(le.Uint32(msg[4:]))
	switch {
	case len(fds) != 2:
		for _, fd := range fds {
			_ = closeFd(fd)
		}
		return nil, fmt.Errorf("%w: %d descriptors, want 2", ErrProtocol, len(fds))
	case n != offerSize || le.Uint32(msg[0:]) != offerMagic:
		_, _ = closeFd(fds[0]), closeFd(fds[1])
		return nil, fmt.Errorf("%w: %d-byte message", ErrProtocol, n)
	case cfg.Capacity != 0 && capacity != cfg.Capacity:
		_, _ = closeFd(fds[0]), closeFd(fds[1])
		return nil, fmt.Errorf("%w: rings of %d bytes, %d expected", ErrProtocol, capacity, cfg.Capacity)
	case capacity < ring.MinCapacity || capacity > cfg.MaxCapacity:
		_, _ = closeFd(fds[0]), closeFd(fds[1])
		return nil, fmt.Errorf("%w: capacity %d outside [%d, %d]", ErrProtocol, capacity, ring.MinCapacity, cfg.MaxCapacity)
	}
	for i, fd := range fds {
		if e.segs[i], err = shm.Open(fd, segmentSize(capacity)); err != nil {
			if i == 0 {
				_ = closeFd(fds[1])
			}
			return nil, err
		}
	}
	return e, e.attach(1, 0, capacity, &cfg)
}

func (e *End) attach(tx, rx, capacity int, cfg *Config) (err error) {
	if e.Tx, err = ring.NewProducer(e.segs[tx].Bytes(), &cfg.Options); err != nil {
		return err
	}
	if e.Rx, err = ring.NewConsumer(e.segs[rx].Bytes(), &cfg.Options); err != nil {
		return err
	}
	e.Rx.Pair(e.Tx)
	if e.Tx.Capacity() != capacity || e.Rx.Capacity() != capacity {
		return fmt.Errorf("%w: ring headers disagree with the offered capacity %d", ring.ErrCorrupt, capacity)
	}
	if cfg.Confirm != nil {
		if err := cfg.Confirm(); err != nil {
			return err
		}
	}
	e.watch, err = shm.WatchConn(e.conn, e.PeerGone)
	return err
}

// PeerGone wakes both rings' waiters with ring.ErrPeerGone. The liveness
// watcher calls it; a supervisor that saw the peer process exit may too.
// After Close it does nothing.
func (e *End) PeerGone() {
	e.goneMu.Lock()
	defer e.goneMu.Unlock()
	if !e.life.enter(TxSide) {
		return
	}
	defer e.life.exit(TxSide)
	if !e.life.enter(RxSide) {
		return
	}
	defer e.life.exit(RxSide)
	e.Tx.PeerGone()
	e.Rx.PeerGone()
}

// Enter takes a reference on side s of the mapping: the rings stay mapped
// until the matching Exit. It reports false once Close has begun; the rings
// must not be touched then. Every goroutine that uses Tx or Rx while another
// may call Close brackets that use with Enter and Exit (see lifetime).
func (e *End) Enter(s Side) bool { return e.life.enter(s) }

// Exit drops a reference taken by Enter. The last one after Close releases
// the End.
func (e *End) Exit(s Side) { e.life.exit(s) }

// Shutdown wakes every waiter on both rings with ring.ErrClosed, without
// releasing memory. The caller holds references on both sides (or knows
// that Close cannot run).
func (e *End) Shutdown() {
	_ = e.Tx.Close()
	_ = e.Rx.Close()
}

// Close shuts both rings down (every waiter returns ring.ErrClosed), tells
// the peer (a shutdown of the control socket's write side, which the peer's
// watcher sees as a hang-up) and gives up the End's own references. The
// watcher, the control socket and the memory are released before Close
// returns if no caller's Enter is outstanding (a PeerGone in progress is
// waited for), otherwise by the last Exit. Close returns the release's error
// when the release happened during it; later calls return nil.
func (e *End) Close() error {
	if !e.life.close() {
		return nil
	}
	if e.Tx != nil {
		e.Shutdown()
	}
	if e.conn != nil {
		_ = e.conn.CloseWrite()
	}
	e.life.exit(TxSide)
	e.life.exit(RxSide)
	// A PeerGone that entered before close may hold the last references.
	e.goneMu.Lock() // an empty critical section: waiting for it is the point
	e.goneMu.Unlock()
	if e.freed.Load() {
		return e.err
	}
	return nil
}

// LocalAddr is the control socket's local address.
func (e *End) LocalAddr() net.Addr {
	if e.conn == nil {
		return nil
	}
	return e.conn.LocalAddr()
}

// RemoteAddr is the control socket's peer address.
func (e *End) RemoteAddr() net.Addr {
	if e.conn == nil {
		return nil
	}
	return e.conn.RemoteAddr()
}

func (e *End) release() error {
	var errs []error
	if e.watch != nil {
		errs = append(errs, e.watch.Close())
	}
	if e.conn != nil {
		errs = append(errs, e.conn.Close())
	}
	// A PeerGone from the watcher holds references (lifetime): when the
	// release runs, none is in progress and none can start.
	for _, s := range e.segs {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}

// InheritedFd is the descriptor number at which Spawn hands the child its end
// of the control socket (the first of exec.Cmd.ExtraFiles).
const InheritedFd = 3

// Spawn starts cmd with one end of a new Unix socket pair as descriptor
// InheritedFd and returns the other end. The caller waits for cmd.
func Spawn(cmd *exec.Cmd) (*net.UnixConn, error) {
	local, remote, err := socketPair()
	if err != nil {
		return nil, err
	}
	cmd.ExtraFiles = append([]*os.File{remote}, cmd.ExtraFiles...)
	err = cmd.Start()
	_ = remote.Close()
	if err != nil {
		_ = local.Close()
		return nil, err
	}
	return local, nil
}

// Inherited returns the control socket a parent passed with Spawn.
func Inherited() (*net.UnixConn, error) {
	f := os.NewFile(InheritedFd, "ringwire-control")
	if f == nil {
		return nil, fmt.Errorf("duplex: no descriptor %d", InheritedFd)
	}
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("duplex: descriptor %d: %w", InheritedFd, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		_ = c.Close()
		return nil, fmt.Errorf("duplex: descriptor %d is not a Unix socket", InheritedFd)
	}
	return uc, nil
}
