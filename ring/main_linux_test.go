package ring_test

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/duplex"
	"github.com/ringwire/ringwire/ring"
)

// The test binary doubles as the peer process: when childEnv names a role,
// TestMain runs that role against rings offered by the parent instead of the
// tests. Test files register roles in init functions.
const (
	childEnv    = "RINGWIRE_RING_CHILD"
	childArgEnv = "RINGWIRE_RING_CHILD_ARG"
	childSpin   = "RINGWIRE_RING_CHILD_SPIN" // ring.Options.Spin for the child, as a duration
	childAdapt  = "RINGWIRE_RING_CHILD_ADAPT"
	childPark   = "RINGWIRE_RING_CHILD_PARK" // ring.Options.ParkTimeout for the child; 0 or unset: default
)

// childRoles maps a role name to the function the child runs. It returns the
// child's exit code; arg is the parent's childArgEnv.
var childRoles = map[string]func(e *duplex.End, arg string) int{}

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
	conn, err := duplex.Inherited()
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	var o ring.Options
	if d, err := time.ParseDuration(os.Getenv(childSpin)); err == nil {
		o.Spin = d
	}
	if d, err := time.ParseDuration(os.Getenv(childAdapt)); err == nil {
		o.AdaptiveSpin = d
	}
	if d, err := time.ParseDuration(os.Getenv(childPark)); err == nil {
		o.ParkTimeout = d
	}
	e, err := duplex.Accept(conn, duplex.Config{Options: o})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: accept:", err)
		return 2
	}
	code := f(e, os.Getenv(childArgEnv))
	e.Shutdown()
	_ = e.Close()
	return code
}

// child is a running peer process.
type child struct {
	End  *duplex.End
	Cmd  *exec.Cmd
	done chan error // receives cmd.Wait's result once
	err  error
	got  bool
}

// Wait waits at most d for the child to exit and returns its Wait error.
func (c *child) Wait(d time.Duration) error {
	if c.got {
		return c.err
	}
	select {
	case c.err = <-c.done:
		c.got = true
		return c.err
	case <-time.After(d):
		return fmt.Errorf("child %d still running after %v", c.Cmd.Process.Pid, d)
	}
}

// startChild starts the test binary as a child running role, offers it a
// pair of rings described by cfg and returns the parent's side. The child's
// Spin, AdaptiveSpin and ParkTimeout follow cfg.Options unless env overrides
// them. Cleanup (which the test must not pre-empt by using the rings
// afterwards) closes our side, kills the child if it is still running after a
// grace period, reaps it and unmaps everything.
func startChild(t testing.TB, role, arg string, cfg duplex.Config, env ...string) *child {
	t.Helper()
	return startChildFiles(t, role, arg, cfg, nil, env...)
}

// extraFd is the descriptor at which the child finds the first of the files
// passed to startChildFiles (duplex.Spawn puts the control socket first).
const extraFd = duplex.InheritedFd + 1

// startChildFiles is startChild that also hands files to the child, as
// descriptors extraFd, extraFd+1, ... in order. The parent's copies are closed
// once the child has started (or failed to), whatever happens.
func startChildFiles(t testing.TB, role, arg string, cfg duplex.Config, files []*os.File, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+role, childArgEnv+"="+arg,
		childSpin+"="+cfg.Options.Spin.String(), childAdapt+"="+cfg.Options.AdaptiveSpin.String(),
		childPark+"="+cfg.Options.ParkTimeout.String())
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = files
	conn, err := duplex.Spawn(cmd)
	for _, f := range files {
		_ = f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	c := &child{Cmd: cmd, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	c.End, err = duplex.Offer(conn, cfg)
	if err != nil {
		_ = conn.Close()
		_ = cmd.Process.Kill()
		<-c.done
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Closing our end hangs up the control socket: the child sees its
		// peer gone and exits.
		_ = c.End.Close()
		if c.Wait(5*time.Second) != nil && !c.got {
			_ = cmd.Process.Kill()
			_ = c.Wait(5 * time.Second)
		}
	})
	return c
}

// itoa keeps role arguments readable.
func itoa(n int) string { return strconv.Itoa(n) }
