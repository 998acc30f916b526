package duplex

import (
	"net"
	"testing"
)

// endPair connects two Ends in this process over a socket pair.
func endPair(t *testing.T) (*End, *End) {
	t.Helper()
	a, f, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	b := fc.(*net.UnixConn)
	type res struct {
		e   *End
		err error
	}
	ch := make(chan res, 1)
	go func() {
		e, err := Accept(b, Config{})
		ch <- res{e, err}
	}()
	ea, err := Offer(a, Config{Capacity: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return ea, r.e
}

// TestEndCloseReleases: with no Enter of the caller outstanding, Close has
// released everything when it returns, even while the watcher's PeerGone
// (which takes references of its own) runs; later Enters fail.
func TestEndCloseReleases(t *testing.T) {
	rounds := 200
	if testing.Short() {
		rounds = 20
	}
	for i := range rounds {
		a, b := endPair(t)
		if !a.Enter(RxSide) {
			t.Fatal("Enter on an open End failed")
		}
		a.Exit(RxSide)
		done := make(chan struct{})
		go func() { a.PeerGone(); close(done) }()
		if i%2 == 0 {
			b.Close() // the watcher's PeerGone too
		}
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if a.Memory(0) != nil || a.Memory(1) != nil {
			t.Fatalf("round %d: rings still mapped after Close", i)
		}
		if a.Enter(TxSide) || a.Enter(RxSide) {
			t.Fatal("Enter after Close succeeded")
		}
		<-done
		b.Close()
	}
}

// TestEndHeldReference: a reference held across Close keeps the rings
// mapped; its Exit releases them.
func TestEndHeldReference(t *testing.T) {
	a, b := endPair(t)
	defer b.Close()
	if !a.Enter(RxSide) {
		t.Fatal("Enter failed")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if a.Memory(1) == nil {
		t.Fatal("Close unmapped under a held reference")
	}
	_ = a.Rx.Release() // touching the ring is still safe (ErrState: nothing held)
	a.Exit(RxSide)
	if a.Memory(0) != nil || a.Memory(1) != nil {
		t.Fatal("the last Exit after Close did not unmap")
	}
}
