package ring

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// fill stages one-record messages until the ring has no room for another.
func fill(t *testing.T, p *Producer, size int) {
	t.Helper()
	for {
		buf, err := p.TryReserve(size)
		if errors.Is(err, ErrFull) {
			p.Flush()
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		clear(buf)
		if err := p.Commit(1, size); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReserveUntilDeadline(t *testing.T) {
	p, _, _ := pair(t, 4096, 0, &Options{Spin: -1})
	fill(t, p, 100)
	start := time.Now()
	if _, err := p.ReserveUntil(100, start.Add(30*time.Millisecond), nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("ReserveUntil on a full ring: %v", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond || d > 80*time.Millisecond {
		t.Fatalf("returned after %v, want about 30ms", d)
	}
	// A deadline in the past: one look, no waiting.
	start = time.Now()
	if _, err := p.ReserveUntil(100, time.Unix(0, 1), nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("ReserveUntil with a past deadline: %v", err)
	}
	if d := time.Since(start); d > 5*time.Millisecond {
		t.Fatalf("a past deadline waited %v", d)
	}
	// The side's deadline, when earlier, still applies.
	p.SetDeadline(time.Now().Add(10 * time.Millisecond))
	start = time.Now()
	if _, err := p.ReserveUntil(100, time.Now().Add(time.Hour), nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("ReserveUntil past SetDeadline's: %v", err)
	}
	if d := time.Since(start); d > 60*time.Millisecond {
		t.Fatalf("SetDeadline's deadline ignored: waited %v", d)
	}
}

func TestReserveUntilRoomIgnoresBound(t *testing.T) {
	p, _, _ := pair(t, 4096, 0, nil)
	cancel := make(chan struct{})
	close(cancel)
	// With room, neither a past deadline nor a closed cancel stops it.
	if _, err := p.ReserveUntil(10, time.Unix(0, 1), cancel); err != nil {
		t.Fatalf("ReserveUntil with room: %v", err)
	}
	p.Abort()
}

func TestReserveUntilCancel(t *testing.T) {
	p, _, _ := pair(t, 4096, 0, &Options{Spin: -1, ParkTimeout: time.Hour})
	fill(t, p, 100)
	cancel := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := p.ReserveUntil(100, time.Time{}, cancel)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it park
	start := time.Now()
	close(cancel)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrCanceled) {
			t.Fatalf("ReserveUntil after cancel: %v", err)
		}
		// CancelPoll (1ms) plus scheduling on a busy machine.
		if d := time.Since(start); d > 50*time.Millisecond {
			t.Fatalf("cancel noticed after %v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReserveUntil ignored its cancel channel (ParkTimeout is an hour)")
	}
	if p.w.state.Load() != stateOpen {
		t.Fatal("a cancel changed the producer's state")
	}
}

// A wait for room still ends as soon as the consumer frees it, bound or not.
func TestReserveUntilWakes(t *testing.T) {
	p, c, _ := pair(t, 4096, 0, &Options{Spin: -1, ParkTimeout: time.Hour})
	fill(t, p, 100)
	cancel := make(chan struct{})
	defer close(cancel)
	errc := make(chan error, 1)
	go func() {
		buf, err := p.ReserveUntil(100, time.Now().Add(time.Minute), cancel)
		if err == nil {
			copy(buf, "late")
			err = p.Commit(2, 4)
			p.Flush()
		}
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	for range 3 {
		mustRead(t, c)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the bounded waiter missed the consumer's wake-up")
	}
}

// StagePartsUntil cut short after the first fragment leaves the message open:
// nothing else can be written until Resume finishes it, and the consumer gets
// the message whole, then the next one.
func TestStagePartsUntilResume(t *testing.T) {
	p, c, _ := pair(t, 4096, 0, &Options{Spin: -1})
	head := bytes.Repeat([]byte("h"), 1000)
	body := make([]byte, 9000) // 10,000 bytes: 5 fragments of up to 2040
	for i := range body {
		body[i] = byte(i * 13)
	}
	msg := append(bytes.Clone(head), body...)
	sent, err := p.StagePartsUntil(5, head, body, time.Now().Add(20*time.Millisecond), nil)
	if !errors.Is(err, ErrTimeout) || sent == 0 || sent >= len(msg) {
		t.Fatalf("StagePartsUntil into a ring nobody reads: sent %d, %v", sent, err)
	}
	if p.Unfinished() != len(msg)-sent {
		t.Fatalf("Unfinished = %d, want %d", p.Unfinished(), len(msg)-sent)
	}
	if err := p.Write(1, []byte("intruder")); !errors.Is(err, ErrState) {
		t.Fatalf("Write inside an open message: %v", err)
	}
	if _, err := p.TryReserve(1); !errors.Is(err, ErrState) {
		t.Fatalf("TryReserve inside an open message: %v", err)
	}
	if _, err := p.StagePartsUntil(1, nil, nil, time.Time{}, nil); !errors.Is(err, ErrState) {
		t.Fatalf("StagePartsUntil inside an open message: %v", err)
	}
	if err := p.Resume(msg[sent+1:]); !errors.Is(err, ErrState) {
		t.Fatalf("Resume with the wrong rest: %v", err)
	}
	// SetDeadline's deadline (in the past) does not apply to Resume.
	p.SetDeadline(time.Unix(1, 0))
	errc := make(chan error, 1)
	go func() { errc <- p.Resume(bytes.Clone(msg[sent:])) }()
	r, err := c.Peek()
	if err != nil {
		t.Fatal(err)
	}
	if r.Type != 5 || !bytes.Equal(r.Data, msg) {
		t.Fatalf("reassembled %d bytes of type %d, want %d of type 5", len(r.Data), r.Type, len(msg))
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Resume: %v", err)
	}
	p.SetDeadline(time.Time{})
	if err := p.Write(6, []byte("next")); err != nil {
		t.Fatal(err)
	}
	if typ, data := mustRead(t, c); typ != 6 || string(data) != "next" {
		t.Fatalf("after the resumed message: type %d %q", typ, data)
	}
	if s := p.Stats(); s.Messages != 2 || s.Bytes != uint64(len(msg)+4) {
		t.Fatalf("producer stats %+v, want 2 messages of %d bytes", s, len(msg)+4)
	}
}

// Nothing goes out when the bound ends before the first fragment.
func TestStagePartsUntilNothingSent(t *testing.T) {
	p, c, _ := pair(t, 4096, 0, &Options{Spin: -1})
	fill(t, p, 100)
	cancel := make(chan struct{})
	close(cancel)
	sent, err := p.StagePartsUntil(5, make([]byte, 5000), nil, time.Time{}, cancel)
	if !errors.Is(err, ErrCanceled) || sent != 0 || p.Unfinished() != 0 {
		t.Fatalf("StagePartsUntil on a full ring, canceled: sent %d, %v, unfinished %d", sent, err, p.Unfinished())
	}
	for {
		if _, ok, _ := c.TryPeek(); !ok {
			break
		}
		_ = c.Release()
	}
	if _, err := p.StagePartsUntil(5, []byte("x"), []byte("y"), time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	p.Flush()
	if typ, data := mustRead(t, c); typ != 5 || string(data) != "xy" {
		t.Fatalf("got type %d %q", typ, data)
	}
}

// Close ends a Resume waiting for room.
func TestResumeClosed(t *testing.T) {
	p, _, _ := pair(t, 4096, 0, &Options{Spin: -1})
	msg := make([]byte, 10000)
	sent, err := p.StagePartsUntil(5, msg, nil, time.Now().Add(10*time.Millisecond), nil)
	if !errors.Is(err, ErrTimeout) || sent == 0 {
		t.Fatalf("sent %d, %v", sent, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- p.Resume(msg[sent:]) }()
	time.Sleep(10 * time.Millisecond)
	_ = p.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Resume after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end Resume")
	}
}

// An idle waiter's futex sleeps double, from ParkTimeout up to ten times it,
// and a wait that ends while spinning starts them over.
func TestParkGrowsWhileIdle(t *testing.T) {
	p, c, _ := pair(t, 4096, 0, &Options{Spin: -1, AdaptiveSpin: -1, ParkTimeout: 10 * time.Millisecond})
	c.SetDeadline(time.Now().Add(600 * time.Millisecond))
	if _, err := c.Peek(); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Peek on an empty ring: %v", err)
	}
	// 10+20+40+80 ms, then 100 ms each: about 9 sleeps in 600 ms (60
	// without the growth); the deadline cuts the last one short.
	if n := c.Stats().Parks; n < 5 || n > 15 {
		t.Fatalf("%d sleeps in 600ms of idling with ParkTimeout 10ms, want about 9", n)
	}
	if c.w.sleep != 100*time.Millisecond {
		t.Fatalf("next sleep %v after idling, want the cap 100ms", c.w.sleep)
	}
	// Traffic again: a message found while spinning resets the sleeps.
	c.w.spin = int64(time.Second)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := p.Write(1, []byte("x")); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(time.Millisecond)
		_ = p.Write(1, []byte("y"))
	}()
	for range 2 {
		if _, err := c.Peek(); err != nil {
			t.Fatal(err)
		}
		if err := c.Release(); err != nil {
			t.Fatal(err)
		}
	}
	if c.w.sleep != 10*time.Millisecond {
		t.Fatalf("next sleep %v after a wait that ended spinning, want ParkTimeout 10ms", c.w.sleep)
	}
}
