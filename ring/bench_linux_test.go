package ring_test

// Cross-process benchmarks of the ring: every benchmark runs the parent side
// here and a peer in a child process (the re-executed test binary, see
// main_linux_test.go), joined by two rings in sealed shared memory. Each
// sub-benchmark run starts its own child and the harness reaps it. Every wait
// has a deadline, so a broken child fails the benchmark instead of hanging it.
//
// Run them all (about 6 minutes on a 2-vCPU VM):
//
//	go test -run '^$' -bench . -benchmem -count 6 -timeout 30m ./ring | tee bench.txt
//	benchstat bench.txt
//
// Results and their interpretation: docs/benchmarks.md.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe" // also for go:linkname

	"golang.org/x/sys/unix"

	"github.com/ringwire/ringwire/internal/duplex"
	"github.com/ringwire/ringwire/ring"
	"github.com/ringwire/ringwire/shm"
)

const (
	// benchTimeout bounds every wait of a benchmark; it is renewed every
	// deadlineEvery iterations, so a run of any length is covered.
	benchTimeout  = 10 * time.Second
	deadlineEvery = 1 << 14

	// Message types of the throughput protocol.
	typData = 0
	typDone = 1 // end of a batch: the sink acks with the count it saw
	typAck  = 2
	typBad  = 3 // the sink saw a message out of sequence or of the wrong size
)

func init() {
	childRoles["zcecho"] = zeroCopyEcho
	childRoles["sockecho"] = socketEcho
	childRoles["futexecho"] = futexEcho
	childRoles["spinecho"] = spinEcho
	childRoles["sink"] = sink
}

// ---------------------------------------------------------------------------
// Child roles

// zeroCopyEcho returns every message with its type, copying it from the
// receive ring straight into a reservation in the send ring (no Write/Read
// intermediate copy); messages over MaxRecord go through Write.
func zeroCopyEcho(e *duplex.End, _ string) int {
	for {
		r, err := e.Rx.Peek()
		if err != nil {
			return exitCode(err)
		}
		if n := len(r.Data); n <= e.Tx.MaxRecord() {
			buf, err := e.Tx.Reserve(n)
			if err != nil {
				return exitCode(err)
			}
			copy(buf, r.Data)
			if err := e.Tx.Commit(r.Type, n); err != nil {
				return exitCode(err)
			}
			e.Tx.Flush()
		} else if err := e.Tx.Write(r.Type, r.Data); err != nil {
			return exitCode(err)
		}
		if err := e.Rx.Release(); err != nil {
			return exitCode(err)
		}
	}
}

// exitCode is 0 for the normal end of a child (the parent hung up) and 1
// otherwise, with the error on stderr.
func exitCode(err error) int {
	if errors.Is(err, ring.ErrPeerGone) || errors.Is(err, ring.ErrClosed) {
		return 0
	}
	fmt.Fprintln(os.Stderr, "child:", err)
	return 1
}

// socketEcho echoes fixed-size messages (arg bytes) over the Unix stream
// socket at extraFd with plain blocking read/write system calls, until EOF.
func socketEcho(_ *duplex.End, arg string) int {
	n, err := strconv.Atoi(arg)
	if err != nil || n <= 0 {
		fmt.Fprintln(os.Stderr, "child: sockecho: bad size", arg)
		return 2
	}
	buf := make([]byte, n)
	for {
		if readFull(extraFd, buf) != nil {
			return 0
		}
		if writeFull(extraFd, buf) != nil {
			return 0
		}
	}
}

func readFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Read(fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case n == 0:
			return errors.New("EOF")
		}
		b = b[n:]
	}
	return nil
}

func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// futexWords are the words of the bare futex ping-pong, each on its own
// cache line of a one-page segment.
type futexWords struct{ ping, pong, quit *uint32 }

func newFutexWords(mem []byte) futexWords {
	return futexWords{
		ping: (*uint32)(unsafe.Pointer(&mem[0])),
		pong: (*uint32)(unsafe.Pointer(&mem[128])),
		quit: (*uint32)(unsafe.Pointer(&mem[256])),
	}
}

// futexEcho is the peer of the bare futex round trip: it sleeps in FUTEX_WAIT
// on ping, and each time ping changes it copies it to pong and FUTEX_WAKEs the
// parent. No spinning, no asleep flag: a wake-up on every message.
func futexEcho(e *duplex.End, _ string) int {
	seg, err := shm.Open(extraFd, os.Getpagesize())
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: futexecho:", err)
		return 2
	}
	defer seg.Close()
	w := newFutexWords(seg.Bytes())
	last := uint32(0) // the parent counts from 1; it may have sent 1 already
	for {
		v := atomic.LoadUint32(w.ping)
		if v == last {
			if atomic.LoadUint32(w.quit) != 0 {
				return 0
			}
			if err := shm.FutexWait(w.ping, v, 20*time.Millisecond); errors.Is(err, shm.ErrTimeout) {
				if _, _, err := e.Rx.TryPeek(); err != nil {
					return 0 // the parent is gone
				}
			}
			continue
		}
		last = v
		atomic.StoreUint32(w.pong, v)
		_, _ = shm.FutexWake(w.pong, 1)
	}
}

// procyield executes PAUSE cycles times: the spin-wait hint the ring's own
// wait loop uses, for the bare spinning floor.
//
//go:linkname procyield runtime.procyield
func procyield(cycles uint32)

// spinWords are the words of the bare spinning ping-pong (the floor), each on
// its own cache line of a one-page segment.
type spinWords struct{ ping, pong, quit *uint64 }

func newSpinWords(mem []byte) spinWords {
	return spinWords{
		ping: (*uint64)(unsafe.Pointer(&mem[0])),
		pong: (*uint64)(unsafe.Pointer(&mem[128])),
		quit: (*uint64)(unsafe.Pointer(&mem[256])),
	}
}

// spinEcho is the peer of the floor: it busy-polls ping and copies every new
// value to pong. Nothing but one cache line each way per round trip.
func spinEcho(e *duplex.End, _ string) int {
	seg, err := shm.Open(extraFd, os.Getpagesize())
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: spinecho:", err)
		return 2
	}
	defer seg.Close()
	w := newSpinWords(seg.Bytes())
	last := uint64(0) // the parent counts from 1; it may have sent 1 already
	for i := uint64(1); ; i++ {
		if v := atomic.LoadUint64(w.ping); v != last {
			last = v
			*w.pong = v // a plain MOV: a release store on amd64, the cheapest publication
			continue
		}
		if i%(1<<16) == 0 {
			if atomic.LoadUint64(w.quit) != 0 {
				return 0
			}
			if _, _, err := e.Rx.TryPeek(); err != nil {
				return 0 // the parent is gone
			}
		}
		procyield(1)
	}
}

// segmentChild creates a one-page shared segment and starts a child running
// role with it at extraFd. At cleanup (before the harness's own) it raises
// the quit word at offset 256 and wakes a futex sleeper on the word at 0.
func segmentChild(b *testing.B, role string) (*child, []byte) {
	seg, err := shm.Create(os.Getpagesize())
	if err != nil {
		b.Fatal(err)
	}
	dup, err := unix.FcntlInt(uintptr(seg.Fd()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		_ = seg.Close()
		b.Fatal(err)
	}
	c := startChildFiles(b, role, "", duplex.Config{Capacity: ring.MinCapacity},
		[]*os.File{os.NewFile(uintptr(dup), "bench-segment")})
	mem := seg.Bytes()
	b.Cleanup(func() {
		atomic.StoreUint32((*uint32)(unsafe.Pointer(&mem[256])), 1)
		_, _ = shm.FutexWake((*uint32)(unsafe.Pointer(&mem[0])), 1)
		if c.Wait(5*time.Second) == nil {
			_ = seg.Close()
		} // else: leave it mapped; the harness kills the child
	})
	return c, mem
}

// sink consumes typData messages of exactly arg bytes ("size" or "size,copy")
// and checks the sequence number in their first 8 bytes. By default it reads
// them in place (Peek/Release; fragmented messages are reassembled by Peek)
// and touches nothing but those 8 bytes; with ",copy" it first copies every
// message out into a private buffer, as Read does. On typDone it answers
// typAck (or typBad) with the count of data messages since the last typDone.
func sink(e *duplex.End, arg string) int {
	sizeArg, mode, _ := strings.Cut(arg, ",")
	size, err := strconv.Atoi(sizeArg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: sink: bad size", arg)
		return 2
	}
	var out []byte
	if mode == "copy" {
		out = make([]byte, size)
	}
	var n uint64
	bad := false
	for {
		r, err := e.Rx.Peek()
		if err != nil {
			return exitCode(err)
		}
		switch r.Type {
		case typData:
			data := r.Data
			if out != nil {
				data = out[:copy(out, data)]
			}
			if len(data) != size || (size >= 8 && binary.LittleEndian.Uint64(data) != n) {
				bad = true
			}
			n++
			if err := e.Rx.Release(); err != nil {
				return exitCode(err)
			}
		case typDone:
			if err := e.Rx.Release(); err != nil {
				return exitCode(err)
			}
			var ack [8]byte
			binary.LittleEndian.PutUint64(ack[:], n)
			typ := uint16(typAck)
			if bad {
				typ = typBad
			}
			if err := e.Tx.Write(typ, ack[:]); err != nil {
				return exitCode(err)
			}
			n, bad = 0, false
		default:
			fmt.Fprintln(os.Stderr, "child: sink: unexpected type", r.Type)
			return 1
		}
	}
}

// ---------------------------------------------------------------------------
// Helpers

var monoBase = time.Now()

// mono is a monotonic clock in nanoseconds (one vDSO call).
func mono() int64 { return int64(time.Since(monoBase)) }

// renew pushes both rings' deadlines benchTimeout into the future.
func renew(e *duplex.End) {
	d := time.Now().Add(benchTimeout)
	e.Tx.SetDeadline(d)
	e.Rx.SetDeadline(d)
}

// roundTrip sends msg with the zero-copy path (Reserve, copy, Commit, Flush)
// and waits for the echo (Peek, check, Release).
func roundTrip(b *testing.B, e *duplex.End, msg []byte) {
	buf, err := e.Tx.Reserve(len(msg))
	if err != nil {
		b.Fatal("reserve:", err)
	}
	copy(buf, msg)
	if err := e.Tx.Commit(0, len(msg)); err != nil {
		b.Fatal("commit:", err)
	}
	e.Tx.Flush()
	r, err := e.Rx.Peek()
	if err != nil {
		b.Fatal("peek:", err)
	}
	if len(r.Data) != len(msg) {
		b.Fatalf("echo of %d bytes, sent %d", len(r.Data), len(msg))
	}
	if err := e.Rx.Release(); err != nil {
		b.Fatal("release:", err)
	}
}

// warmUp makes n untimed round trips: page faults, caches, the adaptive spin
// windows of both sides settle.
func warmUp(b *testing.B, e *duplex.End, msg []byte, n int) {
	renew(e)
	for range n {
		roundTrip(b, e, msg)
	}
}

// waitStats reports the parent's waiting counters per operation: how often it
// parked waiting for the echo and how many wake-ups it sent the child.
func waitStats(b *testing.B, e *duplex.End, before [2]ring.Stats) {
	rx, tx := e.Rx.Stats(), e.Tx.Stats()
	n := float64(b.N)
	b.ReportMetric(float64(rx.Parks-before[0].Parks)/n, "parks/op")
	b.ReportMetric(float64(tx.WakesSent-before[1].WakesSent)/n, "wakes/op")
	b.ReportMetric(float64(rx.Handoffs-before[0].Handoffs)/n, "handoffs/op")
}

func statsOf(e *duplex.End) [2]ring.Stats { return [2]ring.Stats{e.Rx.Stats(), e.Tx.Stats()} }

// latencies reports the mean of rtts as ns/op (overriding the framework's
// wall-clock figure, which would include pacing or idle time) and its p50 and
// p99. It sorts rtts.
func latencies(b *testing.B, rtts []int64) {
	if len(rtts) == 0 {
		return
	}
	var sum int64
	for _, d := range rtts {
		sum += d
	}
	slices.Sort(rtts)
	b.ReportMetric(float64(sum)/float64(len(rtts)), "ns/op")
	b.ReportMetric(float64(rtts[len(rtts)/2]), "p50-ns")
	b.ReportMetric(float64(rtts[min(len(rtts)-1, len(rtts)*99/100)]), "p99-ns")
}

// busyUntil spins on the clock until mono() >= t (pacing without the timer
// slack of time.Sleep).
func busyUntil(t int64) {
	for mono() < t {
	}
}

// ---------------------------------------------------------------------------
// 1. Round trip with both sides spinning, against a Unix socket.

// BenchmarkPingPong is the round trip of one 64-byte message parent -> child
// -> parent (ns/op = RTT) over the rings with default Options (both sides
// spin), and over a Unix stream socket with blocking read/write system calls
// (the best a socket does; Go's net.Conn adds 5-15 µs here).
func BenchmarkPingPong(b *testing.B) {
	const size = 64
	b.Run("transport=ring/size=64", func(b *testing.B) {
		c := startChild(b, "zcecho", "", duplex.Config{})
		e := c.End
		msg := make([]byte, size)
		warmUp(b, e, msg, 20000)
		before := statsOf(e)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if i%deadlineEvery == 0 {
				renew(e)
			}
			if err := e.Tx.Write(0, msg); err != nil {
				b.Fatal(err)
			}
			r, err := e.Rx.Peek()
			if err != nil {
				b.Fatal(err)
			}
			if len(r.Data) != size {
				b.Fatalf("echo of %d bytes", len(r.Data))
			}
			if err := e.Rx.Release(); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		waitStats(b, e, before)
	})
	// The floor: one cache line each way, both sides spinning, no ring.
	b.Run("transport=spin/size=8", func(b *testing.B) {
		_, mem := segmentChild(b, "spinecho")
		w := newSpinWords(mem)
		var seq uint64
		deadline := mono() + int64(benchTimeout)
		once := func() {
			seq++
			*w.ping = seq // see spinEcho
			for i := 1; atomic.LoadUint64(w.pong) != seq; i++ {
				if i%(1<<20) == 0 && mono() > deadline {
					b.Fatal("spin echo timed out")
				}
				procyield(1)
			}
		}
		for range 20000 {
			once()
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if i%deadlineEvery == 0 {
				deadline = mono() + int64(benchTimeout)
			}
			once()
		}
	})
	b.Run("transport=unixsocket/size=64", func(b *testing.B) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		fd := fds[0]
		b.Cleanup(func() { _ = unix.Close(fd) }) // runs first: the child sees EOF
		startChildFiles(b, "sockecho", itoa(size), duplex.Config{Capacity: ring.MinCapacity},
			[]*os.File{os.NewFile(uintptr(fds[1]), "bench-socket")})
		// A broken child makes read fail with EAGAIN instead of hanging.
		tv := unix.NsecToTimeval(int64(benchTimeout))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			b.Fatal(err)
		}
		msg, echo := make([]byte, size), make([]byte, size)
		once := func() {
			if err := writeFull(fd, msg); err != nil {
				b.Fatal("write:", err)
			}
			if err := readFull(fd, echo); err != nil {
				b.Fatal("read:", err)
			}
		}
		for range 1000 {
			once()
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			once()
		}
	})
}

// ---------------------------------------------------------------------------
// 2. The wake-up path.

// BenchmarkWakeup measures round trips in which the peer is asleep when the
// message arrives:
//
//   - futex: the floor. Two processes ping-pong through two futex words in a
//     shared segment, each FUTEX_WAITing for the other's store+FUTEX_WAKE, no
//     spinning: two sleeps and two wake-ups per round trip.
//   - ring: the ring with Spin and AdaptiveSpin off on both sides, so both
//     park on every message: the same two sleeps and wake-ups, through the
//     ring's park path (asleep bit CAS, re-check, conditional wake).
//   - ring-idle-200us: default Options; the parent idles (busy-waiting on the
//     clock) 200 µs before each message, longer than the child's spin window,
//     so every message is the first after the child parked. One wake-up per
//     round trip (the parent is still spinning when the echo comes back).
//
// ns/op is the mean round trip (idle time excluded); p50-ns and p99-ns its
// percentiles.
func BenchmarkWakeup(b *testing.B) {
	b.Run("futex", func(b *testing.B) {
		_, mem := segmentChild(b, "futexecho")
		w := newFutexWords(mem)
		var seq uint32
		once := func() {
			seq++
			atomic.StoreUint32(w.ping, seq)
			_, _ = shm.FutexWake(w.ping, 1)
			deadline := mono() + int64(benchTimeout)
			for {
				v := atomic.LoadUint32(w.pong)
				if v == seq {
					return
				}
				if err := shm.FutexWait(w.pong, v, 100*time.Millisecond); err != nil {
					if !errors.Is(err, shm.ErrTimeout) {
						b.Fatal(err)
					}
					if mono() > deadline {
						b.Fatal("futex echo timed out")
					}
				}
			}
		}
		for range 500 {
			once()
		}
		rtts := make([]int64, b.N)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			t0 := mono()
			once()
			rtts[i] = mono() - t0
		}
		b.StopTimer()
		latencies(b, rtts)
	})
	b.Run("ring", func(b *testing.B) {
		parkAlways := ring.Options{Spin: -1, AdaptiveSpin: -1}
		c := startChild(b, "zcecho", "", duplex.Config{Options: parkAlways})
		e := c.End
		msg := make([]byte, 64)
		warmUp(b, e, msg, 500)
		rtts := make([]int64, b.N)
		before := statsOf(e)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if i%deadlineEvery == 0 {
				renew(e)
			}
			t0 := mono()
			roundTrip(b, e, msg)
			rtts[i] = mono() - t0
		}
		b.StopTimer()
		latencies(b, rtts)
		waitStats(b, e, before)
	})
	b.Run("ring-idle-200us", func(b *testing.B) {
		const idle = 200 * time.Microsecond
		c := startChild(b, "zcecho", "", duplex.Config{})
		e := c.End
		msg := make([]byte, 64)
		renew(e)
		for range 200 {
			busyUntil(mono() + int64(idle))
			roundTrip(b, e, msg)
		}
		rtts := make([]int64, b.N)
		before := statsOf(e)
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if i%1024 == 0 {
				renew(e)
			}
			busyUntil(mono() + int64(idle))
			t0 := mono()
			roundTrip(b, e, msg)
			rtts[i] = mono() - t0
		}
		b.StopTimer()
		latencies(b, rtts)
		waitStats(b, e, before)
	})
}

// ---------------------------------------------------------------------------
// 3. One-way throughput.

// BenchmarkThroughput streams b.N messages of one size from the parent to a
// child that consumes them in place (Peek/Release; Peek reassembles fragmented
// messages) and acks once at the end. 4 MiB ring. Messages up to MaxRecord are
// written zero-copy (Reserve, copy, Commit) and published in batches of about
// flushBytes (Reserve publishes by itself before it waits for space); larger
// ones go through Write, which fragments them. The 1 MiB case runs twice: with
// the default MaxRecord (capacity/2-8: one record, read in place) and with
// MaxRecord capacity/4-8 (two fragments, reassembled by a copy in the
// consumer), which measures the fragmented path.
func BenchmarkThroughput(b *testing.B) {
	const capacity = 4 << 20
	for _, tc := range []struct {
		name      string
		size      int
		maxRecord int
	}{
		{"size=64B", 64, 0},
		{"size=1KiB", 1 << 10, 0},
		{"size=64KiB", 64 << 10, 0},
		{"size=1MiB", 1 << 20, 0},
		{"size=1MiB/maxrecord=1MiB-8", 1 << 20, capacity/4 - ring.RecordHeaderSize},
	} {
		for _, mode := range []string{"peek", "copy"} {
			b.Run(tc.name+"/consumer="+mode, func(b *testing.B) {
				benchThroughput(b, tc.size, mode, duplex.Config{Capacity: capacity, MaxRecord: tc.maxRecord})
			})
		}
	}
}

// flushBytes is how much the throughput writer stages before it publishes.
const flushBytes = 16 << 10

func benchThroughput(b *testing.B, size int, mode string, cfg duplex.Config) {
	c := startChild(b, "sink", itoa(size)+","+mode, cfg)
	tx, rx := c.End.Tx, c.End.Rx
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	zeroCopy := size <= tx.MaxRecord()
	send := func(n int) {
		staged := 0
		for i := range n {
			if i%deadlineEvery == 0 {
				tx.SetDeadline(time.Now().Add(benchTimeout))
			}
			if zeroCopy {
				buf, err := tx.Reserve(size)
				if err != nil {
					b.Fatal("reserve:", err)
				}
				copy(buf, payload)
				if size >= 8 {
					binary.LittleEndian.PutUint64(buf, uint64(i))
				}
				if err := tx.Commit(typData, size); err != nil {
					b.Fatal("commit:", err)
				}
				if staged += size; staged >= flushBytes {
					tx.Flush()
					staged = 0
				}
				continue
			}
			binary.LittleEndian.PutUint64(payload, uint64(i))
			if err := tx.Write(typData, payload); err != nil {
				b.Fatal("write:", err)
			}
		}
		// Write flushes whatever is still staged.
		if err := tx.Write(typDone, nil); err != nil {
			b.Fatal("write done:", err)
		}
		rx.SetDeadline(time.Now().Add(benchTimeout))
		r, err := rx.Peek()
		if err != nil {
			b.Fatal("ack:", err)
		}
		got := binary.LittleEndian.Uint64(r.Data)
		if r.Type != typAck || got != uint64(n) {
			b.Fatalf("sink answered type %d after %d of %d messages", r.Type, got, n)
		}
		if err := rx.Release(); err != nil {
			b.Fatal(err)
		}
	}
	// Warm up over two laps of the ring.
	send(max(16, 2*cfg.Capacity/size))
	before := tx.Stats()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	send(b.N)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	after := tx.Stats()
	b.ReportMetric(float64(after.Parks-before.Parks)/float64(b.N), "parks/op")
	b.ReportMetric(float64(after.SpinWaits-before.SpinWaits)/float64(b.N), "spinwaits/op")
}

// ---------------------------------------------------------------------------
// 4. Zero allocations on the zero-copy path.

// BenchmarkZeroCopy is the ping-pong done with Reserve/Commit/Flush and
// Peek/Release on both sides; it fails if the process allocated once per
// operation or more (what -benchmem would show as allocs/op > 0).
func BenchmarkZeroCopy(b *testing.B) {
	for _, size := range []int{64, 4 << 10} {
		b.Run("size="+sizeName(size), func(b *testing.B) {
			c := startChild(b, "zcecho", "", duplex.Config{})
			e := c.End
			msg := make([]byte, size)
			warmUp(b, e, msg, 20000)
			b.SetBytes(int64(2 * size))
			b.ReportAllocs()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			b.ResetTimer()
			for i := range b.N {
				if i%deadlineEvery == 0 {
					renew(e)
				}
				roundTrip(b, e, msg)
			}
			b.StopTimer()
			runtime.ReadMemStats(&m1)
			if allocs := m1.Mallocs - m0.Mallocs; b.N >= 1000 && allocs >= uint64(b.N) {
				b.Errorf("%d allocations in %d round trips on the zero-copy path", allocs, b.N)
			}
		})
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return itoa(n>>20) + "MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return itoa(n>>10) + "KiB"
	}
	return itoa(n)
}

// ---------------------------------------------------------------------------
// 5. Paced traffic: latency and CPU cost.

// BenchmarkPaced sends one 64-byte message every interval (50 µs; 500 µs for
// sparse traffic, whose cost is the spin before each park; the parent busy-waits
// on the clock for the next slot; a slot missed because a round trip overran
// is skipped) and measures each round trip. ns/op is the mean round trip;
// p50-ns and p99-ns its percentiles; child-cpu-ns/msg and parent-cpu-ns/msg
// the CPU time each process used per message (the parent's includes its
// busy-wait pacing, i.e. about the whole interval). policy=adaptive is the
// default Options; policy=fixed turns the adaptive spin window off
// (AdaptiveSpin: -1), so the child spins only DefaultSpin and then parks.
func BenchmarkPaced(b *testing.B) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		opt      ring.Options
	}{
		{"interval=50us/policy=adaptive", 50 * time.Microsecond, ring.Options{}},
		{"interval=50us/policy=fixed", 50 * time.Microsecond, ring.Options{AdaptiveSpin: -1}},
		// Sparse traffic: every wait is longer than any spin window, so
		// the CPU a message costs is the spin before each park.
		{"interval=500us/policy=adaptive", 500 * time.Microsecond, ring.Options{}},
	} {
		interval := tc.interval
		b.Run(tc.name, func(b *testing.B) {
			c := startChild(b, "zcecho", "", duplex.Config{Options: tc.opt})
			e := c.End
			pid := c.Cmd.Process.Pid
			msg := make([]byte, 64)
			paced := func(rtts []int64) {
				next := mono()
				for i := range rtts {
					if i%1024 == 0 {
						renew(e)
					}
					busyUntil(next)
					t0 := mono()
					roundTrip(b, e, msg)
					t1 := mono()
					rtts[i] = t1 - t0
					next += int64(interval)
					if next <= t1 {
						next += (t1 - next + int64(interval)) / int64(interval) * int64(interval)
					}
				}
			}
			paced(make([]int64, 2000)) // 2000 messages: the adaptive window settles
			rtts := make([]int64, b.N)
			childCPU0, err := processCPU(pid)
			if err != nil {
				b.Fatal(err)
			}
			selfCPU0, _ := processCPU(0)
			before := statsOf(e)
			b.ReportAllocs()
			b.ResetTimer()
			paced(rtts)
			b.StopTimer()
			childCPU1, err := processCPU(pid)
			if err != nil {
				b.Fatal(err)
			}
			selfCPU1, _ := processCPU(0)
			latencies(b, rtts)
			b.ReportMetric(float64(childCPU1-childCPU0)/float64(b.N), "child-cpu-ns/msg")
			b.ReportMetric(float64(selfCPU1-selfCPU0)/float64(b.N), "parent-cpu-ns/msg")
			waitStats(b, e, before)
		})
	}
}

// processCPU returns the CPU time (user+system, all threads) used so far by
// process pid, or by this process for pid 0, in nanoseconds. It reads the
// kernel's per-process CPU clock (nanosecond resolution) and falls back to
// utime+stime from /proc/<pid>/stat (clock-tick resolution).
func processCPU(pid int) (int64, error) {
	clock := int32(unix.CLOCK_PROCESS_CPUTIME_ID)
	if pid != 0 {
		clock = int32(^uint32(pid)<<3 | 2) // MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(clock, &ts); err == nil {
		return ts.Nano(), nil
	}
	name := "/proc/self/stat"
	if pid != 0 {
		name = "/proc/" + itoa(pid) + "/stat"
	}
	raw, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command: state is field 3, utime 14, stime 15.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: %d fields", name, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	const tick = int64(time.Second) / 100 // USER_HZ
	return (ut + st) * tick, nil
}
