package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/sendparts"
)

// chaosRing is the ring size of the close-race tests: small, so that rings
// fill up and messages above 8 KiB are fragmented.
const chaosRing = 16 << 10

// shmPairs listens once and returns a function that connects one more pair
// of shared-memory Conns (dialler, accepted) in this process. The caller
// closes the Conns.
func shmPairs(t testing.TB, ringSize int) (pair func() (Conn, Conn), addr string) {
	t.Helper()
	l, err := Listen("unix", unixAddr(), &Config{Name: "parent", Mode: ModeShm, RingSize: ringSize, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	addr = l.Addr().String()
	return func() (Conn, Conn) {
		t.Helper()
		type res struct {
			c   Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, "unix", addr, &Config{Name: "dialler", Mode: ModeShm, Logger: quietLogger})
			ch <- res{c, err}
		}()
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		r := <-ch
		if r.err != nil {
			s.Close()
			t.Fatal(r.err)
		}
		return r.c, s
	}, addr
}

// chaosMsg builds message seq of n bytes: seq u32 | n u32 | a pattern of seq.
func chaosMsg(buf []byte, seq uint32, n int) []byte {
	b := buf[:max(n, 8)]
	binary.LittleEndian.PutUint32(b, seq)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	for i := 8; i < len(b); i++ {
		b[i] = byte(seq) + byte(i)
	}
	return b
}

// chaosCheck verifies a message built by chaosMsg and returns its seq.
func chaosCheck(b []byte) (uint32, error) {
	if len(b) < 8 || binary.LittleEndian.Uint32(b[4:]) != uint32(len(b)) {
		return 0, fmt.Errorf("message of %d bytes with a bad header", len(b))
	}
	seq := binary.LittleEndian.Uint32(b)
	for i := 8; i < len(b); i++ {
		if b[i] != byte(seq)+byte(i) {
			return 0, fmt.Errorf("message %d (%d bytes) differs at byte %d", seq, len(b), i)
		}
	}
	return seq, nil
}

// chaosErr accepts the errors a connection may give while it, or its peer,
// closes at a random moment under deadlines and cancels.
func chaosErr(op string, err error) error {
	if err == nil || errors.Is(err, ErrTimeout) || errors.Is(err, ErrCanceled) ||
		errors.Is(err, ErrClosed) || errors.Is(err, ErrPeerGone) {
		return nil
	}
	return fmt.Errorf("%s: unexpected error %w", op, err)
}

// finished reports whether an error ends a goroutine's loop.
func finished(err error) bool { return errors.Is(err, ErrClosed) || errors.Is(err, ErrPeerGone) }

// chaos runs on c, concurrently: a reader (which checks every message it
// reads and, in one mode of two, leaves Release to a stray goroutine), a
// writer using every send form with deadlines and cancels, a goroutine
// changing deadlines, and Close at a random moment from yet another. It
// returns once all of them are done, or an error if one misbehaved or did
// not finish within 10 s.
func chaos(c Conn, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 7))
	closeAfter := time.Duration(r.IntN(1500)) * time.Microsecond
	if r.IntN(8) == 0 {
		closeAfter = 0
	}
	strayRelease := r.IntN(2) == 0
	stop := make(chan struct{}) // closed with Close: loops that never fail end
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	run := func(f func(r *rand.Rand) error, seed uint64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(rand.New(rand.NewPCG(seed, 11))); err != nil {
				errs <- err
			}
		}()
	}
	run(func(r *rand.Rand) error { // reader
		last := int64(-1)
		for {
			m, err := c.Recv()
			if err != nil {
				if finished(err) {
					return nil
				}
				if err := chaosErr("Recv", err); err != nil {
					return err
				}
				// An expired deadline fails at once until the next one is
				// set: let the timers of the others run meanwhile.
				runtime.Gosched()
				continue
			}
			if !strayRelease {
				// The data stays mapped until our Release, whatever Close does.
				seq, err := chaosCheck(m.Data)
				if err != nil {
					return err
				}
				if int64(seq) <= last {
					return fmt.Errorf("message %d after %d", seq, last)
				}
				last = int64(seq)
				if r.IntN(3) > 0 {
					c.Release() // otherwise the next Recv releases it
				}
			}
		}
	}, r.Uint64())
	if strayRelease {
		run(func(r *rand.Rand) error {
			for {
				select {
				case <-stop:
					c.Release()
					return nil
				default:
				}
				c.Release()
				if r.IntN(4) == 0 {
					time.Sleep(time.Duration(r.IntN(50)) * time.Microsecond)
				} else {
					runtime.Gosched()
				}
			}
		}, r.Uint64())
	}
	run(func(r *rand.Rand) error { // writer
		buf := make([]byte, 40<<10)
		var seq uint32
		for {
			var n int
			switch p := r.IntN(100); {
			case p < 70:
				n = r.IntN(200)
			case p < 90:
				n = 200 + r.IntN(8<<10)
			default:
				n = 8<<10 + r.IntN(32<<10) // fragmented
			}
			seq++
			msg := chaosMsg(buf, seq, n)
			split := r.IntN(len(msg) + 1)
			var err error
			switch r.IntN(6) {
			case 0:
				err = c.Send(1, msg)
			case 1:
				err = sendparts.Parts(c, 1, msg[:split], msg[split:])
			case 2:
				err = c.SendBatch([]Message{{Type: 1, Data: msg}})
			case 3:
				err = sendparts.Until(c, sendparts.NoWait, nil, 1, msg[:split], msg[split:])
				if errors.Is(err, ErrTimeout) {
					err = nil // no room at once: nothing was sent
				}
			default:
				var deadline time.Time
				switch r.IntN(3) {
				case 0:
					deadline = time.Now().Add(time.Duration(r.IntN(500)) * time.Microsecond)
				case 1:
					deadline = sendparts.NoWait
				}
				var cancel chan struct{}
				if r.IntN(2) == 0 {
					cancel = make(chan struct{})
					time.AfterFunc(time.Duration(r.IntN(500))*time.Microsecond, func() { close(cancel) })
				}
				err = sendparts.Until(c, deadline, cancel, 1, msg[:split], msg[split:])
			}
			if finished(err) {
				return nil
			}
			if err := chaosErr("send", err); err != nil {
				return err
			}
			if err != nil {
				runtime.Gosched()
			}
		}
	}, r.Uint64())
	run(func(r *rand.Rand) error { // deadlines
		for {
			var t time.Time
			if r.IntN(3) > 0 {
				t = time.Now().Add(time.Duration(r.IntN(300)) * time.Microsecond)
			}
			var err error
			if r.IntN(2) == 0 {
				err = c.SetReadDeadline(t)
			} else {
				err = c.SetWriteDeadline(t)
			}
			if finished(err) {
				return nil
			}
			if err := chaosErr("SetDeadline", err); err != nil {
				return err
			}
			time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond)
		}
	}, r.Uint64())
	run(func(*rand.Rand) error { // closer
		time.Sleep(closeAfter)
		err := c.Close()
		close(stop)
		if err != nil && !errors.Is(err, ErrClosed) {
			return fmt.Errorf("Close: %w", err)
		}
		return nil
	}, 0)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		return fmt.Errorf("goroutines still running 10s after the start:\n%s", buf[:runtime.Stack(buf, true)])
	}
	close(errs)
	return <-errs
}

// unmapped waits up to 5 s for c's rings to be unmapped (by the last
// reference: a background finisher may still be on its way out).
func unmapped(c Conn) bool {
	sc, ok := c.(*shmConn)
	if !ok {
		return true
	}
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if sc.end.Memory(0) == nil && sc.end.Memory(1) == nil {
			return true
		}
	}
	return false
}

// TestShmCloseRace runs chaos on both Conns of in-process pairs: Close
// against Recv, Release (also from a stray goroutine), every send form,
// deadline changes and the peer's liveness watcher, in any interleaving.
// Under -race it is the data-race check of the lifetime rule.
func TestShmCloseRace(t *testing.T) {
	n := 500
	if raceEnabled || testing.Short() {
		n = 200 // the race detector slows every goroutine down ~10x
	}
	pair, _ := shmPairs(t, chaosRing)
	for i := range n {
		a, b := pair()
		errc := make(chan error, 1)
		go func() { errc <- chaos(b, uint64(2*i+1)) }()
		if err := chaos(a, uint64(2*i)); err != nil {
			t.Fatalf("round %d, dialler: %v", i, err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("round %d, accepted: %v", i, err)
		}
		if !unmapped(a) || !unmapped(b) {
			t.Fatalf("round %d: rings still mapped 5s after Close and the last release", i)
		}
	}
}

// The cross-process close race: the child runs chaos on its end of each
// connection while this process runs it on the other.
const chaosItersEnv = "RINGWIRE_TRANSPORT_CHAOS_ITERS"

func init() {
	childRoles["chaos"] = func(c Conn, err error) int {
		n, _ := strconv.Atoi(os.Getenv(chaosItersEnv))
		for i := range n {
			if i > 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err = Dial(ctx, os.Getenv(childNetEnv), os.Getenv(childAddrEnv),
					&Config{Name: "child", Mode: ModeShm, Logger: quietLogger})
				cancel()
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "child: round %d: dial: %v\n", i, err)
				return 2
			}
			if err := chaos(c, uint64(i)<<32|0xc1); err != nil {
				fmt.Fprintf(os.Stderr, "child: round %d: %v\n", i, err)
				return 3
			}
		}
		return 0
	}
}

// TestShmCloseRaceXproc is the stress test of the mapping's lifetime between
// processes: 2,000 connections (1,000 under -race, which slows both
// processes about tenfold; 200 with -short), each with a reader, a writer, a deadline setter and a
// Close at a random moment on both ends. A use of unmapped memory would kill
// either process with SIGSEGV.
func TestShmCloseRaceXproc(t *testing.T) {
	n := 2000
	if raceEnabled {
		n = 1000
	}
	if testing.Short() {
		n = 200
	}
	l, spec := listenCombo(t, combo{kind: KindShm}, &Config{RingSize: chaosRing, Logger: quietLogger})
	t.Setenv(chaosItersEnv, strconv.Itoa(n))
	spec.Role = "chaos"
	p := startChild(t, spec)
	start := time.Now()
	for i := range n {
		c := accept(t, l, 10*time.Second)
		if err := chaos(c, uint64(i)<<32|0x9a); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if !unmapped(c) {
			t.Fatalf("round %d: rings still mapped 5s after Close and the last release", i)
		}
	}
	if err := p.wait(30 * time.Second); err != nil {
		t.Fatalf("child: %v", err)
	}
	t.Logf("%d connections in %v", n, time.Since(start).Round(time.Millisecond))
}

// TestShmAddrs: a shared-memory Conn, and NetConn over it, report the
// addresses of the Unix socket that carried the handshake.
func TestShmAddrs(t *testing.T) {
	pair, addr := shmPairs(t, chaosRing)
	a, b := pair()
	defer a.Close()
	defer b.Close()
	na, nb := NetConn(a), NetConn(b)
	for _, c := range []struct {
		name string
		got  net.Addr
	}{{"dialler's RemoteAddr", na.RemoteAddr()}, {"listener's LocalAddr", nb.LocalAddr()}} {
		if c.got == nil || c.got.Network() != "unix" || c.got.String() != addr {
			t.Errorf("%s = %v, want unix %s", c.name, c.got, addr)
		}
	}
	for _, got := range []net.Addr{na.LocalAddr(), nb.RemoteAddr()} {
		if got == nil || got.Network() != "unix" {
			t.Errorf("the dialler's own address = %v, want a unix address", got)
		}
	}
	if na.LocalAddr().String() != nb.RemoteAddr().String() {
		t.Errorf("dialler's LocalAddr %q != listener's RemoteAddr %q", na.LocalAddr(), nb.RemoteAddr())
	}
	a.Close()
	if a.(*shmConn).LocalAddr() == nil {
		t.Error("LocalAddr is nil after Close")
	}
}
