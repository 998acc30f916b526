package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/rpc"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// ncLongAgo is a deadline surely in the past.
var ncLongAgo = time.Unix(1, 0)

// ncWatchdog bounds one behaviour test: if it runs too long, it reports
// that and closes the connections, which unblocks every pending call.
const ncWatchdog = 60 * time.Second

// ncPair wraps two fresh Conns from mk in NetConn and closes both at the end.
func ncPair(t *testing.T, mk func(t *testing.T) (Conn, Conn)) (net.Conn, net.Conn) {
	t.Helper()
	a, b := mk(t)
	c1, c2 := NetConn(a), NetConn(b)
	ncGuard(t, c1, c2)
	return c1, c2
}

// ncGuard closes cs when the test ends, or earlier if it overruns.
func ncGuard(t *testing.T, cs ...io.Closer) {
	var mu sync.Mutex
	ended := false
	timer := time.AfterFunc(ncWatchdog, func() {
		mu.Lock()
		defer mu.Unlock()
		if ended {
			return
		}
		t.Errorf("test still running after %v: closing its connections", ncWatchdog)
		for _, c := range cs {
			c.Close()
		}
	})
	t.Cleanup(func() {
		mu.Lock()
		ended = true
		mu.Unlock()
		timer.Stop()
		for _, c := range cs {
			c.Close()
		}
	})
}

func ncRandom(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// ncCheckTimeout asserts err is a timeout the way net code tests for one.
func ncCheckTimeout(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want a timeout", what)
		return
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Errorf("%s: got %T %v, want a net.Error whose Timeout() is true", what, err, err)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.Is(err, ErrTimeout) {
		t.Errorf("%s: %v does not match os.ErrDeadlineExceeded and ErrTimeout", what, err)
	}
}

// ncCheckClosed asserts err reports a closed connection.
func ncCheckClosed(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, net.ErrClosed) {
		t.Errorf("%s: got %v, want an error matching net.ErrClosed", what, err)
	}
}

// ncExchange writes msg on w and reads it back on r, within a deadline.
func ncExchange(t *testing.T, w, r net.Conn, msg []byte) {
	t.Helper()
	w.SetWriteDeadline(time.Now().Add(10 * time.Second))
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer w.SetWriteDeadline(time.Time{})
	defer r.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := w.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("read %q, want %q", ncShort(got), ncShort(msg))
	}
}

func ncShort(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

// ncFillWrites writes 64 KiB chunks on c until a Write fails (or limit bytes
// went through) and returns the error, nil if the limit was reached.
func ncFillWrites(c net.Conn, limit int) error {
	buf := make([]byte, 64<<10)
	for n := 0; n < limit; n += len(buf) {
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// ncFillLimit bounds ncFillWrites: far above any ring or socket buffer.
const ncFillLimit = 1 << 30

// testNetConnBehaviour checks what NetConn promises beyond the net.Conn
// contract that TestNetTest checks with golang.org/x/net/nettest: the errors
// it returns (timeouts, closure, a gone peer), deadlines moved while a call
// waits, CloseWrite and CloseRead, large and concurrent writes, reserved
// message types, Info and addresses. mk returns the two ends of a fresh
// connection each call.
func testNetConnBehaviour(t *testing.T, mk func(t *testing.T) (Conn, Conn)) {
	t.Run("DeadlineErrors", func(t *testing.T) {
		// nettest checks that timeouts are net.Errors whose Timeout() is
		// true; NetConn's also match os.ErrDeadlineExceeded and ErrTimeout,
		// whether the deadline had passed before the call or passes while
		// the call waits in the Conn.
		c1, _ := ncPair(t, mk)
		c1.SetDeadline(ncLongAgo)
		_, err := c1.Read(make([]byte, 8))
		ncCheckTimeout(t, "Read past its deadline", err)
		_, err = c1.Write([]byte("x"))
		ncCheckTimeout(t, "Write past its deadline", err)
		c1.SetDeadline(time.Time{})
		c1.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err = c1.Read(make([]byte, 8))
		ncCheckTimeout(t, "Read waiting when its deadline passed", err)
		c1.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		err = ncFillWrites(c1, ncFillLimit) // the peer reads nothing
		ncCheckTimeout(t, "Write waiting when its deadline passed", err)
	})

	t.Run("ExtendReadDeadline", func(t *testing.T) {
		c1, c2 := ncPair(t, mk)
		start := time.Now()
		c1.SetReadDeadline(start.Add(100 * time.Millisecond))
		go func() {
			time.Sleep(30 * time.Millisecond)
			c1.SetReadDeadline(time.Now().Add(20 * time.Second))
			time.Sleep(250 * time.Millisecond)
			c2.Write([]byte("late"))
		}()
		buf := make([]byte, 16)
		n, err := c1.Read(buf)
		if err != nil || string(buf[:n]) != "late" {
			t.Fatalf("Read = %q, %v; want the late data after the extended deadline", buf[:n], err)
		}
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Errorf("Read returned after %v, before the data was written", d)
		}
		// No deadline: a Read waits as long as it takes.
		c1.SetReadDeadline(time.Time{})
		go func() {
			time.Sleep(150 * time.Millisecond)
			c2.Write([]byte("later"))
		}()
		n, err = c1.Read(buf)
		if err != nil || string(buf[:n]) != "later" {
			t.Fatalf("Read without deadline = %q, %v", buf[:n], err)
		}
	})

	t.Run("ExtendWriteDeadline", func(t *testing.T) {
		c1, c2 := ncPair(t, mk)
		data := ncRandom(8<<20, 5)
		c1.SetWriteDeadline(time.Now().Add(150 * time.Millisecond))
		type result struct {
			n   int
			err error
		}
		res := make(chan result, 1)
		go func() {
			n, err := c1.Write(data)
			res <- result{n, err}
		}()
		time.Sleep(50 * time.Millisecond)
		c1.SetWriteDeadline(time.Now().Add(20 * time.Second))
		time.Sleep(300 * time.Millisecond)
		c2.SetReadDeadline(time.Now().Add(20 * time.Second))
		got := make([]byte, len(data))
		if _, err := io.ReadFull(c2, got); err != nil {
			t.Fatalf("peer read: %v", err)
		}
		if r := <-res; r.n != len(data) || r.err != nil {
			t.Fatalf("Write = %d, %v; want %d, nil", r.n, r.err, len(data))
		}
		if !bytes.Equal(got, data) {
			t.Fatal("data corrupted")
		}
	})

	t.Run("CloseErrors", func(t *testing.T) {
		// nettest checks that Close unblocks pending calls; here their
		// errors, and those of later calls, match net.ErrClosed and ErrClosed.
		c1, _ := ncPair(t, mk)
		rerr, werr := make(chan error, 1), make(chan error, 1)
		go func() {
			_, err := c1.Read(make([]byte, 16))
			rerr <- err
		}()
		go func() { werr <- ncFillWrites(c1, ncFillLimit) }()
		time.Sleep(100 * time.Millisecond)
		if err := c1.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for _, pending := range []struct {
			what string
			errc chan error
		}{{"pending Read", rerr}, {"pending Write", werr}} {
			select {
			case err := <-pending.errc:
				ncCheckClosed(t, pending.what, err)
				if !errors.Is(err, ErrClosed) {
					t.Errorf("%s: %v does not match ErrClosed", pending.what, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("Close did not unblock the %s", pending.what)
			}
		}
		_, err := c1.Read(make([]byte, 1))
		ncCheckClosed(t, "Read after Close", err)
		_, err = c1.Write([]byte("x"))
		ncCheckClosed(t, "Write after Close", err)
		ncCheckClosed(t, "SetDeadline after Close", c1.SetDeadline(time.Now()))
		ncCheckClosed(t, "CloseWrite after Close", c1.(interface{ CloseWrite() error }).CloseWrite())
		ncCheckClosed(t, "second Close", c1.Close())
	})

	t.Run("CloseDropsBuffered", func(t *testing.T) {
		// Data received but not read is not readable after Close.
		c1, c2 := ncPair(t, mk)
		ncExchange(t, c2, c1, []byte("ab"))
		if _, err := c2.Write([]byte("cdef")); err != nil {
			t.Fatal(err)
		}
		c1.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c1, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		c1.Close()
		n, err := c1.Read(make([]byte, 8))
		if n != 0 {
			t.Errorf("Read after Close returned %d bytes", n)
		}
		ncCheckClosed(t, "Read after Close", err)
	})

	t.Run("HalfClose", func(t *testing.T) {
		c1, c2 := ncPair(t, mk)
		c1.SetDeadline(time.Now().Add(20 * time.Second))
		c2.SetDeadline(time.Now().Add(20 * time.Second))
		request := ncRandom(100_000, 6)
		if _, err := c1.Write(request); err != nil {
			t.Fatal(err)
		}
		cw1 := c1.(interface{ CloseWrite() error })
		if err := cw1.CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
		if err := cw1.CloseWrite(); err != nil {
			t.Errorf("second CloseWrite: %v", err)
		}
		_, err := c1.Write([]byte("more"))
		if err == nil || errors.Is(err, net.ErrClosed) || !errors.Is(err, errWriteClosed) {
			t.Errorf("Write after CloseWrite: %v; want errWriteClosed, not net.ErrClosed", err)
		}
		got, err := io.ReadAll(c2)
		if err != nil || !bytes.Equal(got, request) {
			t.Fatalf("peer read %d bytes (%v), want %d then EOF", len(got), err, len(request))
		}
		if n, err := c2.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Errorf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
		}
		// The other direction is still open.
		reply := ncRandom(70_000, 7)
		if _, err := c2.Write(reply); err != nil {
			t.Fatalf("reply: %v", err)
		}
		if err := c2.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatalf("peer CloseWrite: %v", err)
		}
		got, err = io.ReadAll(c1)
		if err != nil || !bytes.Equal(got, reply) {
			t.Fatalf("read %d bytes (%v) of the reply, want %d", len(got), err, len(reply))
		}
	})

	t.Run("CloseRead", func(t *testing.T) {
		c1, c2 := ncPair(t, mk)
		errc := make(chan error, 1)
		go func() {
			_, err := c1.Read(make([]byte, 8))
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		if err := c1.(interface{ CloseRead() error }).CloseRead(); err != nil {
			t.Fatalf("CloseRead: %v", err)
		}
		select {
		case err := <-errc:
			if err != io.EOF {
				t.Errorf("pending Read after CloseRead: %v, want io.EOF", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("CloseRead did not unblock Read")
		}
		c1.SetReadDeadline(time.Now().Add(time.Hour))
		if _, err := c1.Read(make([]byte, 8)); err != io.EOF {
			t.Errorf("Read after CloseRead: %v, want io.EOF", err)
		}
		ncExchange(t, c1, c2, []byte("writes go on"))
	})

	t.Run("LargeWrites", func(t *testing.T) {
		c1, c2 := ncPair(t, mk)
		d12, d21 := ncRandom(8<<20, 8), ncRandom(8<<20, 9)
		c1.SetDeadline(time.Now().Add(30 * time.Second))
		c2.SetDeadline(time.Now().Add(30 * time.Second))
		errc := make(chan error, 2)
		go func() {
			n, err := c1.Write(d12)
			if err == nil && n != len(d12) {
				err = fmt.Errorf("c1 wrote %d of %d", n, len(d12))
			}
			errc <- err
		}()
		go func() {
			n, err := c2.Write(d21)
			if err == nil && n != len(d21) {
				err = fmt.Errorf("c2 wrote %d of %d", n, len(d21))
			}
			errc <- err
		}()
		got12, got21 := make([]byte, len(d12)), make([]byte, len(d21))
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := io.ReadFull(c2, got12); err != nil {
				t.Errorf("c2 read: %v", err)
			}
		}()
		if _, err := io.ReadFull(c1, got21); err != nil {
			t.Errorf("c1 read: %v", err)
		}
		wg.Wait()
		for range 2 {
			if err := <-errc; err != nil {
				t.Error(err)
			}
		}
		if !bytes.Equal(got12, d12) || !bytes.Equal(got21, d21) {
			t.Error("8 MiB writes arrived corrupted")
		}
	})

	t.Run("WritesDoNotInterleave", func(t *testing.T) {
		c1, c2 := ncPair(t, mk)
		const writers, perWriter, block = 4, 3, 300_000
		c1.SetWriteDeadline(time.Now().Add(30 * time.Second))
		c2.SetReadDeadline(time.Now().Add(30 * time.Second))
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for s := range perWriter {
					b := bytes.Repeat([]byte{byte(1 + w*perWriter + s)}, block)
					if n, err := c1.Write(b); n != block || err != nil {
						t.Errorf("Write = %d, %v", n, err)
						return
					}
				}
			}()
		}
		got := make([]byte, writers*perWriter*block)
		_, err := io.ReadFull(c2, got)
		wg.Wait()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		seen := map[byte]bool{}
		for i := 0; i < len(got); i += block {
			id := got[i]
			if seen[id] || id == 0 || int(id) > writers*perWriter {
				t.Fatalf("block at %d has id %d (seen before: %v)", i, id, seen[id])
			}
			seen[id] = true
			if j := bytes.IndexFunc(got[i:i+block], func(r rune) bool { return r != rune(id) }); j >= 0 {
				t.Fatalf("block %d is interleaved with another write at offset %d", id, j)
			}
		}
	})

	t.Run("PeerClose", func(t *testing.T) {
		c1, c2 := ncPair(t, mk)
		if _, err := c1.Write([]byte("last words")); err != nil {
			t.Fatal(err)
		}
		if err := c1.Close(); err != nil {
			t.Fatal(err)
		}
		c2.SetDeadline(time.Now().Add(20 * time.Second))
		got, err := io.ReadAll(c2)
		if err != nil || string(got) != "last words" {
			t.Fatalf("peer read %q, %v; want the data then io.EOF", got, err)
		}
		if _, err := c2.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("Read again: %v, want io.EOF", err)
		}
		err = ncFillWrites(c2, ncFillLimit)
		if !errors.Is(err, ErrPeerGone) || errors.Is(err, net.ErrClosed) {
			t.Errorf("Write to a gone peer: %v; want ErrPeerGone, not net.ErrClosed", err)
		}
	})

	t.Run("ZeroLength", func(t *testing.T) {
		c1, c2 := ncPair(t, mk)
		if n, err := c1.Write(nil); n != 0 || err != nil {
			t.Errorf("Write(nil) = %d, %v", n, err)
		}
		if n, err := c2.Read(nil); n != 0 || err != nil {
			t.Errorf("Read(nil) = %d, %v", n, err)
		}
		c2.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := c2.Read(make([]byte, 8))
		if n != 0 {
			t.Errorf("an empty Write delivered %d bytes", n)
		}
		ncCheckTimeout(t, "Read after an empty Write", err)
		ncExchange(t, c1, c2, []byte("z"))
	})

	t.Run("SmallReads", func(t *testing.T) {
		c1, c2 := ncPair(t, mk)
		data := ncRandom(200_000, 10)
		go c1.Write(data)
		c2.SetReadDeadline(time.Now().Add(20 * time.Second))
		var got []byte
		b := make([]byte, 7)
		for len(got) < len(data) {
			n, err := c2.Read(b)
			if err != nil {
				t.Fatalf("after %d bytes: %v", len(got), err)
			}
			got = append(got, b[:n]...)
		}
		if !bytes.Equal(got, data) {
			t.Fatal("small reads reassembled the wrong bytes")
		}
	})

	t.Run("ForeignMessage", func(t *testing.T) {
		a, b := mk(t)
		c2 := NetConn(b)
		ncGuard(t, a, c2)
		if err := a.Send(typeStream, []byte("ok")); err != nil {
			t.Fatal(err)
		}
		if err := a.Send(typeStream, nil); err != nil { // empty: skipped
			t.Fatal(err)
		}
		if err := a.Send(7, []byte("not a stream")); err != nil {
			t.Fatal(err)
		}
		c2.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c2)
		if string(got) != "ok" || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("ReadAll = %q, %v; want \"ok\" then ErrCorrupt", got, err)
		}
		if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("the stream error is not sticky: %v", err)
		}
	})

	t.Run("EOFWithPayload", func(t *testing.T) {
		a, b := mk(t)
		c2 := NetConn(b)
		ncGuard(t, a, c2)
		if err := a.Send(typeStreamEOF, []byte("junk")); err != nil {
			t.Fatal(err)
		}
		c2.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c2.Read(make([]byte, 8)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Read = %v, want ErrCorrupt", err)
		}
	})

	t.Run("Addrs", func(t *testing.T) {
		a, b := mk(t)
		c1, c2 := NetConn(a), NetConn(b)
		ncGuard(t, c1, c2)
		for _, c := range []net.Conn{c1, c2} {
			if c.LocalAddr() == nil || c.RemoteAddr() == nil {
				t.Fatal("nil address")
			}
		}
		if got := c1.(interface{ Info() Info }).Info(); got.Kind != a.Info().Kind || got.Peer.Name != a.Info().Peer.Name {
			t.Errorf("Info() = %+v, want the Conn's", got)
		}
		if _, own := a.(interface{ RemoteAddr() net.Addr }); own {
			return // the Conn's own addresses: nothing more to check
		}
		info := a.Info()
		if got, want := c1.RemoteAddr().Network(), "ringwire+"+info.Kind.String(); got != want {
			t.Errorf("Network() = %q, want %q", got, want)
		}
		want := info.Peer.Name
		if want == "" {
			want = info.Kind.String()
		}
		if got := c1.RemoteAddr().String(); got != want {
			t.Errorf("RemoteAddr().String() = %q, want %q", got, want)
		}
		if got := c1.LocalAddr().String(); got != info.Kind.String() {
			t.Errorf("LocalAddr().String() = %q, want %q", got, info.Kind.String())
		}
	})
}

func ncPipes(*testing.T) (Conn, Conn) { return pipeConns() }

// TestNetConnBehaviour runs testNetConnBehaviour over the in-memory pipe.
func TestNetConnBehaviour(t *testing.T) {
	testNetConnBehaviour(t, ncPipes)
}

// TestNetConnPipe checks the test pipe itself against the Conn contract the
// behaviour suite relies on.
func TestNetConnPipe(t *testing.T) {
	a, b := pipeConns()
	defer a.Close()
	defer b.Close()
	if err := a.Send(3, []byte("one")); err != nil {
		t.Fatal(err)
	}
	m, err := b.Recv()
	if err != nil || m.Type != 3 || string(m.Data) != "one" {
		t.Fatalf("Recv = %v %q, %v", m.Type, m.Data, err)
	}
	view := m.Data
	b.Release()
	if string(view) == "one" {
		t.Error("Release did not scribble over the released message")
	}
	if err := a.Send(1, make([]byte, ncPipeMaxMessage+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized Send: %v", err)
	}
	b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := b.Recv(); !errors.Is(err, ErrTimeout) {
		t.Errorf("Recv with nothing sent: %v, want ErrTimeout", err)
	}
	b.SetReadDeadline(time.Time{})
	a.Send(4, []byte("queued"))
	a.Close()
	if m, err := b.Recv(); err != nil || string(m.Data) != "queued" {
		t.Errorf("Recv after the peer closed = %q, %v; want the queued message", m.Data, err)
	}
	if _, err := b.Recv(); !errors.Is(err, ErrPeerGone) {
		t.Errorf("Recv: %v, want ErrPeerGone", err)
	}
	if err := b.Send(1, nil); !errors.Is(err, ErrPeerGone) {
		t.Errorf("Send: %v, want ErrPeerGone", err)
	}
	if err := a.Send(1, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}
}

// TestNetConnChunks checks how Writes map onto messages: at most
// MaxMessage, and at most 1 MiB when MaxMessage is larger.
func TestNetConnChunks(t *testing.T) {
	for _, tc := range []struct {
		max, write int
		want       []int
	}{
		{ncPipeMaxMessage, 150_000, []int{65536, 65536, 18928}},
		{4 << 20, 2<<20 + 5, []int{1 << 20, 1 << 20, 5}},
		{0, 1<<20 + 1, []int{1 << 20, 1}}, // no limit reported: the cap applies
	} {
		a, b := pipeConns()
		a.(*ncPipeConn).info.MaxMessage = tc.max // what NetConn sees
		a.(*ncPipeConn).limit = math.MaxInt
		c := NetConn(a)
		done := make(chan error, 1)
		go func() {
			_, err := c.Write(make([]byte, tc.write))
			done <- err
		}()
		b.SetReadDeadline(time.Now().Add(10 * time.Second))
		for i, want := range tc.want {
			m, err := b.Recv()
			if err != nil || m.Type != typeStream || len(m.Data) != want {
				t.Fatalf("max %d: message %d: type %#x, %d bytes, %v; want typeStream, %d bytes",
					tc.max, i, m.Type, len(m.Data), err, want)
			}
			b.Release()
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		c.Close()
		b.Close()
	}
}

// ncStubConn is a Conn whose Recv and Send fail with set errors.
type ncStubConn struct {
	Conn    // nil: unexpected calls panic
	recvErr error
	sendErr error
	closed  bool
}

func (s *ncStubConn) Recv() (Message, error)           { return Message{}, s.recvErr }
func (s *ncStubConn) Send(uint16, []byte) error        { return s.sendErr }
func (s *ncStubConn) Release()                         {}
func (s *ncStubConn) SetReadDeadline(time.Time) error  { return nil }
func (s *ncStubConn) SetWriteDeadline(time.Time) error { return nil }
func (s *ncStubConn) Close() error                     { s.closed = true; return nil }
func (s *ncStubConn) Info() Info                       { return Info{Kind: KindTCP, MaxMessage: 1 << 10} }

// TestNetConnErrorMapping checks how Conn errors surface through NetConn.
func TestNetConnErrorMapping(t *testing.T) {
	wrap := func(e error) error { return fmt.Errorf("stub: %w", e) }
	t.Run("PeerGone", func(t *testing.T) {
		c := NetConn(&ncStubConn{recvErr: wrap(ErrPeerGone), sendErr: wrap(ErrPeerGone)})
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("Read: %v, want io.EOF", err)
		}
		_, err := c.Write([]byte("x"))
		var op *net.OpError
		if !errors.Is(err, ErrPeerGone) || errors.Is(err, net.ErrClosed) || !errors.As(err, &op) || op.Op != "write" {
			t.Errorf("Write: %v, want a write *net.OpError wrapping ErrPeerGone", err)
		}
	})
	t.Run("ClosedUnderneath", func(t *testing.T) {
		c := NetConn(&ncStubConn{recvErr: wrap(ErrClosed), sendErr: wrap(ErrClosed)})
		_, err := c.Read(make([]byte, 1))
		ncCheckClosed(t, "Read", err)
		_, err = c.Write([]byte("x"))
		ncCheckClosed(t, "Write", err)
	})
	t.Run("Timeout", func(t *testing.T) {
		c := NetConn(&ncStubConn{recvErr: wrap(ErrTimeout), sendErr: wrap(ErrTimeout)})
		_, err := c.Read(make([]byte, 1))
		ncCheckTimeout(t, "Read", err)
		_, err = c.Write([]byte("x"))
		ncCheckTimeout(t, "Write", err)
	})
	t.Run("Corrupt", func(t *testing.T) {
		c := NetConn(&ncStubConn{recvErr: wrap(ErrCorrupt), sendErr: wrap(ErrTooLarge)})
		_, err := c.Read(make([]byte, 1))
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("Read: %v, want ErrCorrupt", err)
		}
		if ne, ok := err.(net.Error); !ok || ne.Timeout() {
			t.Errorf("Read: %T %v, want a net.Error that is no timeout", err, err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, ErrTooLarge) {
			t.Errorf("Write: %v, want ErrTooLarge", err)
		}
	})
}

func TestNetConnDeadlineNanos(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want int64
	}{
		{time.Time{}, 0},
		{time.Unix(0, 0), 1},
		{time.Unix(-5, 0), 1},
		{time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC), 1},
		{time.Unix(2, 5), 2_000_000_005},
		{time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), math.MaxInt64},
	} {
		if got := ncDeadlineNanos(tc.t); got != tc.want {
			t.Errorf("ncDeadlineNanos(%v) = %d, want %d", tc.t, got, tc.want)
		}
	}
	if ncExpired(ncDeadlineNanos(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))) {
		t.Error("a deadline in year 9999 has expired")
	}
}

// ncAcceptor is an acceptor fed by a channel.
type ncAcceptor struct {
	conns chan Conn
	errs  chan error
	done  chan struct{}
	once  sync.Once
}

func newNcAcceptor() *ncAcceptor {
	return &ncAcceptor{conns: make(chan Conn), errs: make(chan error), done: make(chan struct{})}
}

func (a *ncAcceptor) Accept() (Conn, error) {
	select {
	case c := <-a.conns:
		return c, nil
	case err := <-a.errs:
		return nil, err
	case <-a.done:
		return nil, fmt.Errorf("ncAcceptor: %w", ErrClosed)
	}
}

func (a *ncAcceptor) Close() error {
	a.once.Do(func() { close(a.done) })
	return nil
}

func (a *ncAcceptor) Addr() net.Addr { return netAddr{Kind: KindUnix, Name: "acceptor"} }

func TestNetConnListener(t *testing.T) {
	acc := newNcAcceptor()
	ln := NetListener(acc)
	defer ln.Close()
	if ln.Addr().String() != "acceptor" || ln.Addr().Network() != "ringwire+unix" {
		t.Errorf("Addr = %s %s", ln.Addr().Network(), ln.Addr())
	}
	a, b := pipeConns()
	go func() { acc.conns <- b }()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ca := NetConn(a)
	ncGuard(t, ca, c)
	ncExchange(t, ca, c, []byte("through the listener"))
	if c.RemoteAddr().String() != "pipe-a" {
		t.Errorf("accepted conn's RemoteAddr = %s, want pipe-a", c.RemoteAddr())
	}

	// A failure that is not closure is temporary: servers retry.
	go func() { acc.errs <- errors.New("one handshake failed") }()
	_, err = ln.Accept()
	if ne, ok := err.(interface{ Temporary() bool }); !ok || !ne.Temporary() || errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after a handshake failure: %v, want a temporary error", err)
	}
	// The acceptor closed underneath: net.ErrClosed.
	go func() { acc.errs <- fmt.Errorf("gone: %w", ErrClosed) }()
	_, err = ln.Accept()
	ncCheckClosed(t, "Accept of a closed acceptor", err)

	// Close unblocks a pending Accept.
	errc := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		errc <- err
	}()
	time.Sleep(30 * time.Millisecond)
	ln.Close()
	select {
	case err := <-errc:
		ncCheckClosed(t, "pending Accept", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not unblock Accept")
	}
	_, err = ln.Accept()
	ncCheckClosed(t, "Accept after Close", err)
}

// ncArith is a net/rpc service.
type ncArith struct{}

func (ncArith) Sum(args []int, reply *int) error {
	for _, v := range args {
		*reply += v
	}
	return nil
}

func (ncArith) Echo(args []byte, reply *[]byte) error {
	*reply = args
	return nil
}

func (ncArith) Fail(args string, reply *string) error { return errors.New(args) }

// TestNetConnRPC runs net/rpc over NetConn: a server accepting through
// NetListener and a client making concurrent calls.
func TestNetConnRPC(t *testing.T) {
	srv := rpc.NewServer()
	if err := srv.RegisterName("Arith", ncArith{}); err != nil {
		t.Fatal(err)
	}
	acc := newNcAcceptor()
	ln := NetListener(acc)
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.ServeConn(c)
		}
	}()
	defer func() { ln.Close(); <-served }()

	a, b := pipeConns()
	acc.conns <- b
	conn := NetConn(a)
	ncGuard(t, conn)
	client := rpc.NewClient(conn)
	defer client.Close()

	const callers, calls = 8, 25
	var wg sync.WaitGroup
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				var sum int
				if err := client.Call("Arith.Sum", []int{g, i, 1000}, &sum); err != nil || sum != g+i+1000 {
					t.Errorf("Sum = %d, %v", sum, err)
					return
				}
				payload := ncRandom(1+(g*calls+i)*3000, uint64(g*calls+i))
				var echo []byte
				if err := client.Call("Arith.Echo", payload, &echo); err != nil || !bytes.Equal(echo, payload) {
					t.Errorf("Echo of %d bytes: got %d bytes, %v", len(payload), len(echo), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	var s string
	if err := client.Call("Arith.Fail", "refused", &s); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Fail: %v", err)
	}
}
