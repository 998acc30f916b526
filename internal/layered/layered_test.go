package layered

import (
	"errors"
	"fmt"
	"testing"
)

var (
	low  = errors.New("ring: peer gone")
	mid  = errors.New("transport: peer gone")
	high = errors.New("protocol: peer gone")
)

func TestWrap(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{low, "transport: peer gone"},
		{fmt.Errorf("%w: the process exited", low), "transport: peer gone: the process exited"},
		{fmt.Errorf("reading: %w", low), "transport: peer gone: reading"},
		{fmt.Errorf("reading: %w (pid 3)", low), "transport: peer gone: reading: pid 3"},
		{errors.New("unrelated"), "transport: peer gone: unrelated"},
	} {
		got := Wrap(mid, low, c.err)
		if got.Error() != c.want {
			t.Errorf("Wrap(%q) = %q, want %q", c.err, got, c.want)
		}
		if !errors.Is(got, mid) || !errors.Is(got, c.err) {
			t.Errorf("Wrap(%q) does not match its sentinel or the error", c.err)
		}
	}
	// Twice: no stutter.
	got := Wrap(high, mid, Wrap(mid, low, fmt.Errorf("%w: hung up", low)))
	if got.Error() != "protocol: peer gone: hung up" || !errors.Is(got, low) || !errors.Is(got, mid) || !errors.Is(got, high) {
		t.Errorf("two layers: %q", got)
	}
}
