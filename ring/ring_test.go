package ring

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// pair makes a heap ring and both of its sides.
func pair(t testing.TB, capacity, maxRecord int, o *Options) (*Producer, *Consumer, []byte) {
	t.Helper()
	mem, err := NewHeap(capacity, maxRecord)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewProducer(mem, o)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConsumer(mem, o)
	if err != nil {
		t.Fatal(err)
	}
	return p, c, mem
}

func mustRead(t testing.TB, c *Consumer) (uint16, []byte) {
	t.Helper()
	r, ok, err := c.TryPeek()
	if err != nil || !ok {
		t.Fatalf("TryPeek: ok=%v err=%v", ok, err)
	}
	data := bytes.Clone(r.Data)
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	return r.Type, data
}

func TestOrderAndTypes(t *testing.T) {
	p, c, _ := pair(t, 4096, 0, nil)
	for i := range 20 {
		msg := bytes.Repeat([]byte{byte(i)}, i)
		if err := p.Write(uint16(i), msg); err != nil {
			t.Fatal(err)
		}
		typ, got := mustRead(t, c)
		if typ != uint16(i) || !bytes.Equal(got, msg) {
			t.Fatalf("message %d: type %d data %x", i, typ, got)
		}
	}
	if _, ok, err := c.TryPeek(); ok || err != nil {
		t.Fatalf("empty ring: ok=%v err=%v", ok, err)
	}
}

func TestEmptyRecord(t *testing.T) {
	p, c, _ := pair(t, 4096, 0, nil)
	if err := p.Write(7, nil); err != nil {
		t.Fatal(err)
	}
	typ, got := mustRead(t, c)
	if typ != 7 || len(got) != 0 {
		t.Fatalf("got type %d len %d", typ, len(got))
	}
}

func TestWrapWithPadding(t *testing.T) {
	const capacity = 1024
	p, c, _ := pair(t, capacity, 0, nil)
	// 100-byte payloads are 112-byte records: 9 fit before the end (1008), the
	// 10th needs padding of 16 and starts at 0.
	for round := range 50 {
		for i := range 5 {
			msg := bytes.Repeat([]byte{byte(round*5 + i)}, 100)
			if err := p.Write(1, msg); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 5 {
			_, got := mustRead(t, c)
			if len(got) != 100 || got[0] != byte(round*5+i) || got[99] != byte(round*5+i) {
				t.Fatalf("round %d msg %d: %d bytes, first %d", round, i, len(got), got[0])
			}
		}
	}
	if p.tail < 50*5*112 {
		t.Fatalf("tail %d: the ring did not wrap", p.tail)
	}
}

func TestFullRingTryReserve(t *testing.T) {
	p, c, _ := pair(t, 1024, 0, nil)
	n := 0
	for {
		buf, err := p.TryReserve(56) // 64-byte records
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		buf[0] = byte(n)
		if err := p.Commit(2, 56); err != nil {
			t.Fatal(err)
		}
		n++
		if n > 100 {
			t.Fatal("ring never filled")
		}
	}
	if n != 1024/64 {
		t.Fatalf("%d records fit, want %d", n, 1024/64)
	}
	// Nothing staged is visible until Flush.
	if _, ok, _ := c.TryPeek(); ok {
		t.Fatal("staged record visible before Flush")
	}
	p.Flush()
	_, got := mustRead(t, c)
	if got[0] != 0 {
		t.Fatalf("first record %d", got[0])
	}
	if _, err := p.TryReserve(56); err != nil {
		t.Fatalf("after one release: %v", err)
	}
}

func TestBatchCommitOneStoreOneWake(t *testing.T) {
	p, c, _ := pair(t, 1<<16, 0, &Options{Spin: -1, AdaptiveSpin: -1})
	got := make(chan int, 1)
	go func() {
		n := 0
		for n < 10 {
			r, err := c.Peek()
			if err != nil {
				t.Error(err)
				break
			}
			if int(r.Type) != n {
				t.Errorf("record %d has type %d", n, r.Type)
			}
			_ = c.Release()
			n++
		}
		got <- n
	}()
	// Wait until the consumer parks.
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().Parks == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if c.Stats().Parks == 0 {
		t.Fatal("consumer never parked")
	}
	for i := range 10 {
		buf, err := p.Reserve(8)
		if err != nil {
			t.Fatal(err)
		}
		copy(buf, "batched!")
		if err := p.Commit(uint16(i), 8); err != nil {
			t.Fatal(err)
		}
	}
	p.Flush()
	if n := <-got; n != 10 {
		t.Fatalf("consumer read %d", n)
	}
	if s := p.Stats(); s.WakesSent != 1 || s.Records != 10 || s.Messages != 10 || s.Bytes != 80 {
		t.Fatalf("producer stats after one batch: %+v", s)
	}
}

func TestFragmentation(t *testing.T) {
	p, c, _ := pair(t, 1<<20, 0, nil)
	sizes := []int{p.MaxRecord(), p.MaxRecord() + 1, 3 << 20, 64 << 20}
	for _, size := range sizes {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			msg := make([]byte, size)
			for i := range msg {
				msg[i] = byte(i * 7 >> 3)
			}
			errc := make(chan error, 1)
			go func() { errc <- p.Write(9, msg) }()
			r, err := c.Peek()
			if err != nil {
				t.Fatal(err)
			}
			if r.Type != 9 || !bytes.Equal(r.Data, msg) {
				t.Fatalf("reassembled %d bytes of type %d, want %d", len(r.Data), r.Type, size)
			}
			if err := c.Release(); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
	if c.asm != nil && cap(c.asm) > retainLimit {
		t.Fatalf("consumer retained a %d-byte buffer", cap(c.asm))
	}
	s := c.Stats()
	if s.Messages != uint64(len(sizes)) {
		t.Fatalf("consumer counted %d messages", s.Messages)
	}
}

func TestReadShortBufferKeepsMessage(t *testing.T) {
	p, c, _ := pair(t, 4096, 0, nil)
	for _, size := range []int{100, 3000} { // whole, then fragmented (max record 2040)
		msg := bytes.Repeat([]byte("x"), size)
		errc := make(chan error, 1)
		go func() { errc <- p.Write(3, msg) }()
		small := make([]byte, 10)
		typ, n, err := c.Read(small)
		if !errors.Is(err, io.ErrShortBuffer) || n != size || typ != 3 {
			t.Fatalf("size %d: Read(short) = %d, %d, %v", size, typ, n, err)
		}
		big := make([]byte, size)
		if _, n, err = c.Read(big); err != nil || n != size || !bytes.Equal(big, msg) {
			t.Fatalf("size %d: Read = %d, %v", size, n, err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

func TestAPIMisuse(t *testing.T) {
	p, c, _ := pair(t, 4096, 0, nil)
	if err := p.Commit(1, 0); !errors.Is(err, ErrState) {
		t.Fatalf("Commit without Reserve: %v", err)
	}
	if _, err := p.Reserve(p.MaxRecord() + 1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized Reserve: %v", err)
	}
	if _, err := p.Reserve(10); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Reserve(10); !errors.Is(err, ErrState) {
		t.Fatalf("double Reserve: %v", err)
	}
	if err := p.Commit(1, 11); !errors.Is(err, ErrState) {
		t.Fatalf("Commit beyond reservation: %v", err)
	}
	p.Abort()
	if err := c.Release(); !errors.Is(err, ErrState) {
		t.Fatalf("Release without Peek: %v", err)
	}
	_ = p.Write(1, []byte("a"))
	if _, err := c.Peek(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.TryPeek(); !errors.Is(err, ErrState) {
		t.Fatalf("Peek while holding: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ capacity, maxRecord int }{
		{1000, 0}, {512, 0}, {MaxCapacity + MinCapacity, 0}, {4096, 4096}, {4096, 2041}, {4096, 8},
	} {
		if _, err := NewHeap(tc.capacity, tc.maxRecord); !errors.Is(err, ErrConfig) {
			t.Errorf("NewHeap(%d, %d) = %v, want ErrConfig", tc.capacity, tc.maxRecord, err)
		}
	}
	mem, _ := NewHeap(4096, 0)
	if _, err := NewProducer(mem[1:], nil); err == nil {
		t.Error("misaligned memory accepted")
	}
	if _, err := NewConsumer(mem[:100], nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("short memory: %v", err)
	}
}

func TestCloseAndPeerGoneWakeWaiters(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(p *Producer, c *Consumer)
		want error
	}{
		{"close", func(p *Producer, c *Consumer) { _ = c.Close(); _ = p.Close() }, ErrClosed},
		{"peer-gone", func(p *Producer, c *Consumer) { c.PeerGone(); p.PeerGone() }, ErrPeerGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, c, _ := pair(t, 1024, 0, &Options{Spin: time.Microsecond, ParkTimeout: time.Hour})
			for { // fill the ring so the producer blocks too
				if _, err := p.TryReserve(100); err != nil {
					break
				}
				_ = p.Commit(0, 100)
			}
			c2, p2 := make(chan error, 1), make(chan error, 1)
			_, c3, _ := pair(t, 1024, 0, &Options{Spin: time.Microsecond, ParkTimeout: time.Hour})
			go func() { _, err := c3.Peek(); c2 <- err }()
			go func() { _, err := p.Reserve(100); p2 <- err }()
			time.Sleep(20 * time.Millisecond)
			start := time.Now()
			tc.stop(p, c3)
			for _, ch := range []chan error{c2, p2} {
				select {
				case err := <-ch:
					if !errors.Is(err, tc.want) {
						t.Fatalf("got %v, want %v", err, tc.want)
					}
				case <-time.After(time.Second):
					t.Fatal("waiter not woken")
				}
			}
			if d := time.Since(start); d > 100*time.Millisecond {
				t.Fatalf("woken after %v", d)
			}
			_ = c
		})
	}
}

func TestPeerGoneDeliversPublishedFirst(t *testing.T) {
	p, c, _ := pair(t, 4096, 0, nil)
	_ = p.Write(1, []byte("last words"))
	c.PeerGone()
	if _, got := mustRead(t, c); string(got) != "last words" {
		t.Fatalf("got %q", got)
	}
	if _, err := c.Peek(); !errors.Is(err, ErrPeerGone) {
		t.Fatalf("after drain: %v", err)
	}
}

func TestDeadline(t *testing.T) {
	_, c, _ := pair(t, 4096, 0, &Options{ParkTimeout: time.Hour})
	c.SetDeadline(time.Now().Add(30 * time.Millisecond))
	start := time.Now()
	if _, err := c.Peek(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Peek: %v", err)
	}
	if d := time.Since(start); d < 25*time.Millisecond || d > 500*time.Millisecond {
		t.Fatalf("timed out after %v", d)
	}
	// Extending the deadline while waiting takes effect.
	c.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, err := c.Peek(); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	c.SetDeadline(time.Now().Add(-time.Second))
	select {
	case err := <-errc:
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Peek after past deadline: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("a past deadline did not wake the reader")
	}
}

// TestConcurrentRandom streams random-sized messages (whole and fragmented)
// through a small ring with checksums, with waits on both sides.
func TestConcurrentRandom(t *testing.T) {
	for _, o := range []*Options{nil, {Spin: -1, AdaptiveSpin: -1}} {
		p, c, _ := pair(t, 1<<12, 0, o)
		const n = 20000
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(1, 2))
			buf := make([]byte, 8<<10)
			for i := range n {
				size := 8 + rng.IntN(len(buf)-8)
				if rng.IntN(4) > 0 {
					size = 8 + rng.IntN(200)
				}
				msg := buf[:size]
				for j := 8; j < size; j++ {
					msg[j] = byte(rng.Uint32())
				}
				binary.LittleEndian.PutUint32(msg, uint32(i))
				binary.LittleEndian.PutUint32(msg[4:], sum(msg[8:]))
				if err := p.Write(uint16(i), msg); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		for i := range n {
			r, err := c.Peek()
			if err != nil {
				t.Fatal(err)
			}
			if r.Type != uint16(i) || binary.LittleEndian.Uint32(r.Data) != uint32(i) || binary.LittleEndian.Uint32(r.Data[4:]) != sum(r.Data[8:]) {
				t.Fatalf("message %d damaged", i)
			}
			_ = c.Release()
		}
		wg.Wait()
	}
}

func sum(b []byte) uint32 {
	var s uint32 = 2166136261
	for _, x := range b {
		s = (s ^ uint32(x)) * 16777619
	}
	return s
}

func TestFragmentedWriteTimeoutIsSticky(t *testing.T) {
	p, _, _ := pair(t, 4096, 0, &Options{Spin: -1})
	p.SetDeadline(time.Now().Add(20 * time.Millisecond))
	// Nobody reads: the first fragments fill the ring, then the deadline hits.
	err := p.Write(1, make([]byte, 16<<10))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Write: %v", err)
	}
	p.SetDeadline(time.Time{})
	if err := p.Write(1, []byte("after")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Write after a half-sent message: %v (the consumer would see a broken stream)", err)
	}
}
