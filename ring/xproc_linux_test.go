//go:build linux

package ring_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ringwire/ringwire/internal/duplex"
	"github.com/ringwire/ringwire/ring"
)

// Cross-process tests: every test below runs the ring between this process
// and a re-executed copy of the test binary (see main_linux_test.go), over
// sealed memfds, with the control socket as the liveness channel. Every loop
// is bounded in iterations and, through ring deadlines or explicit clocks, in
// time; a failure says what stalled instead of hanging the run.

func init() {
	childRoles["integrity"] = childIntegrity
	childRoles["echostats"] = childEchoStats
	childRoles["stream"] = childStream
	childRoles["noread"] = childNoRead
	childRoles["scribble"] = childScribble
}

var xle = binary.LittleEndian

// Message types with a meaning of their own; data messages use other values.
const (
	typeStatus = 0xFFFF // integrity: the child's verdict; echostats: stats request/reply
	typeStats  = 0xFFFE
	typeStop   = 0xFFFD // stream role: stop streaming, send typeIdle, then idle
	typeIdle   = 0xFFFC
)

// childFail reports a verification failure in a child and exits at once: the
// child's other goroutines may be writing into the rings, so returning (which
// unmaps them) is not safe. The parent sees the peer gone and the exit code.
func childFail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "child: "+format+"\n", args...)
	os.Exit(3)
}

// ---------------------------------------------------------------------------
// Integrity: a deterministic stream of checksummed messages.

// checkedStream generates and verifies one direction's messages. Message i has a
// size and content derived from a hash of (seed, direction, i), so the
// receiver knows exactly what must arrive. Its payload carries the sequence
// number and, from 16 bytes on, a CRC-32 of the rest and the length:
//
//	seq u64 | crc32(payload[16:]) u32 | len u32 | content...   (len >= 16)
//	seq u64 | content...                                       (8 <= len < 16)
type checkedStream struct {
	seed, dir uint64
	maxRecord int
	rnd       []byte // content source shared by both sides
}

func newCheckedStream(seed, dir uint64, maxRecord int) *checkedStream {
	rnd := make([]byte, 16*maxRecord)
	var key [32]byte
	xle.PutUint64(key[:], seed)
	_, _ = rand.NewChaCha8(key).Read(rnd)
	return &checkedStream{seed: seed, dir: dir, maxRecord: maxRecord, rnd: rnd}
}

func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func (s *checkedStream) hash(i uint64) uint64 {
	return mix64(s.seed ^ s.dir<<63 ^ i*0x2545f4914f6cdd1d)
}

// size: mostly 8..256 bytes, 5% 257..4096, one in 10000 larger than a
// record (fragmented, up to 8 records).
func (s *checkedStream) size(i uint64) int {
	h := s.hash(i)
	switch {
	case h%10000 == 17:
		return s.maxRecord + 1 + int(h>>32%uint64(7*s.maxRecord))
	case h%100 < 5:
		return 257 + int(h>>32%3840)
	default:
		return 8 + int(h>>32%249)
	}
}

// content is the expected bytes after the fixed fields of message i.
func (s *checkedStream) content(i uint64, size int) []byte {
	hdr := 16
	if size < 16 {
		hdr = 8
	}
	n := size - hdr
	off := int(s.hash(i) >> 20 % uint64(len(s.rnd)-n+1))
	return s.rnd[off : off+n]
}

// fill writes message i into b (len(b) == s.size(i)), possibly in place in
// the ring.
func (s *checkedStream) fill(b []byte, i uint64) {
	xle.PutUint64(b, i)
	c := s.content(i, len(b))
	if len(b) < 16 {
		copy(b[8:], c)
		return
	}
	copy(b[16:], c)
	xle.PutUint32(b[8:], crc32.ChecksumIEEE(b[16:]))
	xle.PutUint32(b[12:], uint32(len(b)))
}

func (s *checkedStream) check(i uint64, typ uint16, b []byte) error {
	if want := s.size(i); len(b) != want {
		return fmt.Errorf("message %d: %d bytes, want %d", i, len(b), want)
	}
	if typ != uint16(i) {
		return fmt.Errorf("message %d: type %d, want %d", i, typ, uint16(i))
	}
	if seq := xle.Uint64(b); seq != i {
		return fmt.Errorf("message %d: carries sequence number %d", i, seq)
	}
	c := s.content(i, len(b))
	if len(b) < 16 {
		if !bytes.Equal(b[8:], c) {
			return fmt.Errorf("message %d: content differs", i)
		}
		return nil
	}
	if n := xle.Uint32(b[12:]); n != uint32(len(b)) {
		return fmt.Errorf("message %d: embedded length %d, have %d", i, n, len(b))
	}
	if sum := crc32.ChecksumIEEE(b[16:]); sum != xle.Uint32(b[8:]) {
		return fmt.Errorf("message %d (%d bytes): crc32 %#x, embedded %#x", i, len(b), sum, xle.Uint32(b[8:]))
	}
	if !bytes.Equal(b[16:], c) {
		return fmt.Errorf("message %d: content differs", i)
	}
	return nil
}

// send writes n messages with a mix of the producer's APIs: Write, Stage,
// zero-copy Reserve/Commit (also reserving more than it commits), TryReserve,
// and batches of several commits published by one Flush.
func (s *checkedStream) send(tx *ring.Producer, n uint64) error {
	scratch := make([]byte, 8*s.maxRecord+16)
	staged, batch := 0, 1
	for i := range n {
		h := s.hash(i)
		sz := s.size(i)
		mode := h >> 40 % 8
		if sz > s.maxRecord && mode >= 3 {
			mode = 2 // only Write and Stage fragment
		}
		switch mode {
		case 0, 1:
			s.fill(scratch[:sz], i)
			if err := tx.Write(uint16(i), scratch[:sz]); err != nil {
				return fmt.Errorf("write %d: %w", i, err)
			}
			staged = 0
		case 2:
			s.fill(scratch[:sz], i)
			if err := tx.Stage(uint16(i), scratch[:sz]); err != nil {
				return fmt.Errorf("stage %d: %w", i, err)
			}
			staged++
		default:
			res := sz
			if mode == 6 {
				res = min(s.maxRecord, sz+int(h>>52%64))
			}
			var buf []byte
			var err error
			if mode == 7 {
				buf, err = tx.TryReserve(res)
				if errors.Is(err, ring.ErrFull) {
					buf, err = tx.Reserve(res)
				}
			} else {
				buf, err = tx.Reserve(res)
			}
			if err != nil {
				return fmt.Errorf("reserve %d: %w", i, err)
			}
			s.fill(buf[:sz], i)
			if err := tx.Commit(uint16(i), sz); err != nil {
				return fmt.Errorf("commit %d: %w", i, err)
			}
			staged++
		}
		if staged >= batch {
			tx.Flush()
			staged, batch = 0, 1+int(h>>56%16)
		}
	}
	tx.Flush()
	return nil
}

// recv reads and verifies n messages, with Peek/Release and with Read (also
// into a buffer that is too short, which must leave the message in place).
func (s *checkedStream) recv(rx *ring.Consumer, n uint64) error {
	small := make([]byte, 300)
	big := make([]byte, 8*s.maxRecord+16)
	for i := range n {
		if s.hash(i)>>44%4 == 0 {
			typ, m, err := rx.Read(small)
			if errors.Is(err, io.ErrShortBuffer) {
				if want := s.size(i); m != want {
					return fmt.Errorf("message %d: short-buffer Read says %d bytes, want %d", i, m, want)
				}
				typ, m, err = rx.Read(big)
				if err != nil {
					return fmt.Errorf("read %d after short buffer: %w", i, err)
				}
				if err := s.check(i, typ, big[:m]); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return fmt.Errorf("read %d: %w", i, err)
			}
			if err := s.check(i, typ, small[:m]); err != nil {
				return err
			}
			continue
		}
		r, err := rx.Peek()
		if err != nil {
			return fmt.Errorf("peek %d: %w", i, err)
		}
		if err := s.check(i, r.Type, r.Data); err != nil {
			return err
		}
		if err := rx.Release(); err != nil {
			return fmt.Errorf("release %d: %w", i, err)
		}
	}
	return nil
}

// integrityArgs is "n:seed:seconds".
func integrityArgs(arg string) (n, seed uint64, limit time.Duration, err error) {
	f := strings.Split(arg, ":")
	if len(f) != 3 {
		return 0, 0, 0, fmt.Errorf("bad argument %q", arg)
	}
	if n, err = strconv.ParseUint(f[0], 10, 64); err != nil {
		return
	}
	if seed, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return
	}
	secs, err := strconv.Atoi(f[2])
	return n, seed, time.Duration(secs) * time.Second, err
}

// childIntegrity receives n messages of direction 0 and verifies them while
// it sends n messages of direction 1, then sends its verdict.
func childIntegrity(e *duplex.End, arg string) int {
	n, seed, limit, err := integrityArgs(arg)
	if err != nil {
		childFail("integrity: %v", err)
	}
	dl := time.Now().Add(limit)
	e.Tx.SetDeadline(dl)
	e.Rx.SetDeadline(dl)
	sent := make(chan error, 1)
	out := newCheckedStream(seed, 1, e.Tx.MaxRecord())
	go func() { sent <- out.send(e.Tx, n) }()
	in := newCheckedStream(seed, 0, e.Tx.MaxRecord())
	if err := in.recv(e.Rx, n); err != nil {
		childFail("integrity: receiving: %v", err)
	}
	if err := <-sent; err != nil {
		childFail("integrity: sending: %v", err)
	}
	if st := e.Rx.Stats(); st.Messages != n {
		childFail("integrity: Rx counted %d messages, want %d", st.Messages, n)
	}
	if err := e.Tx.Write(typeStatus, []byte("ok")); err != nil {
		childFail("integrity: verdict: %v", err)
	}
	return 0
}

// TestCrossProcessIntegrity sends a million checksummed messages of random
// sizes each way at once and verifies every byte on both sides.
func TestCrossProcessIntegrity(t *testing.T) {
	// The race detector slows the copying and checksumming several times
	// over, so a -race build sends 200,000 messages each way instead of
	// 1,000,000.
	n := uint64(1_000_000)
	if raceEnabled {
		n = 200_000
	}
	const limit = 90 * time.Second // the test takes a few seconds; this only bounds a stall
	seed := rand.Uint64()
	t.Logf("seed %d, %d messages each way", seed, n)
	{
		// How many messages of each kind the seed makes.
		maxRecord := ring.DefaultMaxRecord(64 << 10)
		for dir := range uint64(2) {
			s := newCheckedStream(seed, dir, maxRecord)
			var mid, frag int
			for i := range n {
				switch sz := s.size(i); {
				case sz > maxRecord:
					frag++
				case sz > 256:
					mid++
				}
			}
			t.Logf("direction %d: %d messages of 257..4096 bytes, %d fragmented (over %d bytes)", dir, mid, frag, maxRecord)
			if frag == 0 {
				t.Fatalf("direction %d: no fragmented message", dir)
			}
		}
	}
	start := time.Now()
	c := startChild(t, "integrity", fmt.Sprintf("%d:%d:%d", n, seed, int(limit/time.Second)),
		duplex.Config{Capacity: 64 << 10})
	maxRecord := c.End.Tx.MaxRecord()
	if maxRecord != ring.DefaultMaxRecord(64<<10) {
		t.Fatalf("max record %d", maxRecord)
	}
	dl := time.Now().Add(limit)
	c.End.Tx.SetDeadline(dl)
	c.End.Rx.SetDeadline(dl)

	var sendErr error
	sent := make(chan struct{})
	out := newCheckedStream(seed, 0, maxRecord)
	go func() {
		defer close(sent)
		sendErr = out.send(c.End.Tx, n)
	}()
	// Whatever happens, the sender must be gone before Cleanup unmaps.
	defer func() {
		c.End.Shutdown()
		select {
		case <-sent:
		case <-time.After(10 * time.Second):
			panic("sender goroutine did not stop after Shutdown")
		}
	}()

	in := newCheckedStream(seed, 1, maxRecord)
	if err := in.recv(c.End.Rx, n); err != nil {
		t.Fatalf("parent receiving: %v (child exit: %v)", err, c.Wait(2*time.Second))
	}
	r, err := c.End.Rx.Peek()
	if err != nil {
		t.Fatalf("verdict: %v (child exit: %v)", err, c.Wait(2*time.Second))
	}
	if r.Type != typeStatus || string(r.Data) != "ok" {
		t.Fatalf("verdict: type %#x %q", r.Type, r.Data)
	}
	_ = c.End.Rx.Release()
	<-sent // bounded by the Tx deadline
	if sendErr != nil {
		t.Fatalf("parent sending: %v", sendErr)
	}
	if err := c.Wait(10 * time.Second); err != nil {
		t.Fatalf("child: %v", err)
	}
	tx, rx := c.End.Tx.Stats(), c.End.Rx.Stats()
	if tx.Messages != n || rx.Messages != n+1 {
		t.Fatalf("counters: sent %d, received %d messages, want %d and %d", tx.Messages, rx.Messages, n, n+1)
	}
	el := time.Since(start)
	t.Logf("%d messages each way in %v (%.0f ns/msg), %d+%d MB; tx %+v; rx %+v",
		n, el.Round(time.Millisecond), float64(el.Nanoseconds())/float64(n), tx.Bytes>>20, rx.Bytes>>20, tx, rx)
}

// ---------------------------------------------------------------------------
// Bursts separated by idle gaps: every wake-up path, no lost wake-up.

// childEchoStats echoes every message; a typeStats message is answered with
// the child's Rx parks, Tx wake-ups sent and Rx spin budget (u64 each).
func childEchoStats(e *duplex.End, _ string) int {
	e.Rx.SetDeadline(time.Now().Add(5 * time.Minute))
	for range 1 << 30 {
		r, err := e.Rx.Peek()
		if err != nil {
			return 0
		}
		if r.Type == typeStats {
			var b [24]byte
			st := e.Rx.Stats()
			xle.PutUint64(b[0:], st.Parks)
			xle.PutUint64(b[8:], e.Tx.Stats().WakesSent)
			xle.PutUint64(b[16:], uint64(st.SpinBudget))
			err = e.Tx.Write(typeStats, b[:])
		} else {
			err = e.Tx.Write(r.Type, r.Data)
		}
		if err != nil {
			return 1
		}
		_ = e.Rx.Release()
	}
	return 1
}

func burstMessage(buf []byte, seq uint64) []byte {
	n := 8 + int(mix64(seq)%200)
	b := buf[:n]
	xle.PutUint64(b, seq)
	for j := 8; j < n; j++ {
		b[j] = byte(seq) + byte(j)
	}
	return b
}

// TestCrossProcessBurstyNoLostWakeup sends bursts of 1..50 messages separated
// by idle gaps much longer than the 2 µs spin window, so both sides park
// between bursts (and often within them), and the child echoes each message.
// With ParkTimeout an hour on both sides, a lost wake-up cannot be papered
// over by a 100 ms timeout: it shows up as a reply missing for 2 s.
func TestCrossProcessBurstyNoLostWakeup(t *testing.T) {
	opts := ring.Options{Spin: 2 * time.Microsecond, AdaptiveSpin: -1, ParkTimeout: time.Hour}
	c := startChild(t, "echostats", "", duplex.Config{Capacity: 64 << 10, Options: opts})
	const bursts = 2000
	const replyWait = 2 * time.Second
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 2))
	t.Logf("seed %d", seed)
	c.End.Tx.SetDeadline(time.Now().Add(2 * time.Minute)) // the ring never fills; a bound all the same
	start := time.Now()
	buf := make([]byte, 256)
	var seq, next uint64
	var gaps time.Duration
	for b := range bursts {
		if time.Since(start) > 90*time.Second {
			t.Fatalf("burst %d: the test has run for 90 s", b)
		}
		k := 1 + rng.IntN(50)
		staged := rng.IntN(2) == 0 // one Flush, hence at most one wake-up, for the burst
		for range k {
			msg := burstMessage(buf, seq)
			var err error
			if staged {
				err = c.End.Tx.Stage(uint16(seq%60000), msg)
			} else {
				err = c.End.Tx.Write(uint16(seq%60000), msg)
			}
			if err != nil {
				t.Fatalf("burst %d: send %d: %v", b, seq, err)
			}
			seq++
		}
		c.End.Tx.Flush()
		for j := range k {
			c.End.Rx.SetDeadline(time.Now().Add(replyWait))
			r, err := c.End.Rx.Peek()
			if errors.Is(err, ring.ErrTimeout) {
				t.Fatalf("burst %d (%d messages, staged %v): reply %d (message %d) missing after %v: lost wake-up; parent rx %+v tx %+v",
					b, k, staged, j, next, replyWait, c.End.Rx.Stats(), c.End.Tx.Stats())
			}
			if err != nil {
				t.Fatalf("burst %d: reply %d: %v", b, j, err)
			}
			if want := burstMessage(buf, next); r.Type != uint16(next%60000) || !bytes.Equal(r.Data, want) {
				t.Fatalf("burst %d: reply for message %d: type %d, %d bytes, want type %d, %d bytes",
					b, next, r.Type, len(r.Data), uint16(next%60000), len(want))
			}
			_ = c.End.Rx.Release()
			next++
		}
		gap := 50*time.Microsecond + rand.N(1950*time.Microsecond)
		gaps += gap
		time.Sleep(gap)
	}
	elapsed := time.Since(start)

	// Ask the child how often it parked.
	c.End.Rx.SetDeadline(time.Now().Add(replyWait))
	if err := c.End.Tx.Write(typeStats, nil); err != nil {
		t.Fatal(err)
	}
	r, err := c.End.Rx.Peek()
	if err != nil || r.Type != typeStats || len(r.Data) != 24 {
		t.Fatalf("stats reply: %v, type %#x, %d bytes", err, r.Type, len(r.Data))
	}
	childParks, childWakes := xle.Uint64(r.Data), xle.Uint64(r.Data[8:])
	_ = c.End.Rx.Release()

	rx, tx := c.End.Rx.Stats(), c.End.Tx.Stats()
	t.Logf("%d bursts, %d messages in %v (gaps %v); parent rx parks %d, wakes sent %d; child rx parks %d, wakes sent %d",
		bursts, seq, elapsed.Round(time.Millisecond), gaps.Round(time.Millisecond), rx.Parks, tx.WakesSent, childParks, childWakes)
	if rx.Parks == 0 {
		t.Fatalf("the parent never parked waiting for replies: the test did not exercise sleep and wake-up")
	}
	// Every gap is at least 25x the child's spin window: it parks in (nearly)
	// every one, and the parent's Flush after the gap must wake it.
	if childParks < bursts/2 || tx.WakesSent < bursts/2 {
		t.Fatalf("child parked %d times, parent sent %d wake-ups over %d gaps: sleep/wake not exercised", childParks, tx.WakesSent, bursts)
	}
}

// ---------------------------------------------------------------------------
// Peer killed: blocked waiters learn of it at once; nothing leaks.

// childStream streams sequence-numbered messages of type 1 until it gets
// typeStop, then sends typeIdle and waits for the parent (or SIGKILL).
func childStream(e *duplex.End, _ string) int {
	buf := make([]byte, 64)
	end := time.Now().Add(2 * time.Minute)
	for seq := uint64(0); seq < 1<<40; seq++ {
		msg := buf[:8+seq%56]
		xle.PutUint64(msg, seq)
		if err := e.Tx.Write(1, msg); err != nil {
			return 0
		}
		if seq%64 != 0 {
			continue
		}
		if time.Now().After(end) {
			childFail("stream: no stop after 2 minutes")
		}
		r, ok, err := e.Rx.TryPeek()
		if err != nil {
			return 0
		}
		if ok && r.Type == typeStop {
			_ = e.Rx.Release()
			if err := e.Tx.Write(typeIdle, nil); err != nil {
				return 0
			}
			e.Rx.SetDeadline(end)
			_, err := e.Rx.Peek() // nothing more comes: park until killed
			if errors.Is(err, ring.ErrTimeout) {
				childFail("stream: never killed")
			}
			return 0
		}
		if ok {
			_ = e.Rx.Release()
		}
	}
	return 0
}

// childNoRead never reads: the parent's Tx ring fills up. It waits for the
// parent to go away (or for SIGKILL).
func childNoRead(e *duplex.End, _ string) int {
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); {
		_, err := e.Tx.TryReserve(8)
		if err != nil {
			return 0 // peer gone
		}
		e.Tx.Abort()
		time.Sleep(2 * time.Millisecond)
	}
	return 1
}

// ringResources counts this process's descriptors and ring mappings.
func ringResources(t *testing.T) (fds, maps int) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents), bytes.Count(data, []byte("memfd:ringwire"))
}

// pollUntil polls cond every 200 µs for at most d.
func pollUntil(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); {
		if cond() {
			return true
		}
		time.Sleep(200 * time.Microsecond)
	}
	return cond()
}

type killResult struct {
	err error
	at  time.Time
	n   int // messages drained before the error
}

// killedBySignal reports whether the reaped child was killed by sig.
func killedBySignal(c *child, sig syscall.Signal) bool {
	ps := c.Cmd.ProcessState
	if ps == nil {
		return false
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// maxKillLatency is the bound on the time from SIGKILL (the moment Kill
// returns) to ErrPeerGone in a blocked waiter. What it measures is the
// kernel tearing the child down (exit_mmap of a Go process; more under -race,
// with its shadow memory), closing its socket, our netpoller waking the
// watcher goroutine, and the futex wake-up of the waiter.
const maxKillLatency = 100 * time.Millisecond

// TestCrossProcessPeerKilled kills the child with SIGKILL while the parent
// is parked in Rx.Peek on an empty ring, while it is not reading and the
// ring is full of published messages, and while it is parked in Tx.Reserve
// on a full ring. Each time the waiter must get ErrPeerGone within
// maxKillLatency, after every published message, and closing the End must
// give back every descriptor and mapping.
func TestCrossProcessPeerKilled(t *testing.T) {
	// Warm up: the first child lifecycle of the process creates the
	// netpoller's descriptors and the like, which would look like leaks.
	w := startChild(t, "echo", "", duplex.Config{Capacity: 1 << 16})
	w.End.Rx.SetDeadline(time.Now().Add(5 * time.Second))
	if err := w.End.Tx.Write(1, []byte("warm")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.End.Rx.Read(make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	_ = w.End.Close()
	if err := w.Wait(5 * time.Second); err != nil {
		t.Fatalf("warm-up child: %v", err)
	}

	opts := ring.Options{ParkTimeout: time.Hour} // only the wake-up can end a park
	cfg := duplex.Config{Capacity: 1 << 16, Options: opts}

	// drain reads and checks streamed messages until an error, which it
	// reports with the time it came.
	drain := func(c *child, next *uint64, idle bool) killResult {
		var res killResult
		for res.n = 0; res.n < 1<<20; res.n++ {
			r, err := c.End.Rx.Peek()
			if err != nil {
				return killResult{err: err, at: time.Now(), n: res.n}
			}
			if r.Type == typeIdle && !idle {
				return killResult{err: errors.New("unexpected idle marker"), at: time.Now(), n: res.n}
			}
			if r.Type == 1 && (len(r.Data) < 8 || xle.Uint64(r.Data) != *next || len(r.Data) != 8+int(*next%56)) {
				return killResult{err: fmt.Errorf("message %d: %d bytes, bad sequence", *next, len(r.Data)), at: time.Now(), n: res.n}
			}
			*next++
			_ = c.End.Rx.Release()
		}
		return killResult{err: errors.New("drained 1<<20 messages without an error"), at: time.Now(), n: res.n}
	}

	// kill kills c and returns the moment Kill returned.
	kill := func(c *child) time.Time {
		if err := c.Cmd.Process.Kill(); err != nil {
			t.Fatalf("kill: %v", err)
		}
		return time.Now()
	}

	// reap reaps a killed child, closes our End and checks that
	// descriptors and mappings are back to the baseline.
	reap := func(c *child, fds0, maps0 int) {
		if err := c.Wait(5 * time.Second); err == nil || !killedBySignal(c, syscall.SIGKILL) {
			t.Fatalf("child was not killed by SIGKILL: %v", err)
		}
		if err := c.End.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		fds, maps := ringResources(t)
		if fds != fds0 || maps != maps0 {
			t.Fatalf("leak: %d descriptors and %d ring mappings after Close, %d and %d before the child", fds, maps, fds0, maps0)
		}
	}

	readSome := func(c *child, next *uint64) {
		c.End.Rx.SetDeadline(time.Now().Add(10 * time.Second))
		for range 5000 {
			r, err := c.End.Rx.Peek()
			if err != nil {
				t.Fatalf("streamed message %d: %v", *next, err)
			}
			if r.Type != 1 || xle.Uint64(r.Data) != *next {
				t.Fatalf("streamed message %d: type %d seq %d", *next, r.Type, xle.Uint64(r.Data))
			}
			*next++
			_ = c.End.Rx.Release()
		}
	}

	t.Run("ParkedInPeek", func(t *testing.T) {
		fds0, maps0 := ringResources(t)
		if maps0 != 0 {
			t.Logf("%d ring mappings before the child", maps0)
		}
		c := startChild(t, "stream", "", cfg)
		var next uint64
		readSome(c, &next)
		// Stop the stream and read up to the marker: the ring is empty.
		if err := c.End.Tx.Write(typeStop, nil); err != nil {
			t.Fatal(err)
		}
		for i := 0; ; i++ {
			r, err := c.End.Rx.Peek()
			if err != nil || i > 1<<20 {
				t.Fatalf("waiting for the idle marker: %v after %d messages", err, i)
			}
			typ := r.Type
			_ = c.End.Rx.Release()
			if typ == typeIdle {
				break
			}
			next++
		}
		parks0 := c.End.Rx.Stats().Parks
		done := make(chan killResult, 1)
		c.End.Rx.SetDeadline(time.Now().Add(20 * time.Second)) // only bounds a failure
		go func() { done <- drain(c, &next, false) }()
		if !pollUntil(5*time.Second, func() bool { return c.End.Rx.Stats().Parks > parks0 }) {
			t.Fatal("the reader never parked on the empty ring")
		}
		select {
		case r := <-done:
			t.Fatalf("Peek returned before the kill: %v", r.err)
		default:
		}
		at := kill(c)
		var r killResult
		select {
		case r = <-done:
		case <-time.After(30 * time.Second):
			panic("Peek did not return") // the deadline guarantees it does
		}
		lat := r.at.Sub(at)
		t.Logf("kill to ErrPeerGone in a parked Peek: %v (%d messages drained)", lat, r.n)
		if !errors.Is(r.err, ring.ErrPeerGone) {
			t.Fatalf("Peek after the kill: %v, want ErrPeerGone", r.err)
		}
		if r.n != 0 {
			t.Fatalf("%d messages arrived after the idle marker", r.n)
		}
		if lat > maxKillLatency {
			t.Errorf("ErrPeerGone came %v after the kill, want <= %v", lat, maxKillLatency)
		}
		reap(c, fds0, maps0)
	})

	t.Run("FullRingDrained", func(t *testing.T) {
		fds0, maps0 := ringResources(t)
		c := startChild(t, "stream", "", cfg)
		var next uint64
		readSome(c, &next)
		// Stop reading: the child fills the ring and blocks in Write.
		// Watch the ring's counters (tail at offset 128, head at 256) until
		// less than a large record's worth is free.
		mem := c.End.Memory(1)
		if !pollUntil(5*time.Second, func() bool {
			return xle.Uint64(mem[128:])-xle.Uint64(mem[256:]) > uint64(c.End.Rx.Capacity()-256)
		}) {
			t.Fatal("the child never filled the ring")
		}
		at := kill(c)
		c.End.Rx.SetDeadline(time.Now().Add(20 * time.Second))
		r := drain(c, &next, false)
		lat := r.at.Sub(at)
		t.Logf("kill to ErrPeerGone after draining %d published messages: %v", r.n, lat)
		if !errors.Is(r.err, ring.ErrPeerGone) {
			t.Fatalf("after the kill: %v after %d messages, want ErrPeerGone", r.err, r.n)
		}
		if r.n < 1000 {
			t.Fatalf("only %d messages were drained from a full ring", r.n)
		}
		if lat > maxKillLatency {
			t.Errorf("ErrPeerGone came %v after the kill, want <= %v", lat, maxKillLatency)
		}
		reap(c, fds0, maps0)
	})

	t.Run("ParkedInReserve", func(t *testing.T) {
		fds0, maps0 := ringResources(t)
		c := startChild(t, "noread", "", cfg)
		full := false
		for range 1 << 16 {
			buf, err := c.End.Tx.TryReserve(1000)
			if errors.Is(err, ring.ErrFull) {
				full = true
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			buf[0] = 1
			if err := c.End.Tx.Commit(1, len(buf)); err != nil {
				t.Fatal(err)
			}
		}
		if !full {
			t.Fatal("the ring never filled")
		}
		c.End.Tx.Flush()
		parks0 := c.End.Tx.Stats().Parks
		c.End.Tx.SetDeadline(time.Now().Add(20 * time.Second)) // only bounds a failure
		done := make(chan killResult, 1)
		go func() {
			_, err := c.End.Tx.Reserve(1000)
			done <- killResult{err: err, at: time.Now()}
		}()
		if !pollUntil(5*time.Second, func() bool { return c.End.Tx.Stats().Parks > parks0 }) {
			t.Fatal("the writer never parked on the full ring")
		}
		select {
		case r := <-done:
			t.Fatalf("Reserve returned before the kill: %v", r.err)
		default:
		}
		at := kill(c)
		var r killResult
		select {
		case r = <-done:
		case <-time.After(30 * time.Second):
			panic("Reserve did not return")
		}
		lat := r.at.Sub(at)
		t.Logf("kill to ErrPeerGone in a parked Reserve: %v", lat)
		if !errors.Is(r.err, ring.ErrPeerGone) {
			t.Fatalf("Reserve after the kill: %v, want ErrPeerGone", r.err)
		}
		if lat > maxKillLatency {
			t.Errorf("ErrPeerGone came %v after the kill, want <= %v", lat, maxKillLatency)
		}
		reap(c, fds0, maps0)
	})
}

// TestCrossProcessCloseAfterPeerGone closes the End as soon as a waiter has
// seen ErrPeerGone, many times. The liveness watcher wakes the Tx waiter
// first and the Rx waiter after it, so Close can run while the watcher is
// still inside End.PeerGone; Close must not unmap the rings under it (it did:
// SIGSEGV in the watcher goroutine, in the Rx bell's kick).
func TestCrossProcessCloseAfterPeerGone(t *testing.T) {
	rounds := 150
	if raceEnabled {
		rounds = 60
	}
	cfg := duplex.Config{Capacity: 1 << 12, Options: ring.Options{ParkTimeout: time.Hour}}
	for i := range rounds {
		c := startChild(t, "noread", "", cfg)
		for range 1 << 10 {
			buf, err := c.End.Tx.TryReserve(100)
			if err != nil {
				break
			}
			_ = c.End.Tx.Commit(1, len(buf))
		}
		c.End.Tx.SetDeadline(time.Now().Add(10 * time.Second))
		done := make(chan error, 1)
		go func() {
			_, err := c.End.Tx.Reserve(100)
			done <- err
		}()
		if err := c.Cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			panic("Reserve ignores its deadline")
		}
		if !errors.Is(err, ring.ErrPeerGone) {
			t.Fatalf("round %d: Reserve: %v, want ErrPeerGone", i, err)
		}
		if err := c.End.Close(); err != nil {
			t.Fatalf("round %d: close: %v", i, err)
		}
		if err := c.Wait(5 * time.Second); !killedBySignal(c, syscall.SIGKILL) {
			t.Fatalf("round %d: child: %v", i, err)
		}
	}
}

// ---------------------------------------------------------------------------
// A hostile peer scribbling over the shared memory.

// childScribble writes random bytes all over both rings (header, counters,
// bells, data), interleaved with valid messages, for at most the given number
// of milliseconds. The parent kills it once it has seen enough.
func childScribble(e *duplex.End, arg string) int {
	f := strings.Split(arg, ":")
	ms, err1 := strconv.Atoi(f[0])
	seed, err2 := strconv.ParseUint(f[len(f)-1], 10, 64)
	if len(f) != 2 || err1 != nil || err2 != nil {
		childFail("scribble: bad argument %q", arg)
	}
	mem := [2][]byte{e.Memory(0), e.Memory(1)}
	if mem[0] == nil || mem[1] == nil {
		childFail("scribble: no memory")
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	end := time.Now().Add(time.Duration(ms) * time.Millisecond)
	_ = e.Tx.Write(9, []byte("hello")) // the parent's round starts when it reads something
	for it := 0; it < 1<<30; it++ {
		if it%256 == 0 {
			if time.Now().After(end) {
				return 0
			}
			runtime.Gosched()
		}
		seg := mem[rng.IntN(2)]
		switch r := rng.IntN(100); {
		case r < 40: // a valid message, if our producer still works
			n := rng.IntN(600)
			if rng.IntN(50) == 0 {
				// Fragmented; the deadline keeps a full ring from
				// stopping the scribbling.
				e.Tx.SetDeadline(time.Now().Add(time.Millisecond))
				_ = e.Tx.Write(2, make([]byte, e.Tx.MaxRecord()*2+n))
				continue
			}
			buf, err := e.Tx.TryReserve(n)
			if err != nil {
				continue
			}
			for i := range buf {
				buf[i] = byte(i)
			}
			_ = e.Tx.Commit(uint16(rng.IntN(8)), n)
			if rng.IntN(4) == 0 {
				e.Tx.Flush()
			}
		case r < 60: // header, counters and bells: random words, often plausible ones
			off := rng.IntN(ring.HeaderSize/8) * 8
			v := rng.Uint64()
			if rng.IntN(2) == 0 {
				v = xle.Uint64(seg[off:]) + uint64(rng.IntN(64)*8) - 256
			}
			xle.PutUint64(seg[off:], v)
		case r < 95: // data: random words or plausible record headers
			off := ring.HeaderSize + rng.IntN((len(seg)-ring.HeaderSize)/8)*8
			v := rng.Uint64()
			if rng.IntN(2) == 0 {
				v = uint64(rng.IntN(1<<15)) | uint64(rng.IntN(4))<<32 | uint64(rng.IntN(8))<<48
			}
			xle.PutUint64(seg[off:], v)
		default: // a run of random bytes anywhere
			n := 1 + rng.IntN(4096)
			off := rng.IntN(len(seg) - n + 1)
			for i := range n {
				seg[off+i] = byte(rng.Uint32())
			}
		}
	}
	return 0
}

type scribbleOutcome struct {
	err      error
	ops      int
	panicked any
}

// TestCrossProcessHostileScribbler runs the parent's consumer and producer
// against a child that scribbles over both rings. Every round must end in an
// error wrapping ErrCorrupt (most rounds), ErrTimeout or ErrPeerGone, never in
// a panic or a hang; afterwards the process works normally with a fresh child.
func TestCrossProcessHostileScribbler(t *testing.T) {
	const rounds = 40
	// A round lasts roundTime from the first message the parent reads (the
	// child's hello, or whatever the scribbling made of it); startTime
	// bounds the wait for it, as a loaded machine can take a while to start
	// a child.
	const roundTime, startTime = 2 * time.Second, 20 * time.Second
	opts := ring.Options{MaxMessage: 1 << 20}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 4))
	classify := func(err error) string {
		switch {
		case errors.Is(err, ring.ErrCorrupt):
			return "corrupt"
		case errors.Is(err, ring.ErrTimeout):
			return "timeout"
		case errors.Is(err, ring.ErrPeerGone):
			return "peergone"
		}
		return ""
	}
	readers, writers := map[string]int{}, map[string]int{}
	var lastCorrupt error
	for round := range rounds {
		c := startChild(t, "scribble", fmt.Sprintf("%d:%d", 5000, rng.Uint64()), duplex.Config{Capacity: 64 << 10, Options: opts})
		dl := time.Now().Add(startTime)
		c.End.Rx.SetDeadline(dl)
		c.End.Tx.SetDeadline(dl)
		started := false
		start := func() {
			if !started {
				started = true
				dl = time.Now().Add(roundTime)
				c.End.Rx.SetDeadline(dl)
				c.End.Tx.SetDeadline(dl) // safe while the writer waits
			}
		}
		wrote := make(chan scribbleOutcome, 1)
		go func() {
			var o scribbleOutcome
			defer func() {
				if p := recover(); p != nil {
					o.panicked = p
				}
				wrote <- o
			}()
			big := make([]byte, 3*c.End.Tx.MaxRecord())
			for o.ops = 0; o.ops < 1<<20; o.ops++ {
				n := o.ops % 1500
				if o.ops%97 == 0 {
					n = len(big)
				}
				if o.err = c.End.Tx.Write(uint16(o.ops), big[:n]); o.err != nil {
					return
				}
			}
		}()
		var rd scribbleOutcome
		func() {
			defer func() {
				if p := recover(); p != nil {
					rd.panicked = p
				}
			}()
			buf := make([]byte, opts.MaxMessage)
			for rd.ops = 0; rd.ops < 1<<20; rd.ops++ {
				if rd.ops%1024 == 0 && time.Now().After(dl.Add(time.Second)) {
					return // still reading plausible garbage: no error
				}
				if rd.ops%2 == 0 {
					var n int
					if _, n, rd.err = c.End.Rx.Read(buf); rd.err != nil {
						return
					}
					if n > opts.MaxMessage {
						rd.err = fmt.Errorf("read %d bytes, more than MaxMessage", n)
						return
					}
					start()
					continue
				}
				var r ring.Record
				if r, rd.err = c.End.Rx.Peek(); rd.err != nil {
					return
				}
				if len(r.Data) > opts.MaxMessage {
					rd.err = fmt.Errorf("peeked %d bytes, more than MaxMessage", len(r.Data))
					return
				}
				if rd.err = c.End.Rx.Release(); rd.err != nil {
					return
				}
				start()
			}
		}()
		var wr scribbleOutcome
		select {
		case wr = <-wrote:
		case <-time.After(startTime + roundTime + 10*time.Second):
			panic("scribbler round: Tx.Write hangs past its deadline")
		}
		_ = c.Cmd.Process.Kill()
		_ = c.Wait(5 * time.Second)
		if err := c.End.Close(); err != nil {
			t.Errorf("round %d: close: %v", round, err)
		}
		if rd.panicked != nil || wr.panicked != nil {
			t.Fatalf("round %d: panic: reader %v, writer %v", round, rd.panicked, wr.panicked)
		}
		rk, wk := classify(rd.err), classify(wr.err)
		if rk == "" {
			t.Fatalf("round %d: reader ended after %d operations with %v, want ErrCorrupt, ErrTimeout or ErrPeerGone", round, rd.ops, rd.err)
		}
		if wk == "" {
			t.Fatalf("round %d: writer ended after %d writes with %v, want ErrCorrupt, ErrTimeout or ErrPeerGone", round, wr.ops, wr.err)
		}
		readers[rk]++
		writers[wk]++
		if rk == "corrupt" {
			lastCorrupt = rd.err
		}
	}
	t.Logf("reader outcomes %v, writer outcomes %v; last: %v", readers, writers, lastCorrupt)
	if readers["corrupt"] == 0 || readers["corrupt"] < rounds*3/4 {
		t.Fatalf("the reader saw ErrCorrupt in %d of %d rounds, want at least %d", readers["corrupt"], rounds, rounds*3/4)
	}
	if writers["corrupt"] == 0 {
		t.Fatalf("the writer never saw ErrCorrupt in %d rounds", rounds)
	}

	// The process is unharmed: a fresh child, a clean echo exchange.
	c := startChild(t, "echo", "", duplex.Config{Capacity: 64 << 10})
	s := newCheckedStream(seed, 0, c.End.Tx.MaxRecord())
	c.End.Rx.SetDeadline(time.Now().Add(20 * time.Second))
	c.End.Tx.SetDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 8*s.maxRecord+16)
	for i := range uint64(3000) {
		sz := s.size(i)
		if i%500 == 0 {
			sz = s.maxRecord*3 + int(i) // fragmented too
		}
		msg := buf[:sz]
		s.fill(msg, i)
		if err := c.End.Tx.Write(uint16(i), msg); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		r, err := c.End.Rx.Peek()
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if r.Type != uint16(i) || !bytes.Equal(r.Data, msg) {
			t.Fatalf("echo %d: type %d, %d bytes, want %d bytes", i, r.Type, len(r.Data), len(msg))
		}
		_ = c.End.Rx.Release()
	}
}

// ---------------------------------------------------------------------------
// Idle CPU.

const userHZTick = 10 * time.Millisecond // USER_HZ (sysconf CLK_TCK) is 100 on Linux

// procStatCPU is the user+system time of process pid from /proc/<pid>/stat
// (fields 14 and 15, in clock ticks).
func procStatCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, data)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, data)
	}
	// f[0] is field 3 (state), so fields 14 and 15 are f[11] and f[12].
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, data)
	}
	return time.Duration(ut+st) * userHZTick, nil
}

// procSchedCPU is the time the threads of process pid have spent on a CPU,
// summed from /proc/<pid>/task/*/schedstat (nanoseconds, unlike the ticks of
// /proc/<pid>/stat). Threads that exited are missing, so it can only
// under-count a delta if one exits in between; Go rarely ends threads.
func procSchedCPU(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, e := range ents {
		data, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue // the thread is gone
		}
		f := strings.Fields(string(data))
		if len(f) < 1 {
			return 0, fmt.Errorf("%s/%s/schedstat: %q", dir, e.Name(), data)
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s/%s/schedstat: %q", dir, e.Name(), data)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// rusageSelfCPU is this process's user+system time, all threads.
func rusageSelfCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// cpuSample is both processes' CPU time at one moment.
type cpuSample struct {
	parent, childStat, childSched time.Duration
	schedOK                       bool
}

func sampleCPU(t *testing.T, pid int) cpuSample {
	t.Helper()
	var s cpuSample
	var err error
	if s.parent, err = rusageSelfCPU(); err != nil {
		t.Fatal(err)
	}
	if s.childStat, err = procStatCPU(pid); err != nil {
		t.Fatal(err)
	}
	s.childSched, err = procSchedCPU(pid)
	s.schedOK = err == nil
	return s
}

// TestIdleCPU checks that once traffic stops both sides park: after a paced
// exchange that widens the adaptive spin windows, one idle second (the parent
// in Rx.Peek with a deadline, the child in its Peek) may cost both processes
// together less than 50 ms of CPU.
func TestIdleCPU(t *testing.T) {
	c := startChild(t, "echostats", "", duplex.Config{Capacity: 64 << 10})
	c.End.Rx.SetDeadline(time.Now().Add(30 * time.Second))
	c.End.Tx.SetDeadline(time.Now().Add(30 * time.Second))
	// A message every ~30 µs for a while, one way: the child's wait for the
	// next one lasts about that long, so its spin window grows towards
	// DefaultAdaptiveSpin. The parent collects the echoes without waiting
	// (a ping-pong would make the child's waits include the parent's
	// wake-ups, too long to widen anything on a slow machine). Then the
	// traffic stops dead. On a busy machine preemptions inflate the
	// observed waits (a window widens only while their moving average stays
	// under DefaultAdaptiveSpin), so there are several rounds with different
	// paces, 4 s at most.
	msg := make([]byte, 64)
	var childBudget time.Duration
	for round, us := range []int{30, 20, 40, 15, 50, 25, 60, 35} {
		pace := time.Duration(us) * time.Microsecond
		sent, got := 0, 0
		collect := func() {
			for got < sent {
				r, ok, err := c.End.Rx.TryPeek()
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					return
				}
				if len(r.Data) != len(msg) {
					t.Fatalf("echo of %d bytes", len(r.Data))
				}
				_ = c.End.Rx.Release()
				got++
			}
		}
		warm := time.Now().Add(500 * time.Millisecond)
		for ; sent < 20000 && time.Now().Before(warm); sent++ {
			if err := c.End.Tx.Write(uint16(sent), msg); err != nil {
				t.Fatal(err)
			}
			for until := time.Now().Add(pace); time.Now().Before(until); {
				collect()
			}
		}
		for got < sent {
			if _, _, err := c.End.Rx.Read(msg); err != nil {
				t.Fatalf("echo %d of %d: %v", got, sent, err)
			}
			got++
		}
		if err := c.End.Tx.Write(typeStats, nil); err != nil {
			t.Fatal(err)
		}
		r, err := c.End.Rx.Peek()
		if err != nil || r.Type != typeStats || len(r.Data) != 24 {
			t.Fatalf("stats reply: %v, type %#x, %d bytes", err, r.Type, len(r.Data))
		}
		childBudget = time.Duration(xle.Uint64(r.Data[16:]))
		_ = c.End.Rx.Release()
		if childBudget > ring.DefaultSpin {
			break
		}
		t.Logf("warm-up round %d (a message every %v): the child's spin window is %v", round, pace, childBudget)
	}
	t.Logf("spin windows after the exchange: parent rx %v, child rx %v (base %v, adaptive max %v)",
		time.Duration(c.End.Rx.Stats().SpinBudget), childBudget, ring.DefaultSpin, ring.DefaultAdaptiveSpin)
	if childBudget <= ring.DefaultSpin {
		// Not a failure: the windows rightly stay at their base when the
		// machine is too busy (or, under -race, too slow) for paced traffic,
		// and the idle measurement below still holds.
		t.Logf("the child's spin window did not widen: the machine is too busy for paced traffic")
	}

	// Collect and return memory to the OS now, not in the idle second: this
	// measures the rings, not the garbage collector or the background
	// scavenger (about 1% of a CPU) cleaning up after the tests before.
	debug.FreeOSMemory()
	deadline := time.Now().Add(1300 * time.Millisecond)
	c.End.Rx.SetDeadline(deadline)
	type peekResult struct {
		err error
		at  time.Time
	}
	done := make(chan peekResult, 1)
	go func() {
		_, err := c.End.Rx.Peek()
		done <- peekResult{err, time.Now()}
	}()
	time.Sleep(100 * time.Millisecond) // both sides are past their spin windows
	pid := c.Cmd.Process.Pid
	s0 := sampleCPU(t, pid)
	t0 := time.Now()
	time.Sleep(time.Second)
	s1 := sampleCPU(t, pid)
	t1 := time.Now()
	idle := t1.Sub(t0)
	var pr peekResult
	select {
	case pr = <-done:
	case <-time.After(10 * time.Second):
		panic("Peek ignores its deadline")
	}
	if !errors.Is(pr.err, ring.ErrTimeout) {
		t.Fatalf("idle Peek: %v, want ErrTimeout", pr.err)
	}
	if pr.at.Before(deadline) {
		t.Fatalf("idle Peek timed out %v before its deadline", deadline.Sub(pr.at))
	}
	if pr.at.Before(t1) {
		// Only a badly overloaded machine oversleeps by 200 ms; the
		// measurement still covers an idle parent.
		t.Logf("the last sample came %v after the Peek's deadline (the machine is busy)", t1.Sub(pr.at))
	}
	parent := s1.parent - s0.parent
	childCPU := s1.childStat - s0.childStat
	sched := s1.childSched - s0.childSched
	// /proc/<pid>/stat truncates utime and stime to ticks separately, so its
	// delta is off by up to two ticks either way; the threads' schedstat is
	// exact but would miss a thread that exited. Take schedstat unless stat
	// says clearly (beyond its rounding) more.
	if s0.schedOK && s1.schedOK && childCPU <= sched+2*userHZTick {
		childCPU = sched
	}
	total := parent + childCPU
	t.Logf("CPU over %v idle: parent %v (getrusage), child %v (/proc stat, %v ticks) / %v (schedstat); total %v",
		idle.Round(time.Millisecond), parent, s1.childStat-s0.childStat, userHZTick, sched, total)
	if total >= 50*time.Millisecond {
		t.Fatalf("the idle second cost %v of CPU (parent %v, child %v), want < 50ms", total, parent, childCPU)
	}
}
