package bench

import (
	"context"
	"testing"
)

// TestEcho starts every contender once (real children each) and checks one
// echo of every size byte for byte, from one caller and from two at once, so
// that `go test ./...` exercises the whole harness without benchmarking.
func TestEcho(t *testing.T) {
	fullCheck = true
	t.Cleanup(func() { fullCheck = false })
	for _, c := range contenders {
		t.Run("impl="+c.impl+"/form="+c.form, func(t *testing.T) {
			tg := c.start(t)
			ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
			defer cancel()
			for _, sz := range seqSizes {
				req := payload(sz.n)
				a, b := tg.newCaller(req), tg.newCaller(req)
				for range 2 {
					if err := a(ctx); err != nil {
						t.Fatalf("size %s: %v", sz.name, err)
					}
				}
				errs := make(chan error, 1)
				go func() { errs <- b(ctx) }()
				err := a(ctx)
				if err2 := <-errs; err == nil {
					err = err2
				}
				if err != nil {
					t.Fatalf("size %s, two callers: %v", sz.name, err)
				}
			}
		})
	}
}
