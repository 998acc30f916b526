package rpc

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/sendparts"
	"github.com/ringwire/ringwire/internal/transport"
)

// Memory a flooding peer can make us hold (DESIGN.md: "bounded in bytes,
// not only in goroutines"). The host serves; a child floods it with 1 MiB
// requests. The host's Go memory in use (heap spans in use plus goroutine
// stacks: runtime.MemStats' HeapInuse + StackInuse, read through
// runtime/metrics every 2 ms) must stay under memBound plus the rings.
//
// What the bound allows: MaxPendingBytes (16 MiB by default) of held
// requests, as much again of their answers waiting, one more message
// (1 MiB), the outbox (1 MiB), the framed send queue (4 MiB), the test
// binary's own few MiB, and the garbage the collector has not yet
// reclaimed. 64 MiB is four times the budget. The rings (shared
// memory, mapped from a memfd) are not Go heap and do not appear in the
// figure; they are added to the bound anyway, as the brief states it.
const memBound = 64 << 20

// memRawFloodEnv carries the rawflood child's floodSpec (JSON).
const memRawFloodEnv = "RINGWIRE_PROTOCOL_TEST_RAWFLOOD"

// memInUse returns HeapInuse + StackInuse.
func memInUse(s []metrics.Sample) uint64 {
	metrics.Read(s)
	var n uint64
	for _, x := range s {
		n += x.Value.Uint64()
	}
	return n
}

func memSamples() []metrics.Sample {
	return []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
	}
}

// memSampler records the peak of memInUse until stopped.
type memSampler struct {
	peak    atomic.Uint64
	samples atomic.Int64
	stop    chan struct{}
	done    chan struct{}
}

func sampleMemory(every time.Duration) *memSampler {
	m := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		s := memSamples()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v := memInUse(s); v > m.peak.Load() {
				m.peak.Store(v)
			}
			m.samples.Add(1)
			select {
			case <-t.C:
			case <-m.stop:
				return
			}
		}
	}()
	return m
}

// end stops sampling and returns the peak.
func (m *memSampler) end() uint64 {
	close(m.stop)
	<-m.done
	return m.peak.Load()
}

// settledMemory forces collections until the memory in use stops falling
// (for at most 2 s) and returns it, so that what an earlier test leaves
// behind for a moment (goroutines still ending, pooled buffers) does not
// count against this one.
func settledMemory() uint64 {
	s := memSamples()
	runtime.GC()
	last := memInUse(s)
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
		runtime.GC()
		v := memInUse(s)
		if v+256<<10 >= last {
			return v
		}
		last = v
	}
	return last
}

// memLimit is the bound for a host connected over c: memBound plus the
// rings on shared memory.
func memLimit(c transport.Info) uint64 {
	return memBound + 2*uint64(c.RingSize)
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// TestLiveMemoryBound (7): a child floods the host with 1 MiB requests
// (compressible ones: on TCP with ZSTD each is a few KiB on the wire and
// 1 MiB once decompressed)
//
//	held:   to a handler that never returns (until the test ends), from 48
//	        goroutines of the child's Peer;
//	unread: to a handler that replies (1 MiB of random bytes, freshly
//	        allocated) while the child reads nothing for 1.5 s (a raw Conn
//	        that only sends, 200 calls at most).
//
// The host's memory stays under memLimit, and calls beyond the budget come
// back to the child as CodeResourceExhaust errors.
func TestLiveMemoryBound(t *testing.T) {
	// HeapInuse counts garbage the collector has not reclaimed yet, and the
	// collector's own goal (GOGC=100) is twice the live heap: with 1 MiB
	// replies allocated per call the figure then depends on when it runs
	// (a peak of 64.2 MiB was seen once on a loaded machine). A soft
	// memory limit under the bound makes it collect before the garbage
	// counts, so what the figure bounds is what the peer can make us hold;
	// live memory beyond the bound still shows.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(memBound * 3 / 4))
	for _, mode := range []string{"shm", "tcp-zstd"} {
		t.Run(mode+"/held", func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			host, _ := peerWithChildOpts(t, "live", mode, Options{Mux: hostMux(release), Logger: quiet})
			checkZstd(t, mode, host.Info())
			base := settledMemory()
			m := sampleMemory(2 * time.Millisecond)
			startChildFlood(t, host, floodSpec{Methods: []string{"never"}, Size: 1 << 20, Compressible: true,
				Goroutines: 48, Calls: 20, Timeout: 2 * time.Second, Duration: 1500 * time.Millisecond})
			ct := childTally(t, host, 15*time.Second)
			peak := m.end()
			limit := memLimit(host.Info())
			t.Logf("host memory: %s before, peak %s over %d samples (limit %s); budget in use %s; child: %v",
				mib(base), mib(peak), m.samples.Load(), mib(limit), mib(uint64(host.budget.used.Load())), ct)
			checkPeak(t, peak, limit)
			if ct == nil || ct.Exhausted == 0 {
				t.Errorf("the child saw no CodeResourceExhaust refusal")
			}
			if ct != nil && ct.Other > 0 {
				t.Errorf("the child's calls failed otherwise: %v", ct.Errs)
			}
			if err := host.Err(); err != nil {
				t.Errorf("the connection failed: %v", err)
			}
		})
		t.Run(mode+"/unread", func(t *testing.T) {
			spec, _ := json.Marshal(floodSpec{Methods: []string{"alloc"}, Size: 1 << 20, Compressible: true,
				Calls: 200, Timeout: 30 * time.Second, Duration: 1500 * time.Millisecond})
			// The child floods as soon as it is connected: measure first.
			base := settledMemory()
			m := sampleMemory(2 * time.Millisecond)
			c, ch := connWithChild(t, "rawflood", mode, memRawFloodEnv+"="+string(spec))
			host := NewPeer(c, Options{Mux: hostMux(nil), Logger: quiet})
			t.Cleanup(func() { host.Close() })
			checkZstd(t, mode, host.Info())
			var exit error
			select {
			case exit = <-ch.done:
				ch.done <- exit
			case <-time.After(20 * time.Second):
				m.end()
				t.Fatalf("the flooding child did not finish within 20s\n%s", allStacks())
			}
			peak := m.end()
			limit := memLimit(host.Info())
			out := ch.stdout.String()
			var res rawFloodResult
			if i := strings.Index(out, "RESULT "); i < 0 || json.Unmarshal([]byte(strings.TrimSpace(out[i+len("RESULT "):])), &res) != nil {
				t.Fatalf("the child printed no result (exit %v): %q", exit, out)
			}
			t.Logf("host memory: %s before, peak %s over %d samples (limit %s); child: %+v; host Err %v",
				mib(base), mib(peak), m.samples.Load(), mib(limit), res, host.Err())
			checkPeak(t, peak, limit)
			if res.Exhausted == 0 {
				t.Errorf("the child saw no CodeResourceExhaust refusal")
			}
			if res.Other > 0 || res.Replies+res.Exhausted != res.Sent {
				t.Errorf("the child sent %d calls and got %d replies, %d refusals, %d other answers (%s)", res.Sent, res.Replies, res.Exhausted, res.Other, res.FirstOther)
			}
		})
	}
}

// checkPeak fails the test if peak is over limit, except under the race
// detector, whose instrumentation allocates more (and whose sync.Pool drops
// a share of what is put back): there the figure is only logged.
func checkPeak(t *testing.T, peak, limit uint64) {
	t.Helper()
	if peak > limit && !raceEnabled {
		t.Errorf("the host's memory peaked at %s, over %s", mib(peak), mib(limit))
	}
}

func checkZstd(t *testing.T, mode string, in transport.Info) {
	t.Helper()
	if mode == "tcp-zstd" && in.Compression != "zstd" {
		t.Fatalf("compression %q, want zstd", in.Compression)
	}
}

// rawFloodResult is what the rawflood child prints.
type rawFloodResult struct {
	Sent, Replies, Exhausted, Other int
	SendErr, FirstOther             string
	ReadAfter                       time.Duration // when it started reading
}

// rawFloodChild sends the calls of memRawFloodEnv's floodSpec (one
// goroutine, Calls in all, each send bounded by Duration) and reads nothing
// for Duration; then it reads every answer (until none comes for 3 s) and
// prints its result.
func rawFloodChild(c transport.Conn) int {
	var s floodSpec
	if err := json.Unmarshal([]byte(os.Getenv(memRawFloodEnv)), &s); err != nil {
		fmt.Fprintln(os.Stderr, "rawflood:", err)
		return 2
	}
	req := floodRequest(s.Size, s.Compressible, 1)
	start := time.Now()
	end := start.Add(s.Duration)
	var sent atomic.Int64
	var sendErr atomic.Value
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		for id := 1; id <= s.Calls; id++ {
			head := appendCall(nil, uint64(id), int64(s.Timeout), 0, 0, "", s.Methods[0], nil)
			if err := sendparts.Until(c, end, nil, kindCall, head, req); err != nil {
				sendErr.Store(err.Error())
				return
			}
			sent.Add(1)
		}
	}()
	time.Sleep(time.Until(end))
	res := rawFloodResult{ReadAfter: time.Since(start)}
	for {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		m, err := c.Recv()
		if err != nil {
			break
		}
		switch m.Type {
		case kindReply:
			res.Replies++
		case kindError:
			_, body, _ := parseID(m.Data)
			code, msg, _, err := parseErrorBody(body)
			if err == nil && Code(code) == CodeResourceExhaust {
				res.Exhausted++
			} else {
				res.Other++
				if res.FirstOther == "" {
					res.FirstOther = fmt.Sprintf("code %d: %s (%v)", code, msg, err)
				}
			}
		default:
			res.Other++
			if res.FirstOther == "" {
				res.FirstOther = fmt.Sprintf("message type %#x", m.Type)
			}
		}
		c.Release()
		if isDone(sendDone) && res.Replies+res.Exhausted+res.Other >= int(sent.Load()) {
			break
		}
	}
	res.Sent = int(sent.Load())
	if e, ok := sendErr.Load().(string); ok {
		res.SendErr = e
	}
	b, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", b)
	c.Close()
	return 0
}
