// Command grpc runs the stock gRPC health service between two processes over
// ringwire: the parent serves it, a copy of itself dials in, and the two
// negotiate shared-memory rings over a Unix socket. Only the listener and the
// dialer differ from plain gRPC; the service and the client stubs do not.
//
// The child makes -n unary Check calls and prints their p50/p99 latency, then
// watches service "demo" while the parent changes its status a step at a time.
//
//	go run . [-n 1000] [-framed] [-timeout 20s]
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ringwire/ringwire/transport"
)

// Environment of the child process.
const (
	envChild   = "RINGWIRE_GRPC_CHILD" // "1" in the child
	envAddr    = "RINGWIRE_GRPC_ADDR"
	envCalls   = "RINGWIRE_GRPC_CALLS"
	envFramed  = "RINGWIRE_GRPC_FRAMED"
	envTimeout = "RINGWIRE_GRPC_TIMEOUT"
)

// reportFD is the child's descriptor of the pipe it reports on (ExtraFiles[0]).
const reportFD = 3

// demoService is the health service whose status the parent changes.
const demoService = "demo"

// watchSequence is the status of demoService the child sees, in order: the
// initial one, then each change. The parent makes the next change only after
// the child reported the last, so the health server never coalesces two.
var watchSequence = []healthpb.HealthCheckResponse_ServingStatus{
	healthpb.HealthCheckResponse_SERVING,
	healthpb.HealthCheckResponse_NOT_SERVING,
	healthpb.HealthCheckResponse_SERVICE_UNKNOWN,
	healthpb.HealthCheckResponse_SERVING,
}

// maxCalls bounds -n.
const maxCalls = 1_000_000

// shutdownWait bounds each step of the server's shutdown.
const shutdownWait = 5 * time.Second

var errProtocol = errors.New("child report: unexpected line")

func main() {
	if os.Getenv(envChild) == "1" {
		os.Exit(childMain())
	}
	n := flag.Int("n", 1000, "number of unary Check calls to time")
	framed := flag.Bool("framed", false, "make the client refuse shared memory (framed messages on the Unix socket)")
	timeout := flag.Duration("timeout", 20*time.Second, "bound on the whole run")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res, err := run(ctx, options{Calls: *n, Framed: *framed, Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc:", err)
		os.Exit(1)
	}
	fmt.Printf("server: accepted %d connection(s) over %v; the connection ended when the client left; %s\n",
		len(res.ServerKinds), res.ServerKinds, res.Stopped)
}

// options configures one run of parent and child.
type options struct {
	Calls          int       // unary calls the child times
	Framed         bool      // the child dials with transport.ModeFramed
	Stdout, Stderr io.Writer // the child's output
}

// result is what a run observed, on both sides.
type result struct {
	ServerKinds []transport.Kind // of each connection the server accepted
	ClientKinds []string         // of each connection the child dialled
	Calls       int              // Check calls the child timed
	Serving     int              // of them, the ones that answered SERVING
	P50, P99    time.Duration
	Watched     []healthpb.HealthCheckResponse_ServingStatus // in the order received
	Stopped     string                                       // how the server stopped
}

// run serves gRPC health on a fresh Unix socket, runs the child against it,
// then checks that the server's connection ended and stops the server.
func run(ctx context.Context, o options) (*result, error) {
	if o.Calls < 1 || o.Calls > maxCalls {
		return nil, fmt.Errorf("-n must be in [1, %d]", maxCalls)
	}
	dir, err := os.MkdirTemp("", "ringwire-grpc-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	addr := filepath.Join(dir, "health.sock")

	l, err := transport.Listen("unix", addr, &transport.Config{Name: "grpc-example-server", Logger: quietLogger()})
	if err != nil {
		return nil, err
	}
	acc := &trackingListener{Listener: l}
	hs := health.NewServer() // "" is SERVING
	hs.SetServingStatus(demoService, watchSequence[0])
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(acc) }()

	res := &result{}
	cerr := runChild(ctx, o, addr, hs, res)
	res.ServerKinds = acc.kinds()
	// The client is gone: gRPC must have seen its connection end and closed
	// it, without being told to stop.
	if err := acc.waitClosed(ctx, shutdownWait); err != nil && cerr == nil {
		cerr = err
	}
	res.Stopped, err = stop(gs, served)
	return res, errors.Join(cerr, err)
}

// runChild starts the child, answers its reports and reaps it.
func runChild(ctx context.Context, o options, addr string, hs *health.Server, res *result) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), envChild+"=1", envAddr+"="+addr,
		envCalls+"="+strconv.Itoa(o.Calls), envFramed+"="+strconv.FormatBool(o.Framed))
	if dl, ok := ctx.Deadline(); ok {
		cmd.Env = append(cmd.Env, envTimeout+"="+time.Until(dl).String())
	}
	cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
	cmd.ExtraFiles = []*os.File{pw}
	cmd.WaitDelay = shutdownWait
	err = cmd.Start()
	pw.Close() // the child holds the only write end: EOF when it exits
	if err != nil {
		return fmt.Errorf("start child: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = pr.SetReadDeadline(dl)
	}
	rerr := readReports(pr, hs, res)
	if rerr != nil {
		_ = cmd.Process.Kill() // a child that broke the protocol is not waited for
	}
	werr := cmd.Wait()
	if werr != nil {
		werr = fmt.Errorf("child: %w", werr)
	}
	return errors.Join(rerr, werr)
}

// readReports reads the child's report lines until it closes the pipe. On
// each "watch" line it checks the status against watchSequence and sets the
// next one.
func readReports(r io.Reader, hs *health.Server, res *result) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 256), 256) // lines are short; longer ones fail the scan
	done := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "kind":
			res.ClientKinds = append(res.ClientKinds, f[1])
		case len(f) == 5 && f[0] == "checks":
			var v [4]int64
			for i := range v {
				x, err := strconv.ParseInt(f[i+1], 10, 64)
				if err != nil || x < 0 {
					return fmt.Errorf("%w: %q", errProtocol, sc.Text())
				}
				v[i] = x
			}
			res.Calls, res.Serving = int(v[0]), int(v[1])
			res.P50, res.P99 = time.Duration(v[2]), time.Duration(v[3])
		case len(f) == 2 && f[0] == "watch":
			st, ok := healthpb.HealthCheckResponse_ServingStatus_value[f[1]]
			i := len(res.Watched)
			if !ok || i >= len(watchSequence) {
				return fmt.Errorf("%w: %q", errProtocol, sc.Text())
			}
			res.Watched = append(res.Watched, healthpb.HealthCheckResponse_ServingStatus(st))
			if res.Watched[i] != watchSequence[i] {
				return fmt.Errorf("watch update %d: got %v, want %v", i, res.Watched[i], watchSequence[i])
			}
			if i+1 < len(watchSequence) {
				hs.SetServingStatus(demoService, watchSequence[i+1])
			}
		case len(f) == 1 && f[0] == "done":
			done = true
		default:
			return fmt.Errorf("%w: %q", errProtocol, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("child report: %w", err)
	}
	if !done {
		return errors.New("child report: ended before done")
	}
	return nil
}

// stop stops gs gracefully, forcibly if that takes too long, and waits for
// Serve to return.
func stop(gs *grpc.Server, served <-chan error) (string, error) {
	how := "GracefulStop"
	graceful := make(chan struct{})
	go func() { gs.GracefulStop(); close(graceful) }()
	select {
	case <-graceful:
	case <-time.After(shutdownWait):
		how = "Stop (GracefulStop hung)"
		gs.Stop()
	}
	select {
	case err := <-served:
		if err != nil {
			return how, fmt.Errorf("serve: %w", err)
		}
		if how != "GracefulStop" {
			return how, errors.New("server: GracefulStop did not return")
		}
		return "Serve returned after " + how, nil
	case <-time.After(shutdownWait):
		return how, errors.New("server: Serve did not return after " + how)
	}
}

// trackingListener records the transport of each connection it accepts and
// whether gRPC has closed it.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*trackedConn
}

func (a *trackingListener) Accept() (net.Conn, error) {
	c, err := a.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, closed: make(chan struct{})}
	tc.info, _ = transport.InfoOf(c)
	a.mu.Lock()
	a.conns = append(a.conns, tc)
	a.mu.Unlock()
	return tc, nil
}

func (a *trackingListener) kinds() []transport.Kind {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := make([]transport.Kind, len(a.conns))
	for i, c := range a.conns {
		k[i] = c.info.Kind
	}
	return k
}

// waitClosed waits until every accepted connection has been closed.
func (a *trackingListener) waitClosed(ctx context.Context, d time.Duration) error {
	a.mu.Lock()
	conns := slices.Clone(a.conns)
	a.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	for i, c := range conns {
		select {
		case <-c.closed:
		case <-t.C:
			return fmt.Errorf("server: connection %d (%v) still open %v after the client left", i, c.info.Kind, d)
		case <-ctx.Done():
			return fmt.Errorf("server: connection %d still open: %w", i, ctx.Err())
		}
	}
	return nil
}

// trackedConn is a connection whose Close is observable.
type trackedConn struct {
	net.Conn
	info   transport.Info
	once   sync.Once
	closed chan struct{}
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// quietLogger keeps the transport's warnings and drops its per-connection
// info lines (the example prints its own).
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// childMain is the child process: a plain gRPC health client whose
// connections are ringwire Conns.
func childMain() int {
	if err := child(); err != nil {
		fmt.Fprintln(os.Stderr, "grpc child:", err)
		return 1
	}
	return 0
}

func child() error {
	calls, err := strconv.Atoi(os.Getenv(envCalls))
	if err != nil || calls < 1 || calls > maxCalls {
		return fmt.Errorf("bad %s %q", envCalls, os.Getenv(envCalls))
	}
	timeout, err := time.ParseDuration(os.Getenv(envTimeout))
	if err != nil || timeout <= 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rep := &reporter{f: os.NewFile(reportFD, "report")}
	defer rep.f.Close()
	addr := os.Getenv(envAddr)
	cfg := &transport.Config{Name: "grpc-example-client", Logger: quietLogger()}
	if os.Getenv(envFramed) == "true" {
		cfg.Mode = transport.ModeFramed
	}

	// The only ringwire-specific part of the client: its dialer.
	cc, err := grpc.NewClient("passthrough:///ringwire",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			c, err := transport.Dial(ctx, "unix", addr, cfg)
			if err != nil {
				return nil, err
			}
			in, _ := transport.InfoOf(c)
			fmt.Printf("client: dialled %s: transport %s, protocol v%d, max message %d KiB", in.Peer.Name, in.Kind, in.Version, in.MaxMessage>>10)
			if in.Kind == transport.KindShm {
				fmt.Printf(", two %d KiB rings", in.RingSize>>10)
			}
			fmt.Println()
			if err := rep.printf("kind %s", in.Kind); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)

	// The first call dials and runs both handshakes (ringwire's, HTTP/2's).
	start := time.Now()
	if err := checkServing(ctx, hc, ""); err != nil {
		return fmt.Errorf("first Check: %w", err)
	}
	fmt.Printf("client: first Check (dial, handshakes) took %v\n", time.Since(start).Round(time.Microsecond))

	lat := make([]time.Duration, 0, calls)
	serving := 0
	for range calls {
		t := time.Now()
		err := checkServing(ctx, hc, "")
		lat = append(lat, time.Since(t))
		if err != nil {
			return fmt.Errorf("Check %d: %w", len(lat), err)
		}
		serving++
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)*50/100], lat[min(len(lat)-1, len(lat)*99/100)]
	fmt.Printf("client: %d unary Check calls, all SERVING: p50 %v, p99 %v\n",
		calls, p50.Round(100*time.Nanosecond), p99.Round(100*time.Nanosecond))
	if err := rep.printf("checks %d %d %d %d", calls, serving, p50.Nanoseconds(), p99.Nanoseconds()); err != nil {
		return err
	}

	if err := watch(ctx, hc, rep); err != nil {
		return err
	}
	if err := cc.Close(); err != nil {
		return err
	}
	return rep.printf("done")
}

// checkServing makes one Check call and insists on SERVING.
func checkServing(ctx context.Context, hc healthpb.HealthClient, service string) error {
	r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return err
	}
	if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("status %v, want SERVING", r.GetStatus())
	}
	return nil
}

// watch follows demoService's status through watchSequence, reporting each
// update so the parent makes the next change.
func watch(ctx context.Context, hc healthpb.HealthClient, rep *reporter) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream
	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: demoService})
	if err != nil {
		return fmt.Errorf("Watch: %w", err)
	}
	got := make([]string, 0, len(watchSequence))
	for range watchSequence {
		r, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("Watch after %v: %w", got, err)
		}
		got = append(got, r.GetStatus().String())
		if err := rep.printf("watch %s", r.GetStatus()); err != nil {
			return err
		}
	}
	fmt.Printf("client: Watch %q streamed %s\n", demoService, strings.Join(got, " -> "))
	return nil
}

// reporter writes report lines to the parent.
type reporter struct {
	mu sync.Mutex
	f  *os.File
}

func (r *reporter) printf(format string, args ...any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := fmt.Fprintf(r.f, format+"\n", args...); err != nil {
		return fmt.Errorf("report to parent: %w", err)
	}
	return nil
}
