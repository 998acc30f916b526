package plugin_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/duplex"
	"github.com/ringwire/ringwire/internal/seam"
	"github.com/ringwire/ringwire/plugin"
)

// The fault-injection suite: the project's own adversarial run against
// real plugin processes (docs/reliability.md reports it). Each case asserts
// that every call returns its result or an error within its deadline plus
// faultSlack, that a bystander plugin on the same host is unaffected, and,
// once the case is over, that nothing leaked: descriptors, shared-memory
// mappings, goroutines, zombie children.

const faultSlack = 100 * time.Millisecond

// faultIterations is how many random kills TestFaultKillAtRandomPoints
// makes (RINGWIRE_FAULT_ITERATIONS overrides; CI runs the default).
func faultIterations() int {
	if n, err := strconv.Atoi(os.Getenv("RINGWIRE_FAULT_ITERATIONS")); err == nil && n > 0 {
		return n
	}
	return 200
}

// faultMemBound bounds the host's Go memory in use (heap objects, unused
// heap spans, stacks) during a fault case: a few plugins' calls in flight,
// 256 KiB replies, and the garbage of a few hundred launches.
const faultMemBound = 128 << 20

// memWatch samples the host's memory in use every 5 ms until stopped.
type memWatch struct {
	peak atomic.Uint64
	stop chan struct{}
	done chan struct{}
}

func watchMemory() *memWatch {
	w := &memWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
		for {
			metrics.Read(s)
			var n uint64
			for _, x := range s {
				n += x.Value.Uint64()
			}
			if n > w.peak.Load() {
				w.peak.Store(n)
			}
			select {
			case <-w.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return w
}

// end stops sampling and fails the test if the peak passed faultMemBound.
func (w *memWatch) end(t *testing.T) uint64 {
	t.Helper()
	close(w.stop)
	<-w.done
	if p := w.peak.Load(); p > faultMemBound {
		t.Errorf("the host's memory in use peaked at %d MiB, over %d MiB", p>>20, faultMemBound>>20)
	}
	return w.peak.Load()
}

// leakBaseline is what the process holds before a case.
type leakBaseline struct {
	fds, maps, goroutines int
}

func takeBaseline() leakBaseline {
	return leakBaseline{fds: countFds(), maps: countShmMaps(), goroutines: runtime.NumGoroutine()}
}

func countFds() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

// countShmMaps counts the mappings of memfd segments (the rings).
func countShmMaps() int {
	b, _ := os.ReadFile("/proc/self/maps")
	return bytes.Count(b, []byte("/memfd:"))
}

// zombies lists this process's children that have exited and not been
// reaped.
func zombies() []int {
	var out []int
	procChildren(func(pid int, state string) {
		if state == "Z" {
			out = append(out, pid)
		}
	})
	return out
}

// checkLeaks waits (a few seconds at most) for the process to be back to
// base, and fails the test with what is still held.
func checkLeaks(t *testing.T, base leakBaseline) {
	t.Helper()
	var now leakBaseline
	var z []int
	ok := waitFor(5*time.Second, func() bool {
		runtime.GC()
		now = takeBaseline()
		z = zombies()
		// Goroutines: a few of the runtime's and the test framework's come
		// and go.
		return now.fds <= base.fds && now.maps <= base.maps && now.goroutines <= base.goroutines+2 && len(z) == 0
	})
	if !ok {
		t.Errorf("leaked: descriptors %d -> %d, ring mappings %d -> %d, goroutines %d -> %d, zombies %v",
			base.fds, now.fds, base.maps, now.maps, base.goroutines, now.goroutines, z)
		if now.goroutines > base.goroutines+2 {
			buf := make([]byte, 1<<20)
			t.Logf("goroutines:\n%s", buf[:runtime.Stack(buf, true)])
		}
	}
}

// bystander is a plugin that keeps being called while another is hurt; every
// call must succeed within its deadline.
type bystander struct {
	c      *plugin.Client
	stop   chan struct{}
	done   chan struct{}
	calls  int
	failed []error
}

func startBystander(t *testing.T) *bystander {
	t.Helper()
	b := &bystander{c: launch(t, pluginConfig("echo")), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			select {
			case <-b.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			start := time.Now()
			out, err := b.c.Call(ctx, "echo", []byte("still here"))
			cancel()
			b.calls++
			switch {
			case err != nil:
				b.failed = append(b.failed, err)
			case string(out) != "still here":
				b.failed = append(b.failed, fmt.Errorf("wrong answer %q", out))
			case time.Since(start) > time.Second+faultSlack:
				b.failed = append(b.failed, fmt.Errorf("a call took %v", time.Since(start)))
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return b
}

// end stops the bystander and fails the test if any of its calls failed.
func (b *bystander) end(t *testing.T) {
	t.Helper()
	close(b.stop)
	<-b.done
	if len(b.failed) > 0 {
		t.Errorf("the bystander plugin was affected: %d of %d calls failed, first: %v", len(b.failed), b.calls, b.failed[0])
	}
	if b.calls == 0 {
		t.Error("the bystander was never called")
	}
	reap(t, b.c)
}

// boundedCall makes a call with deadline d and reports its error, failing
// the test if it returned later than d plus faultSlack.
func boundedCall(t *testing.T, c plugin.Caller, d time.Duration, method string, req []byte) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	_, err := c.Call(ctx, method, req)
	if took := time.Since(start); took > d+faultSlack {
		t.Errorf("%s returned after %v, past its %v deadline by more than %v (%v)", method, took, d, faultSlack, err)
	}
	return err
}

// expectGone checks an error of a call whose plugin was killed: a sentinel
// that says so, never a hang or an unclassified error.
func expectGone(t *testing.T, phase string, err error) {
	t.Helper()
	if err == nil {
		return // it finished before the kill
	}
	for _, s := range []error{plugin.ErrPeerGone, plugin.ErrExited, plugin.ErrClosed, context.DeadlineExceeded} {
		if errors.Is(err, s) {
			return
		}
	}
	t.Errorf("%s: a call failed with %v, which matches no sentinel of a plugin's end", phase, err)
}

// TestFaultKillAtRandomPoints kills the plugin with SIGKILL at a random
// moment of one of its phases: during the handshake, mid-call (a record of a
// 256 KiB reply may be half written), inside a callback into the host, and
// during a graceful stop.
func TestFaultKillAtRandomPoints(t *testing.T) {
	base := takeBaseline()
	mem := watchMemory()
	by := startBystander(t)
	phases := []string{"handshake", "mid-call", "in-callback", "shutdown"}
	n := faultIterations()
	count := map[string]int{}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	took := map[string]time.Duration{}
	for i := range n {
		phase := phases[i%len(phases)]
		count[phase]++
		start := time.Now()
		killDuring(t, phase, r)
		took[phase] += time.Since(start)
		if t.Failed() {
			t.Logf("failed at iteration %d (%s)", i, phase)
			break
		}
	}
	by.end(t)
	checkLeaks(t, base)
	peak := mem.end(t)
	t.Logf("%d kills: %v (time per phase %v); outcomes %s; the bystander made %d calls, none failed; host memory peak %d MiB",
		n, count, took, outcomes.String(), by.calls, peak>>20)
}

// outcomes counts how the kills landed (logged by the test).
var outcomes tally

type tally struct {
	mu sync.Mutex
	n  map[string]int
}

func (t *tally) Add(what string, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = map[string]int{}
	}
	t.n[what] += n
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprint(t.n)
}

// killDuring runs one plugin through phase and SIGKILLs it at a random
// moment of it.
func killDuring(t *testing.T, phase string, r *rand.Rand) {
	t.Helper()
	entered := make(chan struct{}, 1)
	cfg := pluginConfig("echo")
	cfg.Mux = hostMux(entered)
	cfg.Logger = childOutput
	delay := time.Duration(r.IntN(3000)) * time.Microsecond
	switch phase {
	case "handshake":
		// Launch in the background and kill the process as soon as it
		// exists, within its first milliseconds.
		cfg.StartTimeout = 2 * time.Second
		type res struct {
			c   *plugin.Client
			err error
		}
		got := make(chan res, 1)
		before := children()
		start := time.Now()
		go func() {
			c, err := plugin.Launch(context.Background(), cfg)
			got <- res{c, err}
		}()
		var pid int
		waitFor(2*time.Second, func() bool { pid = newChild(before); return pid > 0 })
		time.Sleep(delay)
		if pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		rs := <-got
		if took := time.Since(start); took > cfg.StartTimeout+faultSlack {
			t.Errorf("handshake: Launch returned after %v (StartTimeout %v)", took, cfg.StartTimeout)
		}
		if rs.err != nil {
			outcomes.Add("handshake: Launch failed", 1)
		}
		if rs.err == nil {
			// It finished its handshake first: a call now sees its end.
			expectGone(t, phase, boundedCall(t, rs.c, time.Second, "echo", []byte("x")))
			reap(t, rs.c)
		} else if !errors.Is(rs.err, plugin.ErrExited) && !errors.Is(rs.err, plugin.ErrPeerGone) && !errors.Is(rs.err, plugin.ErrStartTimeout) {
			t.Errorf("handshake: Launch failed with %v, which says nothing of the plugin's end", rs.err)
		}
	case "mid-call":
		c := launch(t, cfg)
		big := bytes.Repeat([]byte("r"), 256<<10)
		var cut atomic.Bool
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 50 {
					if err := boundedCall(t, c, time.Second, "echo", big); err != nil {
						expectGone(t, phase, err)
						cut.Store(true)
						return
					}
				}
			}()
		}
		time.Sleep(delay)
		_ = syscall.Kill(c.PID(), syscall.SIGKILL)
		wg.Wait()
		if cut.Load() {
			outcomes.Add("mid-call: calls cut", 1)
		}
		reap(t, c)
	case "in-callback":
		c := launch(t, cfg)
		errc := make(chan error, 1)
		go func() { errc <- boundedCall(t, c, 2*time.Second, "block", nil) }()
		select {
		case <-entered: // the plugin's handler is inside its call to the host
		case <-time.After(5 * time.Second):
			t.Fatal("in-callback: the plugin never called back")
		}
		time.Sleep(delay / 10)
		_ = syscall.Kill(c.PID(), syscall.SIGKILL)
		expectGone(t, phase, <-errc)
		reap(t, c)
	case "shutdown":
		c := launch(t, cfg)
		errc := make(chan error, 1)
		go func() { errc <- boundedCall(t, c, 2*time.Second, "sleep", []byte("20")) }()
		select {
		case <-entered:
		case <-time.After(5 * time.Second):
			t.Fatal("shutdown: the plugin's handler never started")
		}
		stopped := make(chan error, 1)
		start := time.Now()
		go func() { stopped <- c.Stop(context.Background()) }()
		time.Sleep(delay)
		_ = syscall.Kill(c.PID(), syscall.SIGKILL)
		<-stopped // how it ended does not matter; that it ended in time does
		if took := time.Since(start); took > cfg.StopTimeout+faultSlack {
			t.Errorf("shutdown: Stop returned after %v (StopTimeout %v)", took, cfg.StopTimeout)
		}
		if err := <-errc; err != nil {
			expectGone(t, phase, err)
		}
		reap(t, c)
	}
}

// children lists this process's child pids (from /proc: a thread's
// children file lists only that thread's).
func children() map[int]bool {
	out := map[int]bool{}
	procChildren(func(pid int, _ string) { out[pid] = true })
	return out
}

// procChildren calls f with the pid and state of each child of this process.
func procChildren(f func(pid int, state string)) {
	ents, _ := os.ReadDir("/proc")
	me := strconv.Itoa(os.Getpid())
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		if fs := strings.Fields(s[i+1:]); len(fs) >= 2 && fs[1] == me {
			f(pid, fs[0])
		}
	}
}

// newChild is a child pid not in before, or 0.
func newChild(before map[int]bool) int {
	for pid := range children() {
		if !before[pid] {
			return pid
		}
	}
	return 0
}

// TestFaultStopCont freezes the plugin (SIGSTOP) with calls in flight: each
// returns by its deadline; thawed (SIGCONT), the plugin answers again.
func TestFaultStopCont(t *testing.T) {
	base := takeBaseline()
	mem := watchMemory()
	defer mem.end(t)
	by := startBystander(t)
	c := launch(t, pluginConfig("echo"))
	if _, err := c.Call(context.Background(), "echo", []byte("warm")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(c.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, c.PID())
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := boundedCall(t, c, 300*time.Millisecond, "echo", []byte("frozen"))
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("a call to a stopped plugin: %v, want its deadline", err)
			}
		}()
	}
	wg.Wait()
	if err := syscall.Kill(c.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := boundedCall(t, c, 2*time.Second, "echo", []byte("thawed")); err != nil {
		t.Errorf("after SIGCONT: %v", err)
	}
	reap(t, c)
	by.end(t)
	checkLeaks(t, base)
}

func init() {
	// scribbler serves normally, then, once its handshake is done, writes
	// random bytes over both of its rings (header, positions, records) for
	// a while: a hostile plugin.
	roles["scribbler"] = func() int {
		seam.PluginConn = func(conn any) {
			end := seam.ShmEnd(conn)
			if end == nil {
				return
			}
			go scribble(end)
		}
		return serve(echoPlugin())
	}
}

// scribble writes random bytes over end's rings, a few at a time, holding a
// reference so that the memory stays mapped while it writes.
func scribble(end *duplex.End) {
	r := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(time.Now().UnixNano())))
	time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
	for range 500 {
		if !end.Enter(duplex.TxSide) {
			return
		}
		// Ring 1: the one the plugin writes and the host reads (the host
		// offered the rings).
		for _, i := range []int{1} {
			m := end.Memory(i)
			if len(m) == 0 {
				continue
			}
			// What the host reads and the plugin does not: the tail
			// position's line (ring.HeaderSize is 640: lines of 128 bytes,
			// the tail at 128) and the records after the header.
			span, at := len(m)-640, 640
			if r.IntN(3) == 0 {
				span, at = 128, 128
			}
			for range 1 + r.IntN(8) {
				m[at+r.IntN(span)] = byte(r.Uint32())
			}
		}
		end.Exit(duplex.TxSide)
		time.Sleep(200 * time.Microsecond)
	}
}

// TestFaultScribblingPlugin: plugins that scribble over their shared memory
// after a normal handshake. Every call to them returns by its deadline with
// its answer or a sentinel error; the host does not crash; a bystander
// plugin is unaffected; nothing leaks.
func TestFaultScribblingPlugin(t *testing.T) {
	base := takeBaseline()
	mem := watchMemory()
	by := startBystander(t)
	outcome := map[string]int{}
	for range 10 {
		cfg := pluginConfig("scribbler")
		c := launch(t, cfg)
		for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
			err := boundedCall(t, c, 300*time.Millisecond, "echo", []byte("through the scribbles"))
			switch {
			case err == nil:
				outcome["answered"]++
				continue
			case errors.Is(err, plugin.ErrCorrupt):
				if outcome["corrupt"]++; outcome["corrupt"] == 1 {
					t.Logf("a call to a scribbling plugin: %v", err)
				}
			case errors.Is(err, plugin.ErrPeerGone):
				if outcome["peer gone"]++; outcome["peer gone"] == 1 {
					t.Logf("a call to a scribbling plugin: %v", err)
				}
			case errors.Is(err, context.DeadlineExceeded):
				outcome["deadline"]++
			default:
				t.Errorf("a call to a scribbling plugin failed with %v, which matches no sentinel", err)
			}
			break
		}
		reap(t, c)
	}
	by.end(t)
	checkLeaks(t, base)
	t.Logf("calls to 10 scribbling plugins: %v; host memory peak %d MiB", outcome, mem.end(t)>>20)
	if outcome["corrupt"]+outcome["peer gone"] == 0 {
		t.Error("no scribbling was ever detected: the test did not exercise anything")
	}
}
