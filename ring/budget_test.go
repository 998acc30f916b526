package ring

import (
	"testing"
	"time"
)

// TestSpinWindow checks the spin window that the recent waits give the next
// one: at least stallSpin while they were quick, twice their average up to
// AdaptiveSpin, Spin once they are long, and no long memory of one stall.
func TestSpinWindow(t *testing.T) {
	us := func(n int64) int64 { return n * int64(time.Microsecond) }
	newWaiter := func(o Options) *waiter {
		var bell uint32
		w := &waiter{}
		w.init(&bell, o.withDefaults())
		return w
	}
	feed := func(w *waiter, d int64, n int) {
		for range n {
			w.observe(d)
		}
	}

	w := newWaiter(Options{})
	if got := w.budget(); got != int64(DefaultSpin) {
		t.Fatalf("no wait seen yet: window %v, want Spin %v", time.Duration(got), DefaultSpin)
	}
	feed(w, us(2), 64)
	if got := w.budget(); got != stallSpin {
		t.Fatalf("quick exchange (2 µs waits): window %v, want %v", time.Duration(got), time.Duration(stallSpin))
	}
	feed(w, us(40), 64)
	if got := w.budget(); got < us(78) || got > us(80) {
		t.Fatalf("paced at 40 µs: window %v, want about twice the gap (80 µs)", time.Duration(got))
	}
	feed(w, us(90), 64)
	if got := w.budget(); got != int64(DefaultAdaptiveSpin) {
		t.Fatalf("paced at 90 µs: window %v, want the cap %v", time.Duration(got), DefaultAdaptiveSpin)
	}
	feed(w, us(500), 64)
	if got := w.budget(); got != int64(DefaultSpin) {
		t.Fatalf("sparse (500 µs waits): window %v, want Spin %v", time.Duration(got), DefaultSpin)
	}

	// One stall of a second in a quick exchange counts as 2×AdaptiveSpin:
	// the window keeps its floor.
	feed(w, us(2), 64)
	w.observe(int64(time.Second))
	if got := w.budget(); got < stallSpin {
		t.Fatalf("just after one stall: window %v, want at least %v", time.Duration(got), time.Duration(stallSpin))
	}
	// Long waits that last bring it down to Spin; a handful of quick
	// ones widen it again (uncapped, a second-long sample would take
	// about 70).
	feed(w, int64(time.Second), 64)
	if got := w.budget(); got != int64(DefaultSpin) {
		t.Fatalf("after long waits: window %v, want Spin %v", time.Duration(got), DefaultSpin)
	}
	n := 0
	for ; w.budget() < stallSpin; n++ {
		if n == 64 {
			t.Fatalf("64 quick waits after long ones: window still %v", time.Duration(w.budget()))
		}
		w.observe(us(2))
	}
	if n > 8 {
		t.Fatalf("the window widened after %d quick waits, want at most 8", n)
	}

	// A window smaller than the floor stays the user's.
	w = newWaiter(Options{AdaptiveSpin: 30 * time.Microsecond})
	feed(w, us(2), 64)
	if got := w.budget(); got != us(30) {
		t.Fatalf("AdaptiveSpin 30 µs: window %v, want 30 µs", time.Duration(got))
	}
	// No adaptation: Spin alone.
	w = newWaiter(Options{AdaptiveSpin: -1})
	feed(w, us(2), 64)
	if got := w.budget(); got != int64(DefaultSpin) {
		t.Fatalf("AdaptiveSpin off: window %v, want Spin %v", time.Duration(got), DefaultSpin)
	}
}
