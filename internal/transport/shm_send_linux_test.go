package transport

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/sendparts"
)

// fillRing sends small messages on c until SendPartsUntil with sendparts.NoWait finds
// no room; nobody reads them yet. It returns how many went out.
func fillRing(t *testing.T, c Conn) int {
	t.Helper()
	for i := 0; ; i++ {
		err := sendparts.Until(c, sendparts.NoWait, nil, 2, []byte(strconv.Itoa(i)), make([]byte, 500))
		if errors.Is(err, ErrTimeout) {
			return i
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// drain receives n messages of type 2 from c (sent by fillRing).
func drain(t *testing.T, c Conn, n int) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range n {
		m, err := c.Recv()
		if err != nil {
			t.Fatalf("drain %d of %d: %v", i, n, err)
		}
		if m.Type != 2 || !bytes.HasPrefix(m.Data, []byte(strconv.Itoa(i))) {
			t.Fatalf("drain %d: type %d, %q...", i, m.Type, m.Data[:min(len(m.Data), 8)])
		}
		c.Release()
	}
	_ = c.SetReadDeadline(time.Time{})
}

// roundTrip checks that a and b still carry a message each way.
func roundTrip(t *testing.T, a, b Conn) {
	t.Helper()
	for _, d := range [][2]Conn{{a, b}, {b, a}} {
		if err := d[0].Send(9, []byte("still usable")); err != nil {
			t.Fatalf("Send: %v", err)
		}
		_ = d[1].SetReadDeadline(time.Now().Add(10 * time.Second))
		m, err := d[1].Recv()
		if err != nil || m.Type != 9 || string(m.Data) != "still usable" {
			t.Fatalf("Recv = %d %q, %v", m.Type, m.Data, err)
		}
		d[1].Release()
		_ = d[1].SetReadDeadline(time.Time{})
	}
}

func shmPair(t *testing.T) (Conn, Conn) {
	t.Helper()
	pair, _ := shmPairs(t, chaosRing)
	a, b := pair()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestShmSendPartsUntil(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		a, b := shmPair(t)
		n := fillRing(t, a)
		for _, d := range []time.Duration{0, 100 * time.Millisecond} {
			start := time.Now()
			err := sendparts.Until(a, start.Add(d), nil, 2, []byte("x"), nil)
			if !errors.Is(err, ErrTimeout) || !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("deadline %v: %v, want ErrTimeout", d, err)
			}
			if el := time.Since(start); el < d || el > d+50*time.Millisecond {
				t.Fatalf("deadline %v: returned after %v", d, el)
			}
		}
		drain(t, b, n)
		roundTrip(t, a, b)
	})

	t.Run("cancel", func(t *testing.T) {
		a, b := shmPair(t)
		n := fillRing(t, a)
		cancel := make(chan struct{})
		time.AfterFunc(50*time.Millisecond, func() { close(cancel) })
		start := time.Now()
		err := sendparts.Until(a, time.Now().Add(time.Minute), cancel, 2, []byte("x"), nil)
		if !errors.Is(err, ErrCanceled) {
			t.Fatalf("SendPartsUntil with a closed cancel: %v", err)
		}
		if el := time.Since(start); el > 100*time.Millisecond {
			t.Fatalf("cancel after 50ms noticed after %v", el)
		}
		// A cancel already closed sends nothing, even with room.
		drain(t, b, n)
		if err := sendparts.Until(a, time.Time{}, cancel, 3, []byte("no"), nil); !errors.Is(err, ErrCanceled) {
			t.Fatalf("SendPartsUntil with a closed cancel and room: %v", err)
		}
		roundTrip(t, a, b)
	})

	t.Run("behind-a-blocked-sender", func(t *testing.T) {
		// A plain Send waiting for room holds the send token; another
		// sender's deadline is honoured all the same (a ping with a 300 ms
		// deadline was stuck for seconds behind a handler's reply).
		a, b := shmPair(t)
		n := fillRing(t, a)
		blocked := make(chan error, 1)
		go func() { blocked <- a.Send(2, []byte(strconv.Itoa(n))) }()
		time.Sleep(20 * time.Millisecond)
		start := time.Now()
		err := sendparts.Until(a, start.Add(100*time.Millisecond), nil, 3, []byte("ping"), nil)
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("SendPartsUntil behind a blocked Send: %v", err)
		}
		if el := time.Since(start); el < 100*time.Millisecond || el > 150*time.Millisecond {
			t.Fatalf("deadline of 100ms behind a blocked Send: returned after %v", el)
		}
		cancel := make(chan struct{})
		time.AfterFunc(30*time.Millisecond, func() { close(cancel) })
		if err := sendparts.Until(a, time.Time{}, cancel, 3, []byte("ping"), nil); !errors.Is(err, ErrCanceled) {
			t.Fatalf("canceled SendPartsUntil behind a blocked Send: %v", err)
		}
		select {
		case err := <-blocked:
			t.Fatalf("the blocked Send returned %v before anyone read", err)
		default:
		}
		drain(t, b, n+1) // the blocked Send's message comes last, the pings never
		if err := <-blocked; err != nil {
			t.Fatal(err)
		}
		roundTrip(t, a, b)
	})

	t.Run("write-deadline", func(t *testing.T) {
		a, b := shmPair(t)
		if err := a.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		// A write deadline in the past fails at once, even with room.
		if err := sendparts.Until(a, time.Time{}, nil, 2, []byte("x"), nil); !errors.Is(err, ErrTimeout) {
			t.Fatalf("SendPartsUntil past the write deadline: %v", err)
		}
		if err := a.SetWriteDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		n := fillRing(t, a)
		// A write deadline set while a sender waits for the token bounds it.
		blocked := make(chan error, 1)
		go func() { blocked <- a.Send(2, []byte(strconv.Itoa(n))) }()
		time.Sleep(20 * time.Millisecond)
		waiting := make(chan error, 1)
		go func() { waiting <- sendparts.Until(a, time.Time{}, nil, 3, []byte("x"), nil) }()
		time.Sleep(20 * time.Millisecond)
		start := time.Now()
		if err := a.SetWriteDeadline(start.Add(50 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		for _, ch := range []chan error{waiting, blocked} {
			select {
			case err := <-ch:
				if !errors.Is(err, ErrTimeout) {
					t.Fatalf("sender after the write deadline: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a write deadline did not reach a waiting sender")
			}
		}
		if el := time.Since(start); el > 100*time.Millisecond {
			t.Fatalf("write deadline of 50ms ended the sends after %v", el)
		}
		_ = a.SetWriteDeadline(time.Time{})
		drain(t, b, n)
		roundTrip(t, a, b)
	})

	t.Run("nowait", func(t *testing.T) {
		a, b := shmPair(t)
		n := fillRing(t, a)
		if err := sendparts.Until(a, sendparts.NoWait, nil, 2, []byte("x"), nil); !errors.Is(err, ErrTimeout) {
			t.Fatalf("sendparts.Until(sendparts.NoWait) on a full ring = %v", err)
		}
		drain(t, b, n)
		if err := sendparts.Until(a, sendparts.NoWait, nil, 2, []byte("0"), []byte("y")); err != nil {
			t.Fatalf("sendparts.Until(sendparts.NoWait) with room = %v", err)
		}
		drain(t, b, 1)
	})

	t.Run("too-large", func(t *testing.T) {
		a, _ := shmPair(t)
		max := a.Info().MaxMessage
		if err := sendparts.Until(a, time.Time{}, nil, 2, make([]byte, max), []byte("x")); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("SendPartsUntil over MaxMessage: %v", err)
		}
	})
}

// largeMsg is a message of n bytes that is checked whole on arrival.
func largeMsg(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i>>8)
	}
	return b
}

// TestShmSendPartsUntilFragmented cuts a fragmented message short with the
// deadline: SendPartsUntil returns nil, the message arrives whole later, the
// senders after it wait for it within their own bounds, and the stream stays
// usable.
func TestShmSendPartsUntilFragmented(t *testing.T) {
	a, b := shmPair(t)
	msg, want := largeMsg(100<<10), largeMsg(100<<10) // the ring holds 16 KiB
	start := time.Now()
	if err := sendparts.Until(a, start.Add(50*time.Millisecond), nil, 4, msg[:1000], msg[1000:]); err != nil {
		t.Fatalf("SendPartsUntil of a fragmented message cut by its deadline: %v", err)
	}
	if el := time.Since(start); el > 100*time.Millisecond {
		t.Fatalf("returned after %v", el)
	}
	clear(msg) // the caller may reuse its buffers: the rest was copied
	// The background finisher holds the token: a later sender waits for it
	// within its bounds, and sends nothing when they end.
	if err := sendparts.Until(a, time.Now().Add(30*time.Millisecond), nil, 5, []byte("behind"), nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("SendPartsUntil behind the finisher: %v", err)
	}
	later := make(chan error, 1)
	go func() { later <- a.Send(6, []byte("after")) }()
	_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := b.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != 4 || !bytes.Equal(m.Data, want) {
		t.Fatalf("got type %d, %d bytes (equal %v); want the whole message of type 4", m.Type, len(m.Data), bytes.Equal(m.Data, want))
	}
	b.Release()
	if m, err = b.Recv(); err != nil || m.Type != 6 || string(m.Data) != "after" {
		t.Fatalf("next message: %d %q, %v", m.Type, m.Data, err)
	}
	b.Release()
	if err := <-later; err != nil {
		t.Fatal(err)
	}
	roundTrip(t, a, b)
}

// finishers counts goroutines running shmConn's background finisher.
func finishers() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*shmConn).finishLater.func")
}

// TestShmCloseEndsFinisher closes a Conn while its background finisher waits
// for room that never comes: Close returns at once, the finisher leaves and
// the memory is unmapped.
func TestShmCloseEndsFinisher(t *testing.T) {
	pair, _ := shmPairs(t, chaosRing)
	a, b := pair()
	defer b.Close()
	before := finishers()
	if err := sendparts.Until(a, time.Now().Add(20*time.Millisecond), nil, 4, largeMsg(100<<10), nil); err != nil {
		t.Fatal(err)
	}
	if n := finishers(); n != before+1 {
		t.Fatalf("%d finishers running, want %d", n, before+1)
	}
	start := time.Now()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 50*time.Millisecond {
		t.Fatalf("Close took %v", el)
	}
	for end := time.Now().Add(5 * time.Second); finishers() > before; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the finisher still runs 5s after Close")
		}
	}
	if !unmapped(a) {
		t.Fatal("rings still mapped after the finisher left")
	}
	if err := a.Send(1, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
}

// TestShmPeerGoneEndsFinisher: the peer's death ends the finisher too.
func TestShmPeerGoneEndsFinisher(t *testing.T) {
	pair, _ := shmPairs(t, chaosRing)
	a, b := pair()
	defer a.Close()
	before := finishers()
	if err := sendparts.Until(a, time.Now().Add(20*time.Millisecond), nil, 4, largeMsg(100<<10), nil); err != nil {
		t.Fatal(err)
	}
	b.Close()
	for end := time.Now().Add(5 * time.Second); finishers() > before; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the finisher still runs 5s after the peer closed")
		}
	}
	if err := a.Send(1, nil); !errors.Is(err, ErrPeerGone) {
		t.Fatalf("Send after the peer closed: %v", err)
	}
}

// TestShmExpiredDeadlineKeepsConn: one caller's expired deadlines (a send's
// own, the write deadline, the read deadline) fail that caller only.
func TestShmExpiredDeadlineKeepsConn(t *testing.T) {
	a, b := shmPair(t)
	_ = b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := b.Recv(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Recv past the read deadline: %v", err)
	}
	_ = b.SetReadDeadline(time.Time{})
	n := fillRing(t, a)
	if err := sendparts.Until(a, time.Now().Add(20*time.Millisecond), nil, 2, []byte("x"), nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("SendPartsUntil on a full ring: %v", err)
	}
	_ = a.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	if err := a.Send(2, []byte("x")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Send on a full ring past the write deadline: %v", err)
	}
	if err := a.SendBatch([]Message{{Type: 2, Data: []byte("x")}}); !errors.Is(err, ErrTimeout) {
		t.Fatalf("SendBatch past the write deadline: %v", err)
	}
	_ = a.SetWriteDeadline(time.Time{})
	drain(t, b, n)
	roundTrip(t, a, b)
	// Many messages, both ways, after all that.
	for i := range 1000 {
		if err := a.SendBatch([]Message{{Type: 2, Data: []byte(strconv.Itoa(2 * i))}, {Type: 2, Data: []byte(strconv.Itoa(2*i + 1))}}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, err := b.Recv(); err != nil {
				t.Fatal(err)
			}
		}
	}
	b.Release()
	roundTrip(t, a, b)
}

// TestShmSendNoAlloc: the uncontended send path and the receive path
// allocate nothing.
func TestShmSendNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	a, b := shmPair(t)
	head, body := []byte("head"), make([]byte, 100)
	cancel := make(chan struct{})
	for name, send := range map[string]func() error{
		"Send":             func() error { return a.Send(1, body) },
		"SendParts":        func() error { return sendparts.Parts(a, 1, head, body) },
		"SendPartsUntil":   func() error { return sendparts.Until(a, time.Now().Add(time.Second), cancel, 1, head, body) },
		"sendparts.NoWait": func() error { return sendparts.Until(a, sendparts.NoWait, nil, 1, head, body) },
	} {
		allocs := testing.AllocsPerRun(1000, func() {
			if err := send(); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Recv(); err != nil {
				t.Fatal(err)
			}
			b.Release()
		})
		if allocs != 0 {
			t.Errorf("%s and Recv: %v allocations a message", name, allocs)
		}
	}
}
