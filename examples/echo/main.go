// Command echo is ringwire's demo: it starts a copy of itself as a child
// process, joins it with a pair of shared-memory rings (sealed memfds handed
// over a Unix socket), sends messages that the child echoes back, and prints
// the round-trip latency and rate it measured.
//
// Until the plugin runtime exists this drives the ring layer directly; the
// child plays the plugin.
//
//	go run ./examples/echo [-n 200000] [-size 64] [-big 1048576]
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"time"

	"github.com/ringwire/ringwire/internal/duplex"
	"github.com/ringwire/ringwire/ring"
)

const childEnv = "RINGWIRE_ECHO_CHILD"

func main() {
	if os.Getenv(childEnv) == "1" {
		os.Exit(child())
	}
	n := flag.Int("n", 200000, "number of round trips")
	size := flag.Int("size", 64, "message size in bytes")
	big := flag.Int("big", 1<<20, "size of the large messages echoed at the end (0: none)")
	flag.Parse()
	if err := run(*n, *size, *big); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}

func run(n, size, big int) error {
	if n < 1 || size < 0 || big < 0 {
		return errors.New("-n must be positive, -size and -big not negative")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	conn, err := duplex.Spawn(cmd)
	if err != nil {
		return fmt.Errorf("start child: %w", err)
	}
	end, err := duplex.Offer(conn, duplex.Config{})
	if err != nil {
		_ = conn.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("offer rings: %w", err)
	}
	err = measure(end, n, size, big)
	_ = end.Close() // hangs up: the child sees its peer gone and exits
	if werr := cmd.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("child: %w", werr)
	}
	return err
}

func measure(end *duplex.End, n, size, big int) error {
	fmt.Printf("transport: shared memory, two %d KiB SPSC rings in sealed memfds, spin-then-futex waits; liveness on the handing-over Unix socket\n",
		end.Tx.Capacity()>>10)
	msg := bytes.Repeat([]byte{0xA5}, size)
	rtts := make([]time.Duration, n)
	warm := min(n, 10000)
	end.Rx.SetDeadline(time.Now().Add(time.Minute))
	for i := range warm {
		if err := roundTrip(end, uint16(i), msg); err != nil {
			return err
		}
	}
	start := time.Now()
	for i := range n {
		t0 := time.Now()
		if err := roundTrip(end, uint16(i), msg); err != nil {
			return err
		}
		rtts[i] = time.Since(t0)
	}
	total := time.Since(start)
	slices.Sort(rtts)
	pct := func(p float64) time.Duration { return rtts[min(len(rtts)-1, int(float64(len(rtts))*p))] }
	fmt.Printf("%d round trips of %d B: p50 %v  p99 %v  p99.9 %v  max %v\n", n, size, pct(0.50), pct(0.99), pct(0.999), rtts[len(rtts)-1])
	fmt.Printf("rate: %.0f calls/s (%.3f µs per call including timing)\n", float64(n)/total.Seconds(), float64(total.Microseconds())/float64(n))

	if big > 0 {
		payload := make([]byte, big)
		for i := range payload {
			payload[i] = byte(i * 31)
		}
		const rounds = 50
		t0 := time.Now()
		for i := range rounds {
			if err := roundTrip(end, uint16(i), payload); err != nil {
				return err
			}
		}
		d := time.Since(t0)
		fmt.Printf("%d echoes of %d KiB: %v each, %.2f GB/s each way\n", rounds, big>>10, d/rounds, float64(2*rounds*big)/d.Seconds()/1e9)
	}
	tx, rx := end.Tx.Stats(), end.Rx.Stats()
	fmt.Printf("host side: sent %d messages (%d wake-ups issued), received %d (%d parks)\n", tx.Messages, tx.WakesSent, rx.Messages, rx.Parks)
	return nil
}

// roundTrip sends msg and checks that the echo is identical.
func roundTrip(end *duplex.End, typ uint16, msg []byte) error {
	if err := end.Tx.Write(typ, msg); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	r, err := end.Rx.Peek()
	if err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	if r.Type != typ || !bytes.Equal(r.Data, msg) {
		return fmt.Errorf("echo mismatch: type %d, %d bytes", r.Type, len(r.Data))
	}
	return end.Rx.Release()
}

// child echoes every message until the parent hangs up.
func child() int {
	conn, err := duplex.Inherited()
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo child:", err)
		return 2
	}
	end, err := duplex.Accept(conn, duplex.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo child:", err)
		return 2
	}
	defer end.Close()
	for {
		r, err := end.Rx.Peek()
		if errors.Is(err, ring.ErrPeerGone) {
			return 0
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "echo child: receive:", err)
			return 1
		}
		if err := end.Tx.Write(r.Type, r.Data); err != nil {
			fmt.Fprintln(os.Stderr, "echo child: send:", err)
			return 1
		}
		if err := end.Rx.Release(); err != nil {
			return 1
		}
	}
}
