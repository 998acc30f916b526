package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// A contender is one implementation under test in one call form. Every
// contender serves from real child processes and is measured the same way,
// so one `go test -bench` run lines them all up:
//
//	BenchmarkEcho/impl=<impl>/form=<form>/mode=<mode>/size=<size>
//
// form says what a call allocates, so that like is compared with like:
//
//	call  the reply is a new slice on each call, and the server builds its
//	      reply in new memory (an allocating handler), as everyday code does
//	into  the reply lands in a buffer the caller reuses; the server reuses its
//	      buffers too (the zero-allocation forms)
//	view  the reply is only looked at in the transport's memory (ringwire's
//	      CallView), compared with the zero-allocation baselines
type contender struct {
	impl, form string
	// start starts one instance: its child process(es) and the host's end.
	// It registers the instance's cleanup (stop and reap) on tb.
	start func(tb testing.TB) *target
}

// A target is one running instance of a contender.
type target struct {
	// pids are the child processes serving it (counted by the eBPF probes
	// together with this process).
	pids []int
	// newCaller returns one caller's echo of req: called from one
	// goroutine at a time, safe to run beside the other callers of the same
	// target. It checks the reply (see checkEcho).
	newCaller func(req []byte) func(ctx context.Context) error
}

// echoTarget is the target of a contender whose client has an Echo method
// safe for concurrent callers (gRPC, net/rpc): each caller calls it and
// checks the reply.
func echoTarget(pids []int, echo func(context.Context, []byte) ([]byte, error)) *target {
	return &target{pids: pids, newCaller: func(req []byte) func(context.Context) error {
		return func(ctx context.Context) error {
			out, err := echo(ctx, req)
			if err != nil {
				return err
			}
			return checkEcho(req, out)
		}
	}}
}

// contenders is every contender, in registration order (each file's init).
var contenders []contender

func register(cs ...contender) { contenders = append(contenders, cs...) }

// size is a payload size of the suite.
type size struct {
	name string
	n    int
}

// seqSizes are the sizes of mode=seq; loadSizes those of the load shapes.
var (
	seqSizes  = []size{{"10B", 10}, {"1KiB", 1 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}}
	loadSizes = seqSizes[:2]
)

// A mode is a load shape.
type mode struct {
	name  string
	sizes []size
	run   func(b *testing.B, e *env, sz size)
}

// env is what a mode's run works with. Processes must outlive the
// size-level benchmark function, which testing runs several times (cleanups
// run after each), so they are started with the enclosing levels' B.
type env struct {
	c     contender
	t     *target    // started with the form level's B
	modeB *testing.B // the mode level's B: what it starts lives until the mode ends
	extra []*target  // more instances, started once per mode (plugins4)
	hog   bool       // the busy-loop process of a busy mode is running
}

// instances returns n running instances: the form's and n-1 more, started
// on first use for the rest of the mode.
func (e *env) instances(n int) []*target {
	for len(e.extra) < n-1 {
		e.extra = append(e.extra, e.c.start(e.modeB))
	}
	return append([]*target{e.t}, e.extra[:n-1]...)
}

// modes are the load shapes, each under every contender:
//
//	seq       one caller, one call in flight
//	callers8  8 goroutines calling on one connection (plugin instance)
//	plugins4  4 instances (4 plugin processes), one calling goroutine each
//	busy1     seq beside a process that keeps one CPU busy
//	busy2     seq beside a process that keeps two CPUs busy
var modes = []mode{
	{"seq", seqSizes, runSeq},
	{"callers8", loadSizes, runCallers8},
	{"plugins4", loadSizes, runPlugins4},
	{"busy1", loadSizes, func(b *testing.B, e *env, sz size) { runBusy(b, e, sz, 1) }},
	{"busy2", loadSizes, func(b *testing.B, e *env, sz size) { runBusy(b, e, sz, 2) }},
}

// BenchmarkEcho runs every contender in every mode: host -> child -> host,
// request and reply both size bytes. See README.md.
func BenchmarkEcho(b *testing.B) {
	var impls []string
	for _, c := range contenders {
		if !slices.Contains(impls, c.impl) {
			impls = append(impls, c.impl)
		}
	}
	for _, impl := range impls {
		b.Run("impl="+impl, func(b *testing.B) {
			for _, c := range contenders {
				if c.impl == impl {
					benchForm(b, c)
				}
			}
		})
	}
}

// benchForm runs every mode of one contender.
func benchForm(b *testing.B, c contender) {
	b.Run("form="+c.form, func(formB *testing.B) {
		var t *target // started on first use: -bench may select nothing here
		for _, m := range modes {
			formB.Run("mode="+m.name, func(modeB *testing.B) {
				e := &env{c: c, modeB: modeB}
				for _, sz := range m.sizes {
					modeB.Run("size="+sz.name, func(b *testing.B) {
						if t == nil {
							t = c.start(formB)
						}
						e.t = t
						m.run(b, e, sz)
					})
				}
			})
		}
	})
}

// payload returns n bytes of text-like content: pseudo-random letters from a
// 16-symbol alphabet, fixed seed (about 2:1 compressible, so the compressing
// transports neither win nor lose by the choice of content).
func payload(n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 0x72696e6777697265))
	const alphabet = "etaoinshrdlucmfw"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return b
}

// fullCheck makes checkEcho compare every byte; the benchmarks compare the
// length and three bytes (a full compare of 1 MiB would be a sizable part of
// what is measured), TestEcho every byte.
var fullCheck bool

// checkEcho checks that out is the echo of req.
func checkEcho(req, out []byte) error {
	if len(out) != len(req) {
		return fmt.Errorf("reply of %d bytes, want %d", len(out), len(req))
	}
	if fullCheck {
		if i := mismatch(req, out); i >= 0 {
			return fmt.Errorf("reply differs from the request at byte %d of %d", i, len(req))
		}
		return nil
	}
	for _, i := range []int{0, len(req) / 2, len(req) - 1} {
		if i >= 0 && out[i] != req[i] {
			return fmt.Errorf("reply differs from the request at byte %d of %d", i, len(req))
		}
	}
	return nil
}

func mismatch(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// sampleEvery: one call in sampleEvery is timed for the latency quantiles
// (timing every call would add two clock reads to a call of about a
// microsecond).
const sampleEvery = 8

// maxSamples bounds the latency samples kept per caller (a ring: the last
// ones are kept).
const maxSamples = 1 << 16

// latencies collects sampled call durations.
type latencies struct {
	d []time.Duration
	n int // samples taken (may exceed len(d))
}

func newLatencies() *latencies { return &latencies{d: make([]time.Duration, 0, maxSamples)} }

func (l *latencies) add(d time.Duration) {
	if len(l.d) < maxSamples {
		l.d = append(l.d, d)
	} else {
		l.d[l.n%maxSamples] = d
	}
	l.n++
}

// report reports p50 and p99 of the samples of all ls, in µs.
func reportLatencies(b *testing.B, ls ...*latencies) {
	var all []time.Duration
	for _, l := range ls {
		all = append(all, l.d...)
	}
	if len(all) == 0 {
		return
	}
	slices.Sort(all)
	q := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(p*float64(len(all))))]) / float64(time.Microsecond)
	}
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}

// callLoop makes calls until more says stop, timing one in sampleEvery.
func callLoop(ctx context.Context, call func(context.Context) error, lat *latencies, more func() bool) error {
	for i := 0; more(); i++ {
		if i%sampleEvery != 0 {
			if err := call(ctx); err != nil {
				return err
			}
			continue
		}
		t0 := time.Now()
		if err := call(ctx); err != nil {
			return err
		}
		lat.add(time.Since(t0))
	}
	return nil
}

// runSeq: one caller, calls back to back.
func runSeq(b *testing.B, e *env, sz size) {
	req := payload(sz.n)
	call := e.t.newCaller(req)
	ctx, cancel := context.WithTimeout(context.Background(), callBudget)
	defer cancel()
	lat := newLatencies()
	pr := beginProbe(b, e.t.pids)
	b.SetBytes(int64(sz.n))
	b.ReportAllocs()
	if err := callLoop(ctx, call, lat, b.Loop); err != nil {
		b.Fatal(err)
	}
	pr.end(b)
	reportLatencies(b, lat)
}

// runParallel runs one goroutine per caller until b.N calls were made in
// all, and reports the total calls/s.
func runParallel(b *testing.B, calls []func(context.Context) error, pids []int, sz size) {
	ctx, cancel := context.WithTimeout(context.Background(), callBudget)
	defer cancel()
	lats := make([]*latencies, len(calls))
	for i := range lats {
		lats[i] = newLatencies()
	}
	pr := beginProbe(b, pids)
	b.SetBytes(int64(sz.n))
	b.ReportAllocs()
	var (
		mu   sync.Mutex
		left = b.N
		errs = make(chan error, len(calls))
		wg   sync.WaitGroup
	)
	// Calls are handed out in batches so the counter is not the bottleneck.
	more := func(have *int) bool {
		if *have > 0 {
			*have--
			return true
		}
		mu.Lock()
		defer mu.Unlock()
		n := min(left, 16)
		left -= n
		*have = n - 1
		return n > 0
	}
	b.ResetTimer()
	for i, call := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var have int
			if err := callLoop(ctx, call, lats[i], func() bool { return more(&have) }); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	pr.end(b)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	reportLatencies(b, lats...)
}

// runCallers8: 8 goroutines calling through one instance.
func runCallers8(b *testing.B, e *env, sz size) {
	req := payload(sz.n)
	calls := make([]func(context.Context) error, 8)
	for i := range calls {
		calls[i] = e.t.newCaller(req)
	}
	runParallel(b, calls, e.t.pids, sz)
}

// runPlugins4: 4 instances, one caller each.
func runPlugins4(b *testing.B, e *env, sz size) {
	req := payload(sz.n)
	var calls []func(context.Context) error
	var pids []int
	for _, t := range e.instances(4) {
		calls = append(calls, t.newCaller(req))
		pids = append(pids, t.pids...)
	}
	runParallel(b, calls, pids, sz)
}

// runBusy: runSeq beside a busy-loop process keeping cpus CPUs busy for the
// rest of the mode (not counted by the probes: it is not part of the
// benchmark).
func runBusy(b *testing.B, e *env, sz size, cpus int) {
	if !e.hog {
		startHog(e.modeB, cpus)
		e.hog = true
	}
	runSeq(b, e, sz)
}

// gomaxprocs is the parallelism the harness was started with.
var gomaxprocs = runtime.GOMAXPROCS(0)

func init() {
	if os.Getenv("RINGWIRE_BENCH_VERBOSE") != "" {
		fmt.Fprintln(os.Stderr, "bench: GOMAXPROCS", gomaxprocs)
	}
}
