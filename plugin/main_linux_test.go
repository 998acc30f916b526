//go:build linux

package plugin_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	negotiate "github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
	"github.com/ringwire/ringwire/plugin"
)

// The test binary doubles as the plugin (and, for one test, as a host): when
// roleEnv names a role, TestMain runs it instead of the tests.
const (
	roleEnv  = "RINGWIRE_PLUGIN_TEST_ROLE"
	crashEnv = "RINGWIRE_PLUGIN_TEST_CRASH_AFTER" // crash role: exit 3 this long after starting
)

var roles = map[string]func() int{
	"echo": func() int { return serve(echoPlugin()) },
	// noisy prints a 1 MiB line and garbage before serving.
	"noisy": func() int {
		os.Stdout.Write(append(bytes.Repeat([]byte{'x'}, bigLine), '\n'))
		os.Stdout.Write([]byte("bin\x00\xff\xfe\x01ary\n"))
		os.Stdout.Write([]byte("partial line without newline, "))
		os.Stderr.Write([]byte("to stderr\r\n"))
		os.Stdout.Write([]byte("continued\n"))
		return serve(echoPlugin())
	},
	// plainzstd connects over plaintext TCP accepting only ZSTD
	// (Plugin.Transport).
	"plainzstd": func() int {
		p := echoPlugin()
		p.Transport = transport.Config{InsecurePlaintextTCP: true, Compressions: []negotiate.Compression{negotiate.CompressionZstd}}
		return serve(p)
	},
	// badtoken presents a token of its own.
	"badtoken": func() int {
		os.Setenv("RINGWIRE_PLUGIN_TOKEN", "not-the-token")
		return serve(echoPlugin())
	},
	// crash serves, then exits with status 3 after crashEnv.
	"crash": func() int {
		d, _ := time.ParseDuration(os.Getenv(crashEnv))
		time.AfterFunc(d, func() { os.Exit(3) })
		return serve(echoPlugin())
	},
	// exit dies before serving.
	"exit": func() int {
		fmt.Fprintln(os.Stderr, "exit role: giving up before Serve")
		return 7
	},
	// sleep never serves.
	"sleep": func() int {
		time.Sleep(time.Minute)
		return 0
	},
	// stubborn ignores SIGTERM and outlives its connection.
	"stubborn": func() int {
		_ = plugin.Serve(context.Background(), echoPlugin())
		signal.Ignore(syscall.SIGTERM) // once its connection has ended
		for {
			time.Sleep(time.Hour)
		}
	},
	// host launches an echo plugin, prints its pid and waits to be killed.
	"host": func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cfg := pluginConfig("echo")
		cfg.Logger = slog.New(slog.DiscardHandler)
		c, err := plugin.Launch(ctx, cfg)
		if err != nil {
			fmt.Println("ERR", err)
			return 2
		}
		fmt.Println("PID", c.PID())
		time.Sleep(time.Minute)
		return 0
	},
}

func serve(p *plugin.Plugin) int {
	if err := plugin.Serve(context.Background(), p); err != nil {
		fmt.Fprintln(os.Stderr, "plugin:", err)
		return 1
	}
	return 0
}

const bigLine = 1 << 20

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		f := roles[role]
		if f == nil {
			fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
			os.Exit(2)
		}
		os.Exit(f())
	}
	code := m.Run()
	if n := childRaces.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d plugin processes reported data races (their stderr is above)\n", n)
		code = 1
	}
	os.Exit(code)
}

// childRaces counts the data race reports seen in plugin processes' stderr.
var childRaces atomic.Int32

// checkRace notes a data race report in a plugin's stderr line, and copies
// the line to the test's stderr.
func checkRace(stream, line string) {
	if stream == "stderr" && strings.Contains(line, "WARNING: DATA RACE") {
		childRaces.Add(1)
	}
	if stream == "stderr" && (childRaces.Load() > 0 || os.Getenv("RINGWIRE_PLUGIN_TEST_VERBOSE") != "") {
		fmt.Fprintln(os.Stderr, "plugin stderr:", line)
	}
}

// childOutput is the logger of plugins whose output a test does not
// examine: it only watches for data race reports.
var childOutput = slog.New(&recorder{mu: new(sync.Mutex), discard: true})

// echoMux is the test plugins' interface:
//
//	echo      returns its request
//	block     calls the host's "entered", then waits for its context to end
//	sleep     calls the host's "entered", sleeps the milliseconds its request
//	          holds (decimal), answers "slept"
//	pid       returns the plugin's pid (decimal)
//	callback  calls the host's "hostecho" with its request and returns the answer
//	counter   (object type) counts calls of "add"
func echoMux() *plugin.Mux {
	m := plugin.NewMux()
	m.Handle("echo", func(_ context.Context, req []byte) ([]byte, error) {
		return bytes.Clone(req), nil
	})
	m.Handle("block", func(ctx context.Context, req []byte) ([]byte, error) {
		host, _ := plugin.CallerOf(ctx)
		if _, err := host.Call(ctx, "entered", nil); err != nil {
			return nil, err
		}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	m.Handle("sleep", func(ctx context.Context, req []byte) ([]byte, error) {
		host, _ := plugin.CallerOf(ctx)
		if _, err := host.Call(ctx, "entered", nil); err != nil {
			return nil, err
		}
		ms, _ := strconv.Atoi(string(req))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return []byte("slept"), nil
	})
	m.Handle("pid", func(context.Context, []byte) ([]byte, error) {
		return strconv.AppendInt(nil, int64(os.Getpid()), 10), nil
	})
	m.Handle("callback", func(ctx context.Context, req []byte) ([]byte, error) {
		host, _ := plugin.CallerOf(ctx)
		return host.Call(ctx, "hostecho", req)
	})
	// scan hands each word of the request to the caller's callback, one
	// call back each, and returns how many there were.
	m.Handle("scan", func(ctx context.Context, req []byte) ([]byte, error) {
		words := strings.Fields(string(req))
		for _, w := range words {
			if _, err := plugin.Callback(ctx, []byte(w)); err != nil {
				return nil, err
			}
		}
		return strconv.AppendInt(nil, int64(len(words)), 10), nil
	})
	m.HandleType("counter", func(context.Context, []byte) (plugin.Object, error) {
		return &counter{}, nil
	})
	return m
}

// counter is the test plugins' remote object type: "add" counts calls.
type counter struct {
	mu sync.Mutex
	n  uint64
}

func (c *counter) Call(_ context.Context, method string, _ []byte) ([]byte, error) {
	if method != "add" {
		return nil, plugin.Errorf(plugin.CodeNotFound, "counter has no method %q", method)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return binary.LittleEndian.AppendUint64(nil, c.n), nil
}

func echoPlugin() *plugin.Plugin {
	return &plugin.Plugin{
		Name: "echo", Version: "1.2.3", Description: "echoes what it gets",
		Constants: map[string]string{"greeting": "hello", "answer": "42"},
		Mux:       echoMux(),
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

// otherService is a service no test plugin serves: a host that needs it
// refuses every one of them.
var otherService = plugin.NewService("other", "1.0.0")

// pluginConfig launches the test binary in role.
func pluginConfig(role string, env ...string) *plugin.Config {
	return &plugin.Config{
		Name:         role,
		Path:         os.Args[0],
		Args:         []string{"-test.run=^$"},
		Env:          childEnv(role, env...),
		StartTimeout: 10 * time.Second,
		StopTimeout:  2 * time.Second,
		Logger:       childOutput,
	}
}

// unsupervised makes cfg a plugin whose end is the test's subject: no
// restarts, no health pings.
func unsupervised(cfg *plugin.Config) *plugin.Config {
	cfg.MaxRestarts, cfg.HealthInterval = -1, -1
	return cfg
}

// childEnv is the environment of test plugins: the race detector (in a
// -race build) exits at once instead of sleeping a second first.
func childEnv(role string, env ...string) []string {
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	return append(append(os.Environ(), roleEnv+"="+role, "GORACE="+gorace), env...)
}

// hostMux serves the plugins' callbacks: "entered" signals entered,
// "hostecho" returns its request.
func hostMux(entered chan<- struct{}) *rpc.Mux {
	m := rpc.NewMux()
	m.Handle("entered", func(context.Context, []byte) ([]byte, error) {
		if entered != nil {
			select {
			case entered <- struct{}{}:
			default:
			}
		}
		return nil, nil
	})
	m.Handle("hostecho", func(_ context.Context, req []byte) ([]byte, error) {
		return append([]byte("host:"), req...), nil
	})
	return m
}

// launch starts a plugin and stops it (killing it if need be) at cleanup.
func launch(t *testing.T, cfg *plugin.Config) *plugin.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := plugin.Launch(ctx, cfg)
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	t.Cleanup(func() { reap(t, c) })
	return c
}

// reap ends c and checks that its process is gone.
func reap(t *testing.T, c *plugin.Client) {
	t.Helper()
	pid := c.PID()
	_ = c.Kill()
	gone := make(chan struct{})
	go func() { _ = c.Wait(); close(gone) }()
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Errorf("plugin %d not reaped 10s after Kill", pid)
		return
	}
	if pid > 0 && !processGone(pid) {
		t.Errorf("process %d still exists after being reaped", pid)
	}
}

// processGone reports whether pid no longer names a live process: it does
// not exist, or it is a zombie (an orphan whose adopter does not reap).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// waitStopped waits until every thread of pid is stopped (SIGSTOP takes
// effect on a spinning thread only when the kernel next interrupts it).
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	if !waitFor(5*time.Second, func() bool {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil || len(tasks) == 0 {
			return false
		}
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			i := bytes.LastIndexByte(b, ')')
			if err != nil || i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("process %d not stopped 5s after SIGSTOP", pid)
	}
}

// waitGone waits up to d for pid to disappear.
func waitGone(pid int, d time.Duration) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if processGone(pid) {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return processGone(pid)
}

// waitFor polls cond every 5ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

// recorder is a slog.Handler that keeps every record, for assertions.
type recorder struct {
	mu      *sync.Mutex
	recs    *[]record
	attrs   []slog.Attr
	discard bool // keep nothing (only check for races)
}

type record struct {
	Time  time.Time
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

func newRecorder() *recorder { return &recorder{mu: new(sync.Mutex), recs: new([]record)} }

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	m := map[string]string{}
	for _, a := range r.attrs {
		m[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	checkRace(m["stream"], rec.Message)
	if r.discard {
		return nil
	}
	r.mu.Lock()
	*r.recs = append(*r.recs, record{Time: rec.Time, Level: rec.Level, Msg: rec.Message, Attrs: m})
	r.mu.Unlock()
	return nil
}

func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorder{mu: r.mu, recs: r.recs, attrs: append(slices.Clone(r.attrs), as...), discard: r.discard}
}

func (r *recorder) WithGroup(string) slog.Handler { return r }

// records returns the records that match (a nil match takes all).
func (r *recorder) records(match func(record) bool) []record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []record
	for _, rec := range *r.recs {
		if match == nil || match(rec) {
			out = append(out, rec)
		}
	}
	return out
}

// dump writes every record to t's log (for failures).
func (r *recorder) dump(t *testing.T) {
	t.Helper()
	for _, rec := range r.records(nil) {
		msg := rec.Msg
		if len(msg) > 200 {
			msg = msg[:200] + fmt.Sprintf("...(%d bytes)", len(rec.Msg))
		}
		t.Logf("%s %s %q %v", rec.Time.Format("15:04:05.000"), rec.Level, msg, rec.Attrs)
	}
}

// stateRecords are the "plugin state" records, as "name:state".
func (r *recorder) states() []string {
	var out []string
	for _, rec := range r.records(func(rec record) bool { return rec.Msg == "ringwire: plugin state" }) {
		out = append(out, rec.Attrs["plugin"]+":"+rec.Attrs["state"])
	}
	return out
}

func slogNew(h slog.Handler) *slog.Logger { return slog.New(h) }
