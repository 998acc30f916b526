package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/transport"
)

// Liveness: what a Peer does when the other side stops reading (SIGSTOP, or
// a reader stuck in a view handler), when both sides flood each other, and
// how much memory a flooding peer can make it hold. See DESIGN.md, "Send
// paths, budgets and readers", and protocol/sending.go.
//
// Every test runs across real processes (the re-exec child of
// xproc_linux_test.go) on shared memory ("shm"), framed Unix ("framed") and
// framed TCP with mutual TLS ("tcp"). Every load is bounded in calls and in
// time, and every wait for a result has a bound that fails the test (with a
// goroutine dump) instead of hanging it.

// liveModes are the transports of the liveness tests.
var liveModes = []string{"shm", "framed", "tcp"}

// lateSlack is how long after its deadline a call or ping may return: 50
// ms, or 250 ms under the race detector, which slows everything several
// times over.
var lateSlack = map[bool]time.Duration{false: 50 * time.Millisecond, true: 250 * time.Millisecond}[raceEnabled]

func init() {
	childRoles["live"] = liveChild
	childRoles["rawflood"] = rawFloodChild
}

// liveChild serves liveMux until the connection ends.
func liveChild(c transport.Conn) int {
	p := NewPeer(c, Options{Mux: liveMux(), Logger: quiet})
	<-p.Done()
	return 0
}

// liveMux is what the liveness child serves: echoMux and
//
//	delay      sleeps the milliseconds its request holds (decimal), honouring
//	           its context, then answers "done"
//	wedge      a view handler that sleeps the milliseconds its request holds
//	           (at most 5 s) on the reading goroutine: the Peer keeps running
//	           (its handlers, its callers) but reads nothing meanwhile
//	flood      starts a flood of calls to the host (a floodSpec, JSON) and
//	           answers at once
//	floodwait  waits for that flood to end and answers its floodTally (JSON)
func liveMux() *Mux {
	m := echoMux()
	m.Handle("delay", func(ctx context.Context, req []byte) ([]byte, error) {
		ms, _ := strconv.Atoi(string(req))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return []byte("done"), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	m.Handle("wedge", func(ctx context.Context, req []byte) ([]byte, error) {
		// Take the reading token and keep it: the Peer goes on running
		// (handlers, callers, sends) but nothing reads the connection.
		ms, _ := strconv.Atoi(string(req))
		p, _ := PeerFromContext(ctx)
		for deadline := time.Now().Add(time.Second); !p.reading.CompareAndSwap(0, 1); {
			if time.Now().After(deadline) {
				return nil, errors.New("the reading token never came free")
			}
			time.Sleep(10 * time.Microsecond)
		}
		time.Sleep(min(time.Duration(ms)*time.Millisecond, 5*time.Second))
		p.release()
		return []byte("unwedged"), nil
	})
	var mu sync.Mutex
	var cur chan *floodTally
	m.Handle("flood", func(ctx context.Context, req []byte) ([]byte, error) {
		var s floodSpec
		if err := json.Unmarshal(req, &s); err != nil {
			return nil, err
		}
		p, _ := PeerFromContext(ctx)
		ch := make(chan *floodTally, 1)
		mu.Lock()
		cur = ch
		mu.Unlock()
		go func() { ch <- flood(p, s, nil) }()
		return []byte("started"), nil
	})
	m.Handle("floodwait", func(ctx context.Context, req []byte) ([]byte, error) {
		mu.Lock()
		ch := cur
		mu.Unlock()
		if ch == nil {
			return nil, errors.New("no flood started")
		}
		select {
		case t := <-ch:
			ch <- t
			return json.Marshal(t)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	return m
}

// hostMux is what the host serves in the liveness tests:
//
//	hostecho  returns a copy of its request (on a goroutine of its own or
//	          inline)
//	hostview  a view handler returning its request: its reply is sent by the
//	          reading goroutine (post, the outbox)
//	never     holds its request until release is closed, ignoring its context
//	alloc     answers with a new reply as large as its request, of random
//	          bytes (incompressible: on TCP it fills the socket, as a reply
//	          the peer does not read should)
func hostMux(release <-chan struct{}) *Mux {
	m := NewMux()
	m.Handle("hostecho", func(ctx context.Context, req []byte) ([]byte, error) { return bytes.Clone(req), nil })
	m.HandleView("hostview", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	m.Handle("never", func(ctx context.Context, req []byte) ([]byte, error) {
		<-release
		return nil, nil
	})
	m.Handle("alloc", func(ctx context.Context, req []byte) ([]byte, error) {
		return floodRequest(len(req), false, rand.Uint64()), nil
	})
	return m
}

// floodSpec describes a flood of calls (or pings) from one Peer.
type floodSpec struct {
	Methods      []string      // goroutine g calls Methods[g%len]; "" pings
	Size         int           // request bytes
	Compressible bool          // requests of a repeated pattern instead of random bytes
	Goroutines   int           // concurrent callers
	Calls        int           // calls per goroutine, at most
	Timeout      time.Duration // each call's deadline
	Duration     time.Duration // no call starts after this (0: no bound but Calls and stop)
}

// floodTally is what came back from a flood.
type floodTally struct {
	Calls     int64
	OK        int64
	Deadline  int64         // context.DeadlineExceeded
	Exhausted int64         // CodeResourceExhaust
	Stalled   int64         // the connection was closed with ErrStalled
	Other     int64         // anything else
	Late      int64         // returned more than lateSlack after the deadline
	MaxLate   time.Duration // the latest return after a deadline
	Errs      []string      // the first unexpected errors, with when they came
	mu        sync.Mutex
	start     time.Time
}

func (t *floodTally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := fmt.Sprintf("%d calls: %d ok, %d deadline, %d exhausted, %d stalled, %d other; %d late (max %v past the deadline)",
		t.Calls, t.OK, t.Deadline, t.Exhausted, t.Stalled, t.Other, t.Late, t.MaxLate.Round(time.Millisecond))
	if len(t.Errs) > 0 {
		s += "; first errors: " + strings.Join(t.Errs, " | ")
	}
	return s
}

// record counts one call that took took with deadline timeout.
func (t *floodTally) record(err error, took, timeout time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.Calls++
	var e *Error
	switch {
	case err == nil:
		t.OK++
	case errors.Is(err, context.DeadlineExceeded):
		t.Deadline++
	case errors.As(err, &e) && e.Code == CodeResourceExhaust:
		t.Exhausted++
	case errors.Is(err, ErrStalled):
		t.Stalled++
	default:
		t.Other++
		if len(t.Errs) < 4 {
			t.Errs = append(t.Errs, fmt.Sprintf("at +%v after %v: %v", time.Since(t.start).Round(time.Millisecond), took.Round(time.Millisecond), err))
		}
	}
	if late := took - timeout; timeout > 0 && late > 0 {
		t.MaxLate = max(t.MaxLate, late)
		if late > lateSlack {
			t.Late++
		}
	}
}

// flood runs s against p and returns the tally once every call returned;
// it starts no call once stop is closed. Duration counts from when the
// requests are made.
func flood(p *Peer, s floodSpec, stop <-chan struct{}) *floodTally {
	reqs := make([][]byte, s.Goroutines)
	for g := range reqs {
		reqs[g] = floodRequest(s.Size, s.Compressible, uint64(g))
	}
	tally := &floodTally{start: time.Now()}
	end := time.Time{}
	if s.Duration > 0 {
		end = tally.start.Add(s.Duration)
	}
	var wg sync.WaitGroup
	for g := range s.Goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			method := ""
			if len(s.Methods) > 0 {
				method = s.Methods[g%len(s.Methods)]
			}
			req := reqs[g]
			for range s.Calls {
				if isDone(stop) || !end.IsZero() && time.Now().After(end) || isDone(p.Done()) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
				start := time.Now()
				var err error
				if method == "" {
					err = p.Ping(ctx)
				} else {
					_, err = p.Call(ctx, method, req)
				}
				took := time.Since(start)
				cancel()
				tally.record(err, took, s.Timeout)
			}
		}()
	}
	wg.Wait()
	return tally
}

// floodRequest returns n bytes: random (incompressible), or a repeated
// pattern that LZ4 and ZSTD shrink a hundredfold.
func floodRequest(n int, compressible bool, seed uint64) []byte {
	b := make([]byte, n)
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	r := rand.NewChaCha8(key)
	if !compressible {
		_, _ = r.Read(b)
		return b
	}
	pat := make([]byte, 64)
	_, _ = r.Read(pat)
	for i := 0; i < n; i += len(pat) {
		copy(b[i:], pat)
	}
	return b
}

// floodAsync runs flood on another goroutine.
func floodAsync(p *Peer, s floodSpec, stop <-chan struct{}) <-chan *floodTally {
	ch := make(chan *floodTally, 1)
	go func() { ch <- flood(p, s, stop) }()
	return ch
}

// waitTally waits up to d for a flood's tally, failing the test (with every
// goroutine's stack) if the flood's calls do not all return.
func waitTally(t *testing.T, ch <-chan *floodTally, d time.Duration, what string) *floodTally {
	t.Helper()
	select {
	case tally := <-ch:
		return tally
	case <-time.After(d):
		t.Fatalf("%s: calls still running %v after the load ended: wedged\n%s", what, d, allStacks())
		return nil
	}
}

func allStacks() []byte {
	buf := make([]byte, 1<<20)
	return buf[:runtime.Stack(buf, true)]
}

// startChildFlood makes the child flood the host.
func startChildFlood(t *testing.T, host *Peer, s floodSpec) {
	t.Helper()
	spec, _ := json.Marshal(s)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := host.Call(ctx, "flood", spec); err != nil || string(out) != "started" {
		t.Fatalf("starting the child's flood: %q %v", out, err)
	}
}

// childTally asks the child for its flood's tally, waiting up to d.
func childTally(t *testing.T, host *Peer, d time.Duration) *floodTally {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	out, err := host.Call(ctx, "floodwait", nil)
	if err != nil {
		t.Errorf("the child's flood tally: %v", err)
		return nil
	}
	tally := new(floodTally)
	if err := json.Unmarshal(out, tally); err != nil {
		t.Fatalf("the child's flood tally %q: %v", out, err)
	}
	return tally
}

// signalChild sends sig to the test's own child (by its pid: os.Process
// refuses once it has been reaped).
func signalChild(t *testing.T, ch *child, sig syscall.Signal) {
	t.Helper()
	if err := ch.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%v to the child %d: %v", sig, ch.cmd.Process.Pid, err)
	}
}

// outcome waits up to d for a Peer whose peer resumed to either work again
// (a new call succeeds: "works") or be closed ("closed", with Err set).
func outcome(t *testing.T, p *Peer, d time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	end := start.Add(d)
	var last error
	for time.Now().Before(end) {
		select {
		case <-p.Done():
			if p.Err() == nil {
				t.Fatal("Done is closed but Err is nil")
			}
			return "closed", time.Since(start)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		out, err := p.Call(ctx, "echo", []byte("alive?"))
		cancel()
		if err == nil && string(out) == "alive?" {
			return "works", time.Since(start)
		}
		last = err
	}
	t.Fatalf("neither working nor closed %v after the peer resumed (last call: %v; Err %v)\n%s", d, last, p.Err(), allStacks())
	return "", 0
}

// checkBounded fails the test unless every call of tally returned within
// its deadline + lateSlack with success or context.DeadlineExceeded (or,
// with stalledOK, an error matching ErrStalled: the connection was closed
// because the peer read nothing for SendTimeout).
func checkBounded(t *testing.T, what string, tally *floodTally, stalledOK bool) {
	t.Helper()
	checkBoundedSlack(t, what, tally, stalledOK, lateSlack)
}

// checkBoundedSlack is checkBounded with a slack of its own.
func checkBoundedSlack(t *testing.T, what string, tally *floodTally, stalledOK bool, slack time.Duration) {
	t.Helper()
	t.Logf("%s: %v", what, tally)
	if tally.MaxLate > slack {
		t.Errorf("%s: calls returned up to %v after their deadline, more than %v", what, tally.MaxLate, slack)
	}
	checkErrors(t, what, tally, stalledOK)
}

// checkErrors is checkBounded without the timing: for the calls of a
// process that was itself stopped (its calls could not return while it
// was).
func checkErrors(t *testing.T, what string, tally *floodTally, stalledOK bool) {
	t.Helper()
	if tally.Other > 0 || tally.Exhausted > 0 || tally.Stalled > 0 && !stalledOK {
		t.Errorf("%s: %d calls failed with something else than their own deadline: %v", what, tally.Other+tally.Exhausted+tally.Stalled, tally.Errs)
	}
}

// freezer stops the child from reading for d: SIGSTOP (resumed by the
// returned function), or a view handler that holds its reading goroutine
// (the returned function waits for it to end).
type freezer func(t *testing.T, host *Peer, ch *child, d time.Duration) (resume func())

func freezeBySignal(t *testing.T, host *Peer, ch *child, d time.Duration) func() {
	signalChild(t, ch, syscall.SIGSTOP)
	return func() { signalChild(t, ch, syscall.SIGCONT) }
}

func freezeByWedge(t *testing.T, host *Peer, ch *child, d time.Duration) func() {
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Second)
		defer cancel()
		out, err := host.Call(ctx, "wedge", []byte(strconv.Itoa(int(d/time.Millisecond))))
		if err == nil && string(out) != "unwedged" {
			err = fmt.Errorf("wedge answered %q", out)
		}
		res <- err
	}()
	return func() {
		select {
		case err := <-res:
			if err != nil {
				t.Errorf("the wedge call: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("the wedge call did not return 5s after its handler returned")
		}
	}
}

// TestLiveStoppedPeer (1, 2): the child stops reading in both directions
// (SIGSTOP) for a second while the host's calls, view calls and pings are
// in flight both ways, and while the host's reader has view-handler replies
// for the child to send. Every call and ping with a deadline returns within
// its deadline + 50 ms with context.DeadlineExceeded, never with an error
// that closes the connection. After SIGCONT the connection works again: the
// stop (1 s) is far shorter than SendTimeout (10 s), so nothing may close it
// on any transport.
func TestLiveStoppedPeer(t *testing.T) {
	for _, mode := range liveModes {
		t.Run(mode, func(t *testing.T) { liveFrozen(t, mode, freezeBySignal, true, 256<<10, Options{}, "works") })
	}
}

// TestLiveWedgedPeer (1): the child's Peer keeps running (its handlers and
// callers go on, it keeps sending) but reads nothing for a second: its
// reading token is held by one of its handlers. Same expectations as
// TestLiveStoppedPeer.
func TestLiveWedgedPeer(t *testing.T) {
	for _, mode := range liveModes {
		t.Run(mode, func(t *testing.T) { liveFrozen(t, mode, freezeByWedge, false, 256<<10, Options{}, "works") })
	}
}

// TestLiveStoppedPastSendTimeout (2): the child stays stopped three times
// the host's SendTimeout (300 ms). Whether the host had an answer waiting
// that long depends on timing (what the child had asked before it stopped
// and whether the ring had room), so either outcome is right, within a
// bound: the connection works again, or it was closed with ErrStalled. Calls
// return within their deadline + 50 ms in either case.
func TestLiveStoppedPastSendTimeout(t *testing.T) {
	for _, mode := range liveModes {
		t.Run(mode, func(t *testing.T) {
			liveFrozen(t, mode, freezeBySignal, true, 256<<10, Options{SendTimeout: 300 * time.Millisecond}, "")
		})
	}
}

// TestLiveStoppedPeerLarge (1): TestLiveStoppedPeer with the host's calls
// of 3 MiB, more than one record of a 4 MiB ring (a fragmented message on
// shared memory): each call still returns by its deadline + 50 ms.
func TestLiveStoppedPeerLarge(t *testing.T) {
	for _, mode := range liveModes {
		t.Run(mode, func(t *testing.T) { liveFrozen(t, mode, freezeBySignal, true, 3<<20, Options{}, "works") })
	}
}

// liveFrozen runs the frozen-peer scenario, the host calling with requests
// of size bytes; want is the expected outcome
// after the resume ("works", "closed", or "" for either).
func liveFrozen(t *testing.T, mode string, freeze freezer, stopped bool, size int, o Options, want string) {
	o.Mux, o.Logger = hostMux(nil), quiet
	host, ch := peerWithChildOpts(t, "live", mode, o)
	// Messages of several MiB through TLS and compression cost a caller
	// tens of milliseconds of CPU on its own reading side (a record being
	// decrypted, a frame being decompressed) before it sees its deadline,
	// more on two loaded vCPUs: they get a slack of a second, and a
	// freeze three times as long, so a wedged call (late by the freeze)
	// still tells.
	frozen, slack := time.Second, lateSlack
	if size > 1<<20 {
		frozen, slack = 3*time.Second, time.Second
	}
	if _, err := host.Call(context.Background(), "echo", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	// The child calls the host's view handler with 256 KiB requests: the
	// host's reading goroutine has replies to send when the child stops.
	startChildFlood(t, host, floodSpec{Methods: []string{"hostview", "hostecho"}, Size: 256 << 10, Goroutines: 8,
		Calls: 1000, Timeout: 300 * time.Millisecond, Duration: 4 * time.Second})
	stop := make(chan struct{})
	calls := floodAsync(host, floodSpec{Methods: []string{"echo", "echoview"}, Size: size, Goroutines: 4,
		Calls: 1000, Timeout: 200 * time.Millisecond}, stop)
	pings := floodAsync(host, floodSpec{Goroutines: 1, Calls: 1000, Timeout: 100 * time.Millisecond}, stop)
	time.Sleep(200 * time.Millisecond) // traffic both ways
	before := host.Stats()
	resume := freeze(t, host, ch, frozen)
	frozenAt := time.Now()
	time.Sleep(frozen)
	resume()
	resumedAt := time.Now()
	close(stop)
	// Every call in flight ends by its deadline (200 ms) + slack: 1 s is
	// generous on a loaded machine and still tells a wedge from a delay.
	ct := waitTally(t, calls, time.Second+slack, "host calls")
	pt := waitTally(t, pings, time.Second+slack, "host pings")
	after := host.Stats()
	t.Logf("frozen for %v; host sent %d messages, received %d while frozen and after",
		resumedAt.Sub(frozenAt).Round(time.Millisecond), after.MessagesSent-before.MessagesSent, after.MessagesRecv-before.MessagesRecv)

	// Calls refused for the child's MaxPendingBytes budget (16 MiB: four
	// 3 MiB requests held for their handlers plus the answers that wait for
	// room, when the backlog of the freeze comes in at once) are the
	// documented backpressure, refused at once and never wedged, as in
	// TestLiveMutualFlood. They are logged, not failed.
	if ct.Exhausted > 0 || pt.Exhausted > 0 {
		t.Logf("refused for the budget: %d calls, %d pings", ct.Exhausted, pt.Exhausted)
	}
	ct.Exhausted, pt.Exhausted = 0, 0
	checkBoundedSlack(t, "host calls", ct, want != "works", slack)
	checkBoundedSlack(t, "host pings", pt, want != "works", slack)
	if ct.Deadline == 0 || pt.Deadline == 0 {
		t.Errorf("no call (%d) or no ping (%d) reached its deadline while the child was frozen: it was not", ct.Deadline, pt.Deadline)
	}

	got, took := outcome(t, host, 5*time.Second)
	t.Logf("after the resume: %s (%v later; Err %v)", got, took.Round(time.Millisecond), host.Err())
	switch {
	case want != "" && got != want:
		t.Errorf("after the resume the connection %s (Err %v), want %s", got, host.Err(), want)
	case got == "closed" && !errors.Is(host.Err(), ErrStalled):
		t.Errorf("closed with %v, want ErrStalled", host.Err())
	}
	if got == "works" {
		if ctt := childTally(t, host, 10*time.Second); ctt == nil {
		} else if stopped {
			// The child's own calls could not return while it was
			// stopped: only their errors say something.
			t.Logf("child calls: %v", ctt)
			checkErrors(t, "child calls", ctt, false)
		} else {
			checkBounded(t, "child calls", ctt, false)
		}
	}
}

// TestLiveMutualFlood (3): both sides serve (a handler and a view handler)
// and call each other at once, so both directions fill and both readers
// have replies to send. No deadlock: every call returns (success or its own
// deadline) within a bound, and a fresh call afterwards succeeds.
//
//	256KiB: requests of 256 KiB from 32 goroutines each way (8 MiB in
//	        flight each way, twice a ring), to a handler and a view handler;
//	1.5MiB: view calls of 1.5 MiB (a reply larger than the outbox's 1 MiB,
//	        within a shm record) from 6 goroutines each way, while 2 more
//	        on each side ping: a pong must not wait behind a large reply.
func TestLiveMutualFlood(t *testing.T) {
	floods := []struct {
		name         string
		host, child  []string
		size, gorout int
	}{
		{"256KiB", []string{"echo", "echoview"}, []string{"hostecho", "hostview"}, 256 << 10, 32},
		{"1.5MiB", []string{"echoview", "echoview", "echoview", ""}, []string{"hostview", "hostview", "hostview", ""}, 1536 << 10, 8},
	}
	for _, mode := range liveModes {
		for _, f := range floods {
			t.Run(mode+"/"+f.name, func(t *testing.T) {
				host, _ := peerWithChildOpts(t, "live", mode, Options{Mux: hostMux(nil), Logger: quiet})
				spec := floodSpec{Size: f.size, Goroutines: f.gorout, Calls: 20, Timeout: time.Second, Duration: 1500 * time.Millisecond}
				cs := spec
				cs.Methods = f.child
				startChildFlood(t, host, cs)
				hs := spec
				hs.Methods = f.host
				start := time.Now()
				ht := waitTally(t, floodAsync(host, hs, nil), spec.Duration+spec.Timeout+2*time.Second, "host calls")
				t.Logf("host flood done after %v", time.Since(start).Round(time.Millisecond))
				// Calls refused for the MaxPendingBytes budget are the
				// documented backpressure (refused at once, never wedged).
				ht.Exhausted = 0
				checkBounded(t, "host calls", ht, false)
				if ct := childTally(t, host, 5*time.Second); ct != nil {
					ct.Exhausted = 0
					checkBounded(t, "child calls", ct, false)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				if out, err := host.Call(ctx, "echo", []byte("after")); err != nil || string(out) != "after" {
					t.Errorf("a fresh call after the flood: %q %v (Err %v)\n%s", out, err, host.Err(), allStacks())
				}
				if ht.OK == 0 {
					t.Errorf("no host call succeeded during the flood")
				}
			})
		}
	}
}

// TestLiveDeadlineIsolation (4): the child is stopped for a second, so its
// ring (or socket) fills; 16 callers' 100 ms deadlines expire while they
// wait for room. A call with a 10 s deadline started before the stop still
// succeeds after the resume, and later calls work. (The bug this guards:
// the long call failed after 0.5 s with "peer gone: context deadline
// exceeded", and every later call failed too.)
func TestLiveDeadlineIsolation(t *testing.T) {
	for _, mode := range liveModes {
		t.Run(mode, func(t *testing.T) {
			host, ch := peerWithChildOpts(t, "live", mode, Options{Logger: quiet})
			type result struct {
				err error
				at  time.Time
			}
			long := make(chan result, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				out, err := host.Call(ctx, "delay", []byte("200"))
				if err == nil && string(out) != "done" {
					err = fmt.Errorf("delay answered %q", out)
				}
				long <- result{err, time.Now()}
			}()
			time.Sleep(50 * time.Millisecond) // the long call is in its handler
			signalChild(t, ch, syscall.SIGSTOP)
			short := waitTally(t, floodAsync(host, floodSpec{Methods: []string{"echo"}, Size: 256 << 10, Goroutines: 16,
				Calls: 1000, Timeout: 100 * time.Millisecond, Duration: time.Second}, nil), 2*time.Second, "short calls")
			signalChild(t, ch, syscall.SIGCONT)
			resumed := time.Now()
			checkBounded(t, "100 ms calls while stopped", short, false)
			if short.Deadline == 0 {
				t.Errorf("no 100 ms call expired while the child was stopped")
			}
			select {
			case r := <-long:
				if r.err != nil {
					t.Errorf("the 10 s call started before the stop: %v, %v after the resume (Err %v)", r.err, r.at.Sub(resumed).Round(time.Millisecond), host.Err())
				} else {
					t.Logf("the 10 s call succeeded %v after the resume", r.at.Sub(resumed).Round(time.Millisecond))
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the 10 s call did not return\n%s", allStacks())
			}
			later := waitTally(t, floodAsync(host, floodSpec{Methods: []string{"echo", "echoview"}, Size: 64 << 10, Goroutines: 4,
				Calls: 50, Timeout: 5 * time.Second}, nil), 20*time.Second, "later calls")
			t.Logf("later calls: %v", later)
			if later.OK != later.Calls || later.Calls != 200 {
				t.Errorf("later calls: %v; want all 200 to succeed", later)
			}
		})
	}
}

// TestLiveMutualViewFlood (3, in one process): the smallest form of the
// mutual flood. Two Peers over shared memory (1 MiB rings) call each
// other's view handler with 256 KiB requests from 16 goroutines each: both
// readers have replies to send and both rings fill. No deadlock: every call
// returns by its deadline, and a fresh call afterwards succeeds.
func TestLiveMutualViewFlood(t *testing.T) {
	view := NewMux()
	view.HandleView("view", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
	view.Handle("echo", func(ctx context.Context, req []byte) ([]byte, error) { return bytes.Clone(req), nil })
	a, b := peerPair(t, transport.ModeShm, view, view)
	spec := floodSpec{Methods: []string{"view"}, Size: 256 << 10, Goroutines: 16, Calls: 20, Timeout: time.Second, Duration: time.Second}
	at, bt := floodAsync(a, spec, nil), floodAsync(b, spec, nil)
	checkBounded(t, "a's calls", waitTally(t, at, 5*time.Second, "a's calls"), false)
	checkBounded(t, "b's calls", waitTally(t, bt, 5*time.Second, "b's calls"), false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := a.Call(ctx, "echo", []byte("after")); err != nil {
		t.Errorf("a fresh call after the flood: %v (Err %v)", err, a.Err())
	}
}
