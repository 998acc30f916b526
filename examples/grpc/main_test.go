package main

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ringwire/ringwire/transport"
)

// TestMain lets the test binary play the child: run re-executes it.
func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "1" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// runFlow runs parent and child and checks what holds for any transport.
func runFlow(t *testing.T, framed bool) *result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	const calls = 200
	res, err := run(ctx, options{Calls: calls, Framed: framed, Stdout: &out, Stderr: &out})
	t.Logf("child output:\n%s", out.String())
	if err != nil {
		t.Fatal(err) // also when the server's connection outlived the client or Serve did not return
	}
	if res.Calls != calls || res.Serving != calls {
		t.Errorf("child made %d Check calls, %d SERVING; want %d of each", res.Calls, res.Serving, calls)
	}
	if res.P50 <= 0 || res.P99 < res.P50 {
		t.Errorf("latencies p50 %v, p99 %v", res.P50, res.P99)
	}
	if !slices.Equal(res.Watched, watchSequence) {
		t.Errorf("Watch delivered %v, want %v", res.Watched, watchSequence)
	}
	if !strings.Contains(res.Stopped, "Serve returned after GracefulStop") {
		t.Errorf("server stopped: %q", res.Stopped)
	}
	return res
}

func TestHealthOverShm(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("shared memory needs Linux")
	}
	res := runFlow(t, false)
	if !slices.Equal(res.ServerKinds, []transport.Kind{transport.KindShm}) {
		t.Errorf("server accepted %v, want one shm connection", res.ServerKinds)
	}
	if !slices.Equal(res.ClientKinds, []string{"shm"}) {
		t.Errorf("client dialled %v, want one shm connection", res.ClientKinds)
	}
}

func TestHealthOverFramedUnix(t *testing.T) {
	res := runFlow(t, true)
	if !slices.Equal(res.ServerKinds, []transport.Kind{transport.KindUnix}) {
		t.Errorf("server accepted %v, want one framed unix connection", res.ServerKinds)
	}
	if !slices.Equal(res.ClientKinds, []string{"unix"}) {
		t.Errorf("client dialled %v, want one framed unix connection", res.ClientKinds)
	}
}

// TestReportsRejected checks that the parent refuses a child's report that
// breaks the protocol or the watch order.
func TestReportsRejected(t *testing.T) {
	for _, in := range []string{
		"watch NOT_SERVING\n",                 // out of order
		"watch SERVING\nwatch SERVING\n",      // a change missed
		"watch BOGUS\n",                       // not a status
		"checks 1 1 -5 3\ndone\n",             // negative latency
		"kind shm\n",                          // no done
		strings.Repeat("x", 300) + "\ndone\n", // over-long line
		"hello\ndone\n",
	} {
		hs := health.NewServer()
		if err := readReports(strings.NewReader(in), hs, &result{}); err == nil {
			t.Errorf("readReports accepted %q", in)
		}
	}
	hs := health.NewServer()
	res := &result{}
	in := "kind shm\nchecks 3 3 10 20\nwatch SERVING\nwatch NOT_SERVING\ndone\n"
	if err := readReports(strings.NewReader(in), hs, res); err != nil {
		t.Fatal(err)
	}
	// After the child saw NOT_SERVING the parent moved demo on a step.
	r, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: demoService})
	if err != nil || r.GetStatus() != watchSequence[2] {
		t.Errorf("demo status %v (%v), want %v", r.GetStatus(), err, watchSequence[2])
	}
	if res.Calls != 3 || res.Serving != 3 || res.P50 != 10 || res.P99 != 20 || !slices.Equal(res.ClientKinds, []string{"shm"}) {
		t.Errorf("parsed %+v", res)
	}
}
