package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// child is a process the harness started in a role.
type child struct {
	cmd  *exec.Cmd
	done chan error // the exit status, once reaped
	// lines are the child's stdout lines (a child announces itself there).
	lines chan string
}

// startChild starts this binary in role with env added and files passed as
// fds 3, 4, ...; cleanup closes stdin (the child's cue to exit), waits up to
// stopTimeout, then kills it, and always reaps it. The child gets
// Pdeathsig=SIGKILL, so it never outlives the harness.
func startChild(tb testing.TB, role string, env []string, files ...*os.File) *child {
	tb.Helper()
	cmd := exec.Command(executable(tb), "-test.run=^$")
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting the %s child: %v", role, err)
	}
	c := &child{cmd: cmd, done: make(chan error, 1), lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			default:
			}
		}
		c.done <- cmd.Wait()
	}()
	tb.Cleanup(func() {
		stdin.Close()
		select {
		case <-c.done:
		case <-time.After(stopTimeout):
			cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// await waits up to startTimeout for a stdout line starting with prefix and
// returns the rest of it.
func (c *child) await(tb testing.TB, prefix string) string {
	tb.Helper()
	timeout := time.After(startTimeout)
	for {
		select {
		case line := <-c.lines:
			if rest, ok := strings.CutPrefix(line, prefix); ok {
				return strings.TrimSpace(rest)
			}
		case err := <-c.done:
			tb.Fatalf("child exited before saying %q: %v", prefix, err)
		case <-timeout:
			tb.Fatalf("child said no %q within %v", prefix, startTimeout)
		}
	}
}

// untilStdinCloses returns a channel closed when the parent closes the
// child's stdin (or dies).
func untilStdinCloses() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := os.Stdin.Read(buf); err != nil {
				close(ch)
				return
			}
		}
	}()
	return ch
}

// Busy-loop ("hog") children: the contended machine of the busy modes.
const (
	hogCPUsEnv = "RINGWIRE_BENCH_HOG_CPUS"
	hogMax     = 5 * time.Minute // a hog exits by itself after this
	hogReady   = "HOG_READY"
)

func init() {
	roles["hog"] = func() int {
		n, _ := strconv.Atoi(os.Getenv(hogCPUsEnv))
		n = max(1, n)
		runtime.GOMAXPROCS(n)
		stop := untilStdinCloses()
		for range n {
			go func() {
				runtime.LockOSThread()
				x := uint64(1)
				for {
					// A pure CPU loop, checked for the end now and then.
					for range 1 << 16 {
						x = x*6364136223846793005 + 1442695040888963407
					}
					select {
					case <-stop:
						return
					default:
					}
				}
			}()
		}
		fmt.Println(hogReady)
		select {
		case <-stop:
		case <-time.After(hogMax):
		}
		return 0
	}
}

// startHog starts a process keeping cpus CPUs busy until tb's cleanup.
func startHog(tb testing.TB, cpus int) {
	tb.Helper()
	c := startChild(tb, "hog", []string{hogCPUsEnv + "=" + strconv.Itoa(cpus)})
	c.await(tb, hogReady)
}
