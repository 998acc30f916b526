package duplex

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// TestLifetime hammers enter/exit on both sides against concurrent closes:
// the release runs exactly once, after the last reference is gone, and no
// reference is taken after close.
func TestLifetime(t *testing.T) {
	rounds := 2000
	if testing.Short() {
		rounds = 200
	}
	for range rounds {
		var l lifetime
		var inside atomic.Int32 // references held right now
		var freed atomic.Int32
		l.init(func() {
			if n := inside.Load(); n != 0 {
				t.Errorf("released with %d references held", n)
			}
			freed.Add(1)
		})
		var closed atomic.Bool
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := Side(g % 2)
				for i := 0; ; i++ {
					wasClosed := closed.Load()
					if !l.enter(s) {
						return
					}
					if wasClosed {
						t.Error("enter succeeded after close")
					}
					inside.Add(1)
					if i%8 == 0 {
						runtime.Gosched()
					}
					inside.Add(-1)
					l.exit(s)
				}
			}()
		}
		for range 2 { // two concurrent closes: only one drops the End's references
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.Gosched()
				if l.close() {
					closed.Store(true)
					l.exit(TxSide)
					l.exit(RxSide)
				}
			}()
		}
		wg.Wait()
		if n := freed.Load(); n != 1 {
			t.Fatalf("released %d times", n)
		}
	}
}
