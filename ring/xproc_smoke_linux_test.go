package ring_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/duplex"
)

func init() {
	// echo returns every message with the same type until the peer hangs up.
	childRoles["echo"] = func(e *duplex.End, _ string) int {
		for {
			r, err := e.Rx.Peek()
			if err != nil {
				return 0
			}
			if err := e.Tx.Write(r.Type, r.Data); err != nil {
				return 1
			}
			_ = e.Rx.Release()
		}
	}
}

// TestCrossProcessEcho is the smallest end-to-end check: rings in sealed
// memfds offered to a real child process, one message each way.
func TestCrossProcessEcho(t *testing.T) {
	c := startChild(t, "echo", "", duplex.Config{Capacity: 1 << 16})
	for i := range 100 {
		msg := bytes.Repeat([]byte{byte(i)}, i*10)
		if err := c.End.Tx.Write(uint16(i), msg); err != nil {
			t.Fatal(err)
		}
		c.End.Rx.SetDeadline(time.Now().Add(5 * time.Second))
		r, err := c.End.Rx.Peek()
		if err != nil {
			t.Fatal(err)
		}
		if r.Type != uint16(i) || !bytes.Equal(r.Data, msg) {
			t.Fatalf("echo %d: type %d, %d bytes", i, r.Type, len(r.Data))
		}
		_ = c.End.Rx.Release()
	}
}
