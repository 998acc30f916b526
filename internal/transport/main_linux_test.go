package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	hs "github.com/ringwire/ringwire/internal/handshake"
	negotiate "github.com/ringwire/ringwire/internal/handshake"
)

// The test binary doubles as the peer process: when childEnv names a role,
// TestMain dials the parent's listener described by the environment and runs
// that role instead of the tests.
const (
	childEnv      = "RINGWIRE_TRANSPORT_CHILD"
	childNetEnv   = "RINGWIRE_TRANSPORT_NET"
	childAddrEnv  = "RINGWIRE_TRANSPORT_ADDR"
	childModeEnv  = "RINGWIRE_TRANSPORT_MODE"
	childCompEnv  = "RINGWIRE_TRANSPORT_COMP" // comma-separated compression names; "-" for none
	childTokenEnv = "RINGWIRE_TRANSPORT_TOKEN"
	childTLSEnv   = "RINGWIRE_TRANSPORT_TLS" // a CA.ClientBundle
	childConEnv   = "RINGWIRE_TRANSPORT_CONTRACT"
	childUIDEnv   = "RINGWIRE_TRANSPORT_SETUID" // switch to this uid before dialling
	childPlainEnv = "RINGWIRE_TRANSPORT_PLAINTEXT"
)

// childRoles maps a role to what the child does with its dialled Conn (or
// with the dial error). The result is the child's exit code.
var childRoles = map[string]func(c Conn, dialErr error) int{
	// echo sends every message back until the parent goes away.
	"echo": func(c Conn, err error) int {
		if err != nil {
			fmt.Fprintln(os.Stderr, "child: dial:", err)
			return 2
		}
		defer c.Close()
		for {
			m, err := c.Recv()
			if err != nil {
				if errors.Is(err, ErrPeerGone) || errors.Is(err, ErrClosed) {
					return 0
				}
				fmt.Fprintln(os.Stderr, "child: recv:", err)
				return 3
			}
			err = c.Send(m.Type, m.Data)
			c.Release()
			if err != nil {
				if errors.Is(err, ErrPeerGone) || errors.Is(err, ErrClosed) {
					return 0
				}
				fmt.Fprintln(os.Stderr, "child: send:", err)
				return 3
			}
		}
	},
	// report prints how the dial ended ("ok <transport>" or "err <class>:
	// message") on stdout, for refusal tests.
	"report": func(c Conn, err error) int {
		if err != nil {
			fmt.Printf("err %s: %v\n", errClass(err), err)
			return 0
		}
		fmt.Printf("ok %s\n", c.Info().Kind)
		// Hold the connection until the parent has seen us.
		_, _ = c.Recv()
		c.Close()
		return 0
	},
}

// errClass names the sentinel an error matches, for reports across processes.
func errClass(err error) string {
	for _, s := range []struct {
		name string
		err  error
	}{
		{"version", negotiate.ErrVersion},
		{"contract", negotiate.ErrContractMismatch},
		{"unauthorized", negotiate.ErrUnauthorized},
		{"malformed", negotiate.ErrMalformed},
		{"refused", negotiate.ErrRefused},
		{"unsupported", errors.ErrUnsupported},
		{"timeout", ErrTimeout},
		{"peergone", ErrPeerGone},
		{"config", ErrConfig},
	} {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	return "other"
}

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role))
	}
	os.Exit(m.Run())
}

func runChild(role string) int {
	f := childRoles[role]
	if f == nil {
		fmt.Fprintf(os.Stderr, "child: unknown role %q\n", role)
		return 2
	}
	cfg := &Config{Name: "child", Version: "1.0", Token: []byte(os.Getenv(childTokenEnv)),
		Contract: []byte(os.Getenv(childConEnv)), InsecurePlaintextTCP: os.Getenv(childPlainEnv) == "true",
		Logger: slog.New(slog.DiscardHandler)}
	switch os.Getenv(childModeEnv) {
	case "shm":
		cfg.Mode = ModeShm
	case "framed":
		cfg.Mode = ModeFramed
	}
	if s := os.Getenv(childCompEnv); s != "" {
		cfg.Compressions = []negotiate.Compression{}
		for _, name := range strings.Split(s, ",") {
			if name == "-" {
				continue
			}
			z, err := hs.ParseCompression(name)
			if err != nil {
				fmt.Fprintln(os.Stderr, "child:", err)
				return 2
			}
			cfg.Compressions = append(cfg.Compressions, z)
		}
	}
	if b := os.Getenv(childTLSEnv); b != "" {
		tc, err := ClientConfigFromBundle([]byte(b))
		if err != nil {
			fmt.Fprintln(os.Stderr, "child: tls:", err)
			return 2
		}
		cfg.TLS = tc
	}
	if s := os.Getenv(childUIDEnv); s != "" {
		uid, _ := strconv.Atoi(s)
		if err := setUID(uid); err != nil {
			fmt.Fprintln(os.Stderr, "child: setuid:", err)
			return 2
		}
	}
	if strings.HasPrefix(role, "raw") {
		return f(nil, nil) // baselines dial a plain socket themselves
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, os.Getenv(childNetEnv), os.Getenv(childAddrEnv), cfg)
	return f(c, err)
}

// childSpec says how a child dials.
type childSpec struct {
	Role, Network, Addr string
	Mode                string // "", "shm" or "framed"
	Comp                string // see childCompEnv; "" = default
	Token, Contract     string
	TLS                 []byte
	UID                 string
	Plain               bool // InsecurePlaintextTCP
}

// proc is a running child process.
type proc struct {
	cmd    *exec.Cmd
	out    syncBuffer
	done   chan error
	exited bool
	err    error
}

// syncBuffer collects a child's stdout.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startChild starts the test binary as a child that dials per spec. Cleanup
// kills it if it outlives the test by more than a grace period, and reaps it.
func startChild(t testing.TB, s childSpec) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+s.Role, childNetEnv+"="+s.Network, childAddrEnv+"="+s.Addr,
		childModeEnv+"="+s.Mode, childCompEnv+"="+s.Comp, childTokenEnv+"="+s.Token,
		childConEnv+"="+s.Contract, childTLSEnv+"="+string(s.TLS), childUIDEnv+"="+s.UID,
		childPlainEnv+"="+strconv.FormatBool(s.Plain))
	cmd.Stderr = os.Stderr
	p := &proc{cmd: cmd, done: make(chan error, 1)}
	cmd.Stdout = &p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if p.wait(10*time.Second) != nil && !p.exited {
			_ = cmd.Process.Kill()
			_ = p.wait(5 * time.Second)
		}
	})
	return p
}

// wait waits at most d for the child's exit and returns its status.
func (p *proc) wait(d time.Duration) error {
	if p.exited {
		return p.err
	}
	select {
	case p.err = <-p.done:
		p.exited = true
		return p.err
	case <-time.After(d):
		return fmt.Errorf("child %d still running after %v", p.cmd.Process.Pid, d)
	}
}

// line waits at most d for the child's first line of output.
func (p *proc) line(d time.Duration) string {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if s, _, ok := strings.Cut(p.out.String(), "\n"); ok {
			return s
		}
		time.Sleep(5 * time.Millisecond)
	}
	return "(no output after " + d.String() + ")"
}
