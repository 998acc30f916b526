package ring

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestBellTamperingBoundedByParkTimeout: a hostile producer that publishes a
// record without waking the sleeping consumer, and rewrites the consumer's
// bell (clearing its asleep bit, moving its sequence) so that no wake could
// ever be owed, delays the consumer by at most the futex sleep it is in: one
// ParkTimeout for a side that was not idle (docs/ring.md, "Waiting"). It
// never hangs it and the record is delivered intact.
func TestBellTamperingBoundedByParkTimeout(t *testing.T) {
	const park = 50 * time.Millisecond
	mem, err := NewHeap(4096, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConsumer(mem, &Options{ParkTimeout: park})
	if err != nil {
		t.Fatal(err)
	}
	g := c.g
	type result struct {
		payload string
		err     error
		at      time.Time
	}
	got := make(chan result, 1)
	go func() {
		r, err := c.Peek()
		got <- result{string(r.Data), err, time.Now()}
	}()
	// Wait until the consumer sleeps: its bell has the asleep bit.
	for deadline := time.Now().Add(5 * time.Second); atomic.LoadUint32(g.dataBell)&bellAsleep == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the consumer never went to sleep")
		}
		time.Sleep(time.Millisecond)
	}
	// Publish a record, no wake; scribble on the bell.
	payload := []byte("tampered but delivered")
	putRecordHeader(g.data, 0, uint32(len(payload)), 7, 0)
	copy(g.data[RecordHeaderSize:], payload)
	atomic.StoreUint64(g.tailp, align8(RecordHeaderSize+uint64(len(payload))))
	published := time.Now()
	atomic.StoreUint32(g.dataBell, (atomic.LoadUint32(g.dataBell)+bellSeq)&^bellAsleep)
	select {
	case r := <-got:
		if r.err != nil || r.payload != string(payload) {
			t.Fatalf("Peek: %q, %v", r.payload, r.err)
		}
		// One futex sleep at most (plus scheduling on a loaded machine).
		if d := r.at.Sub(published); d > park+100*time.Millisecond {
			t.Fatalf("the record waited %v after it was published; the bound is one ParkTimeout (%v)", d, park)
		}
		t.Logf("delivered %v after publication without a wake (ParkTimeout %v)", r.at.Sub(published), park)
	case <-time.After(10 * time.Second):
		t.Fatal("the consumer hung after its bell was rewritten")
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
}
