package plugin_test

import (
	"bytes"
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

// cpuTime reads a process's user+system CPU time from /proc/<pid>/stat.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 (1-based) of the whole line.
	rest := b[bytes.LastIndexByte(b, ')')+2:]
	f := strings.Fields(string(rest))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz
}

// TestIdleCostsNoCPU: a supervised plugin that has just served a burst of
// calls and then sits idle (health pings every second go on) costs both
// processes together less than 50 ms of CPU per second: the spinning stops
// once the traffic does.
func TestIdleCostsNoCPU(t *testing.T) {
	cfg := pluginConfig("echo")
	s := plugin.NewSession(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	for range 20000 {
		if _, err := s.Call(ctx, "echo", []byte("burst")); err != nil {
			t.Fatal(err)
		}
	}
	pid := s.Status().PID
	time.Sleep(300 * time.Millisecond) // spin windows and the guard wind down
	var ru0 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	child0 := cpuTime(t, pid)
	time.Sleep(time.Second)
	var ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	child1 := cpuTime(t, pid)
	host := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	plug := child1 - child0
	t.Logf("idle for 1s: host %v, plugin %v of CPU", host, plug)
	if host+plug >= 50*time.Millisecond {
		t.Fatalf("idle for 1s cost %v of CPU (host %v, plugin %v), want < 50ms", host+plug, host, plug)
	}
	if st := s.Status(); st.State != plugin.StateReady {
		t.Fatalf("state %v after idling, want ready", st.State)
	}
}
