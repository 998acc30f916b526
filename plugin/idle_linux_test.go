package plugin_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ringwire/ringwire/plugin"
)

// cpuTime returns the CPU time a process has used: the sum over its threads
// of the time on a CPU that /proc/<pid>/task/*/schedstat counts in
// nanoseconds (stat's utime and stime tick at 10 ms, too coarse for an idle
// process). Threads that ended before the call are not counted.
func cpuTime(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		tb.Fatal(err)
	}
	var sum time.Duration
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, task.Name()))
		if err != nil {
			continue // the thread ended meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) < 1 {
			tb.Fatalf("schedstat of task %s: %q", task.Name(), b)
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			tb.Fatalf("schedstat of task %s: %v", task.Name(), err)
		}
		sum += time.Duration(ns)
	}
	return sum
}

// idleCPU lets a session that has just served a burst of calls sit idle for
// d and returns the CPU time both processes used meanwhile.
func idleCPU(tb testing.TB, s *plugin.Client, d time.Duration) (host, plug time.Duration) {
	tb.Helper()
	pid := s.Status().PID
	var ru0 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	child0 := cpuTime(tb, pid)
	time.Sleep(d)
	var ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	child1 := cpuTime(tb, pid)
	host = time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	return host, child1 - child0
}

// startBurst starts a supervised echo plugin and serves n calls.
func startBurst(tb testing.TB, ctx context.Context, n int) *plugin.Client {
	tb.Helper()
	s, err := plugin.Launch(ctx, pluginConfig("echo"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Stop(context.Background()) })
	for range n {
		if _, err := s.Call(ctx, "echo", []byte("burst")); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// TestIdleCostsNoCPU: a supervised plugin that has just served a burst of
// calls and then sits idle (health pings every second go on) costs both
// processes together less than 50 ms of CPU per second: the spinning stops
// once the traffic does.
func TestIdleCostsNoCPU(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := startBurst(t, ctx, 20000)
	time.Sleep(300 * time.Millisecond) // spin windows and the guard wind down
	host, plug := idleCPU(t, s, time.Second)
	t.Logf("idle for 1s: host %v, plugin %v of CPU", host, plug)
	if host+plug >= 50*time.Millisecond {
		t.Fatalf("idle for 1s cost %v of CPU (host %v, plugin %v), want < 50ms", host+plug, host, plug)
	}
	if st := s.Status(); st.State != "ready" {
		t.Fatalf("state %v after idling, want ready", st.State)
	}
}

// BenchmarkIdle measures what an idle connection costs: a supervised plugin
// serves a burst of calls, then host and plugin sit idle (health pings every
// second go on) for a second per iteration. It reports the CPU time of each
// process per second of idling (the target is under 5 ms for both together);
// ns/op is the second itself.
func BenchmarkIdle(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := startBurst(b, ctx, 20000)
	time.Sleep(300 * time.Millisecond)
	var host, plug time.Duration
	b.ResetTimer()
	for range b.N {
		h, p := idleCPU(b, s, time.Second)
		host, plug = host+h, plug+p
	}
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(host)/float64(time.Millisecond)/secs, "host-cpu-ms/s")
	b.ReportMetric(float64(plug)/float64(time.Millisecond)/secs, "plugin-cpu-ms/s")
	b.ReportMetric(float64(host+plug)/float64(time.Millisecond)/secs, "cpu-ms/s")
}
