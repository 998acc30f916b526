package transport

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/sendparts"
)

// Tests of the bounded send path (framed_send.go): a peer that stops reading
// costs a sender at most its bound, and the connection at most the send
// budget plus one send.

// framedTLSPair returns framed conns over TCP loopback inside mutual TLS,
// the dialling (client) end first.
func framedTLSPair(t testing.TB, o framedOptions) (*framedConn, *framedConn) {
	t.Helper()
	ra, rb := framedTCPPair(t)
	sc, err := ca(t).ServerConfig("server", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := ca(t).ClientConfig("client", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cli, srv := tls.Client(ra, cc), tls.Server(rb, sc)
	deadline := time.Now().Add(10 * time.Second)
	ra.SetDeadline(deadline)
	rb.SetDeadline(deadline)
	hs := make(chan error, 1)
	go func() { hs <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-hs; err != nil {
		t.Fatal(err)
	}
	if len(srv.ConnectionState().PeerCertificates) == 0 {
		t.Fatal("the server did not get the client's certificate")
	}
	ra.SetDeadline(time.Time{})
	rb.SetDeadline(time.Time{})
	o.Kind, o.Info.TLS = KindTCP, true
	a, b := newFramed(cli, o), newFramed(srv, o)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// framedForStalls runs f on a fresh pair of every carrier the stall tests
// cover: framed Unix and framed TCP inside mutual TLS, each with every codec.
func framedForStalls(t *testing.T, f func(t *testing.T, a, b *framedConn)) {
	for _, kind := range []string{"unix", "tls"} {
		for _, comp := range framedComps {
			t.Run(fmt.Sprintf("net=%s/comp=%s", kind, comp), func(t *testing.T) {
				o := framedOptions{Kind: KindUnix, Compression: comp}
				var a, b *framedConn
				if kind == "tls" {
					a, b = framedTLSPair(t, o)
				} else {
					a, b = framedPair(t, "unix", o)
				}
				f(t, a, b)
			})
		}
	}
}

// The stall tests' messages: the queue is filled with small ones, so that
// afterwards there is less room than any message takes (compressed or not),
// and the tests go on with large ones.
const (
	framedFillSize = 1 << 10
	framedSeqSize  = 64 << 10
	framedFillMax  = 1 << 20 // more small messages than any socket holds
)

// framedSeqMsg returns message seq of a checkable stream: JSON-like (so the
// codecs compress it) or random bytes, with seq in the first 8 bytes; seqs
// below framedFillMax are the small ones.
func framedSeqMsg(seq int) []byte {
	pool := framedRandPool
	if seq%2 == 0 {
		pool = framedJSONPool
	}
	size := framedSeqSize
	if seq < framedFillMax {
		size = framedFillSize
	}
	off := seq * 7919 % (len(pool) - size)
	b := append([]byte(nil), pool[off:off+size]...)
	binary.LittleEndian.PutUint64(b, uint64(seq))
	return b
}

// framedSendSeq sends message seq with SendPartsUntil, as two parts.
func framedSendSeq(c *framedConn, deadline time.Time, cancel <-chan struct{}, seq int) error {
	m := framedSeqMsg(seq)
	return c.SendPartsUntil(deadline, cancel, uint16(seq), m[:100], m[100:])
}

// framedCheckSeq reports whether m is message seq, whole.
func framedCheckSeq(m Message, seq int) error {
	if m.Type != uint16(seq) || !bytes.Equal(m.Data, framedSeqMsg(seq)) {
		got := -1
		if len(m.Data) >= 8 {
			got = int(binary.LittleEndian.Uint64(m.Data))
		}
		return fmt.Errorf("got type %d, %d bytes (seq %d); want message %d whole", m.Type, len(m.Data), got, seq)
	}
	return nil
}

// framedFill sends small messages from seq on, each allowed 50 ms to find
// room, until one times out: then the send queue is full (no message fits)
// and stays full while the peer does not read. It returns the first seq not
// sent.
func framedFill(t testing.TB, c *framedConn, seq int) int {
	t.Helper()
	for start := time.Now(); ; seq++ {
		if seq >= framedFillMax {
			t.Fatal("the send queue never filled")
		}
		err := framedSendSeq(c, time.Now().Add(50*time.Millisecond), nil, seq)
		if errors.Is(err, ErrTimeout) {
			return seq
		}
		if err != nil {
			t.Fatalf("filling, message %d: %v", seq, err)
		}
		if time.Since(start) > framedTestDeadline {
			t.Fatal("the send queue never filled")
		}
	}
}

// framedRecvSeqs receives messages from..to-1 in order, checking each.
func framedRecvSeqs(c *framedConn, from, to int) error {
	for seq := from; seq < to; seq++ {
		m, err := c.Recv()
		if err != nil {
			return fmt.Errorf("message %d: %w", seq, err)
		}
		if err := framedCheckSeq(m, seq); err != nil {
			return err
		}
	}
	return nil
}

// framedWaitWaiters waits until n senders wait for room on c.
func framedWaitWaiters(t testing.TB, c *framedConn, n int) {
	t.Helper()
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		c.wmu.Lock()
		got := len(c.waiters)
		c.wmu.Unlock()
		if got == n {
			return
		}
		if time.Since(start) > framedTestDeadline {
			t.Fatalf("%d senders wait for room, want %d", got, n)
		}
	}
}

// framedWriters counts the goroutines running a framed writer loop.
func framedWriters() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "(*framedConn).writeLoop")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// framedCheckTimeout asserts err is a timeout as net code tests for one.
func framedCheckTimeout(t *testing.T, what string, err error) {
	t.Helper()
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("%s: got %T %v, want a net.Error whose Timeout() is true", what, err, err)
	}
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: %v does not match ErrTimeout and os.ErrDeadlineExceeded", what, err)
	}
}

// framedSlack is how far past its bound a send may return. The bound covers
// waiting, not the CPU work before it (compressing the message): under the
// race detector eight concurrent ZSTD sends on two CPUs take longer than that.
var framedSlack = func() time.Duration {
	if framedRaceEnabled() {
		return 250 * time.Millisecond
	}
	return 50 * time.Millisecond
}()

// TestFramedSendStalledPeer: a peer that stops reading. A send bounded by a
// deadline or a cancel channel gives up in time having sent nothing; what was
// accepted before arrives whole and in order once the peer reads again, and
// the connection goes on working.
func TestFramedSendStalledPeer(t *testing.T) {
	framedForStalls(t, func(t *testing.T, a, b *framedConn) {
		next := framedFill(t, a, 0)
		big := framedFillMax // the large messages' first seq

		start := time.Now()
		err := framedSendSeq(a, start.Add(100*time.Millisecond), nil, big)
		d := time.Since(start)
		framedCheckTimeout(t, "send with a 100ms deadline", err)
		if d < 100*time.Millisecond || d > 100*time.Millisecond+framedSlack {
			t.Fatalf("send with a 100ms deadline returned after %v", d)
		}

		cancel := make(chan struct{})
		start = time.Now() // before the timer is armed: it cannot fire earlier
		time.AfterFunc(100*time.Millisecond, func() { close(cancel) })
		err = framedSendSeq(a, time.Time{}, cancel, big)
		d = time.Since(start)
		if !errors.Is(err, ErrCanceled) {
			t.Fatalf("send cancelled after 100ms: %v", err)
		}
		if d < 100*time.Millisecond || d > 100*time.Millisecond+framedSlack {
			t.Fatalf("send cancelled after 100ms returned after %v", d)
		}

		// A cancel channel closed already, and sendparts.NoWait, on a full queue: one
		// attempt, and no waiting.
		start = time.Now()
		if err := framedSendSeq(a, time.Time{}, cancel, big); !errors.Is(err, ErrCanceled) {
			t.Fatalf("send with a closed cancel channel: %v", err)
		}
		if err := framedSendSeq(a, sendparts.NoWait, nil, big); !errors.Is(err, ErrTimeout) {
			t.Fatalf("send with sendparts.NoWait into a full queue: %v", err)
		}
		if d := time.Since(start); d > framedSlack {
			t.Fatalf("sends that may not wait took %v", d)
		}
		if w := a.Stats().MessagesSent; w != uint64(next) {
			t.Fatalf("%d messages sent, want the %d accepted", w, next)
		}

		// The peer reads again: every accepted message, then the next ones.
		b.SetReadDeadline(time.Now().Add(framedTestDeadline))
		got := make(chan error, 1)
		go func() {
			err := framedRecvSeqs(b, 0, next)
			if err == nil {
				err = framedRecvSeqs(b, big, big+3)
			}
			got <- err
		}()
		for seq := big; seq < big+2; seq++ {
			if err := framedSendSeq(a, time.Now().Add(framedTestDeadline), nil, seq); err != nil {
				t.Fatalf("send %d after the peer resumed: %v", seq, err)
			}
		}
		// With room, a closed cancel channel (like sendparts.NoWait) still sends.
		framedIdle(t, a)
		if err := framedSendSeq(a, time.Time{}, cancel, big+2); err != nil {
			t.Fatalf("send with a closed cancel channel and room: %v", err)
		}
		if err := <-got; err != nil {
			t.Fatal(err)
		}
		t.Logf("%d messages of %d bytes accepted while the peer did not read; most held %d bytes", next, framedFillSize, a.wpeak)

		// And both ways still.
		if err := b.Send(7, []byte("back")); err != nil {
			t.Fatal(err)
		}
		a.SetReadDeadline(time.Now().Add(framedTestDeadline))
		if m, err := a.Recv(); err != nil || m.Type != 7 || string(m.Data) != "back" {
			t.Fatalf("reply: %d %q, %v", m.Type, m.Data, err)
		}
	})
}

// TestFramedWriteDeadlineStaysUsable: a write deadline that passes while
// sends wait for a peer that does not read returns a timeout net.Error, over
// TLS too, and the connection stays usable: after clearing the deadline the
// peer receives every accepted message intact.
func TestFramedWriteDeadlineStaysUsable(t *testing.T) {
	framedForStalls(t, func(t *testing.T, a, b *framedConn) {
		next := framedFill(t, a, 0)
		big := framedFillMax
		deadline := time.Now().Add(100 * time.Millisecond)
		a.SetWriteDeadline(deadline)
		err := a.Send(uint16(big), framedSeqMsg(big))
		framedCheckTimeout(t, "Send past the write deadline", err)
		if late := time.Since(deadline); late > framedSlack {
			t.Fatalf("Send returned %v after the write deadline", late)
		}

		// A deadline moved into the past wakes a waiting send.
		a.SetWriteDeadline(time.Time{})
		errc := make(chan error, 1)
		go func() { errc <- a.Send(uint16(big), framedSeqMsg(big)) }()
		framedWaitWaiters(t, a, 1)
		a.SetWriteDeadline(framedPast)
		select {
		case err := <-errc:
			framedCheckTimeout(t, "waiting Send, deadline set in the past", err)
		case <-time.After(time.Second):
			t.Fatal("a waiting Send ignored a deadline set in the past")
		}

		a.SetWriteDeadline(time.Time{})
		b.SetReadDeadline(time.Now().Add(framedTestDeadline))
		got := make(chan error, 1)
		go func() {
			err := framedRecvSeqs(b, 0, next)
			if err == nil {
				err = framedRecvSeqs(b, big, big+10)
			}
			got <- err
		}()
		for seq := big; seq < big+10; seq++ {
			if err := a.Send(uint16(seq), framedSeqMsg(seq)); err != nil {
				t.Fatalf("Send %d after clearing the deadline: %v", seq, err)
			}
		}
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	})
}

// TestFramedSendConcurrentDeadlines: senders with different deadlines wait
// on a stalled peer; the short ones time out, the long ones go out once the
// peer reads again, and the stream stays framed.
func TestFramedSendConcurrentDeadlines(t *testing.T) {
	framedForStalls(t, func(t *testing.T, a, b *framedConn) {
		next := framedFill(t, a, 0)
		type result struct {
			seq   int
			short bool
			err   error
			took  time.Duration
		}
		results := make(chan result, 8)
		for i := range 8 {
			seq, short := framedFillMax+i, i%2 == 0
			bound := framedTestDeadline
			if short {
				bound = 100 * time.Millisecond
			}
			go func() {
				start := time.Now()
				err := framedSendSeq(a, start.Add(bound), nil, seq)
				results <- result{seq, short, err, time.Since(start)}
			}()
		}
		// The four short ones give up while the peer is stalled.
		for range 4 {
			select {
			case r := <-results:
				if !r.short || !errors.Is(r.err, ErrTimeout) || r.took > 100*time.Millisecond+framedSlack {
					t.Fatalf("message %d (short %v): %v after %v", r.seq, r.short, r.err, r.took)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("short sends did not time out")
			}
		}
		framedWaitWaiters(t, a, 4)
		// The peer resumes: the accepted messages in order, then the four
		// long senders' in some order, each whole.
		b.SetReadDeadline(time.Now().Add(framedTestDeadline))
		if err := framedRecvSeqs(b, 0, next); err != nil {
			t.Fatal(err)
		}
		seen := map[int]bool{}
		for range 4 {
			m, err := b.Recv()
			if err != nil {
				t.Fatal(err)
			}
			seq := -1
			if len(m.Data) >= 8 {
				seq = int(binary.LittleEndian.Uint64(m.Data))
			}
			if seq < framedFillMax || (seq-framedFillMax)%2 != 1 || seen[seq] {
				t.Fatalf("message %d: not one of the long senders', or twice", seq)
			}
			if err := framedCheckSeq(m, seq); err != nil {
				t.Fatal(err)
			}
			seen[seq] = true
		}
		for range 4 {
			if r := <-results; r.short || r.err != nil {
				t.Fatalf("long sender of message %d: %v", r.seq, r.err)
			}
		}
		if err := a.Send(1, []byte("end")); err != nil {
			t.Fatal(err)
		}
		if m, err := b.Recv(); err != nil || string(m.Data) != "end" {
			t.Fatalf("after the senders: %q, %v; want the end message", m.Data, err)
		}
	})
}

// TestFramedCloseWhileSending: Close returns at once; senders waiting for
// room return ErrClosed promptly; what was accepted still reaches a peer that
// reads within the linger, and the writer goroutine is gone after it.
func TestFramedCloseWhileSending(t *testing.T) {
	framedForStalls(t, func(t *testing.T, a, b *framedConn) {
		next := framedFill(t, a, 0)
		errc := make(chan error, 3)
		for i := range 3 {
			go func() { errc <- framedSendSeq(a, time.Time{}, nil, framedFillMax+i) }()
		}
		framedWaitWaiters(t, a, 3)
		start := time.Now()
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > framedSlack {
			t.Fatalf("Close took %v", d)
		}
		for range 3 {
			select {
			case err := <-errc:
				if !errors.Is(err, ErrClosed) {
					t.Fatalf("waiting send after Close: %v", err)
				}
			case <-time.After(framedSlack):
				t.Fatal("a waiting send still blocked after Close")
			}
		}
		// The peer reads what was accepted, then the end.
		b.SetReadDeadline(time.Now().Add(framedTestDeadline))
		if err := framedRecvSeqs(b, 0, next); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Recv(); !errors.Is(err, ErrPeerGone) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("after the last accepted message: %v, want ErrPeerGone", err)
		}
		if d := time.Since(start); d > framedCloseLinger {
			t.Fatalf("the accepted messages took %v after Close, more than the linger", d)
		}
		framedWaitGone(t, a, start)
	})
}

// framedWaitGone waits until c's writer goroutine is gone and its socket
// closed, which must happen within the linger after Close (at start).
func framedWaitGone(t *testing.T, c *framedConn, start time.Time) {
	t.Helper()
	for {
		c.wmu.Lock()
		gone := !c.writing && c.sockClosed.Load()
		c.wmu.Unlock()
		if gone {
			return
		}
		if d := time.Since(start); d > framedCloseLinger+500*time.Millisecond {
			t.Fatalf("writer still running %v after Close", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFramedCloseLinger: Close with data queued for a peer that never reads
// returns at once; the writer gives up after the linger, closes the socket,
// and no goroutine is left.
func TestFramedCloseLinger(t *testing.T) {
	for _, kind := range []string{"unix", "tls"} {
		t.Run("net="+kind, func(t *testing.T) {
			before := framedWriters()
			var a, b *framedConn
			if kind == "tls" {
				a, b = framedTLSPair(t, framedOptions{})
			} else {
				a, b = framedPair(t, "unix", framedOptions{})
			}
			next := framedFill(t, a, 0)
			if framedWriters() <= before {
				t.Fatal("no writer goroutine while the queue is full")
			}
			start := time.Now()
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > framedSlack {
				t.Fatalf("Close took %v", d)
			}
			time.Sleep(framedCloseLinger / 2)
			if a.sockClosed.Load() {
				t.Fatal("socket closed before the linger ended")
			}
			framedWaitGone(t, a, start)
			if d := time.Since(start); d < framedCloseLinger {
				t.Fatalf("writer gave up after %v, before the linger", d)
			}
			for start := time.Now(); framedWriters() > before; time.Sleep(5 * time.Millisecond) {
				if time.Since(start) > time.Second {
					t.Fatalf("%d writer goroutines left, %d before", framedWriters(), before)
				}
			}
			a.wmu.Lock()
			held := a.wheld
			a.wmu.Unlock()
			if held != 0 {
				t.Fatalf("%d bytes still held after the linger", held)
			}
			// The peer gets the whole messages the socket took, then the end.
			b.SetReadDeadline(time.Now().Add(framedTestDeadline))
			for seq := 0; ; seq++ {
				m, err := b.Recv()
				if err != nil {
					if !errors.Is(err, ErrPeerGone) || seq >= next {
						t.Fatalf("after %d of %d messages: %v", seq, next, err)
					}
					t.Logf("the peer got %d of %d accepted messages before the linger ended (%v)", seq, next, err)
					break
				}
				if err := framedCheckSeq(m, seq); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestFramedSendHeldBound: however senders push at a peer that never reads,
// the bytes the connection holds stay within the budget plus one message.
// With ZSTD, the room a large frame holds while it is compressed counts too.
func TestFramedSendHeldBound(t *testing.T) {
	const maxSize = 1 << 20
	for _, kind := range []string{"unix", "tls", "unix-zstd"} {
		t.Run("net="+kind, func(t *testing.T) {
			var a *framedConn
			pool := framedRandPool
			switch kind {
			case "tls":
				a, _ = framedTLSPair(t, framedOptions{})
			case "unix-zstd":
				// Random bytes: every frame is compressed (and found not to
				// shrink) within the room it reserved, and fills its share
				// of the queue, so the peer pushes back even under -race.
				a, _ = framedPair(t, "unix", framedOptions{Compression: framedCompZstd})
			default:
				a, _ = framedPair(t, "unix", framedOptions{})
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			accepted, refused := 0, 0
			stop := time.Now().Add(500 * time.Millisecond)
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; time.Now().Before(stop); i++ {
						size := 1 + (g*7919+i*104729)%maxSize
						err := a.SendPartsUntil(time.Now().Add(time.Duration(i%20)*time.Millisecond), nil, 1, pool[:size], nil)
						mu.Lock()
						if err == nil {
							accepted++
						} else {
							refused++
						}
						mu.Unlock()
						if err != nil && !errors.Is(err, ErrTimeout) {
							t.Errorf("send: %v", err)
							return
						}
					}
				}()
			}
			wg.Wait()
			a.wmu.Lock()
			peak := a.wpeak
			a.wmu.Unlock()
			if limit := framedSendBuf + frameHeaderLen + maxSize; peak > limit {
				t.Fatalf("held up to %d bytes; limit %d", peak, limit)
			}
			if refused == 0 || peak < framedSendBuf/2 {
				t.Fatalf("the peer never pushed back: %d accepted, %d refused, most held %d", accepted, refused, peak)
			}
			t.Logf("%d sends accepted, %d refused; most held %d bytes (budget %d)", accepted, refused, peak, framedSendBuf)
		})
	}
}
