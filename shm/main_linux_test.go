package shm

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The test binary re-executes itself as a child process for the
// cross-process tests. The child's role is chosen by this variable.
const childEnv = "RINGWIRE_SHM_CHILD"

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(childMain(role))
	}
	os.Exit(m.Run())
}

// childMain runs in the re-executed test binary. Every role is bounded in time.
func childMain(role string) int {
	switch role {
	case "sleep":
		// Killed by the parent; exits by itself if the parent forgets.
		time.Sleep(30 * time.Second)
		return 0
	case "conn":
		// fd 3 is a socket to the parent: say hello, then hold it open.
		f := os.NewFile(3, "sock")
		if _, err := f.Write([]byte("r")); err != nil {
			fmt.Fprintln(os.Stderr, "child write:", err)
			return 2
		}
		time.Sleep(30 * time.Second)
		return 0
	case "exit":
		return 0
	case "futex":
		return childFutex()
	}
	fmt.Fprintln(os.Stderr, "unknown child role", role)
	return 2
}

// childFutex receives a segment as fd 3, announces readiness by storing 1 in
// word 1, then sleeps on word 0 until the parent stores 42 there and wakes it,
// and acknowledges by storing 2 in word 1. Its wait timeout (5 s) is far
// longer than the parent's bound for the acknowledgement, so a prompt one
// proves a cross-process wake-up.
func childFutex() int {
	size, err := strconv.Atoi(os.Getenv("RINGWIRE_SHM_SIZE"))
	if err != nil {
		return 2
	}
	seg, err := Open(3, size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		return 2
	}
	defer seg.Close()
	w0, w1 := word(seg.Bytes(), 0), word(seg.Bytes(), 4)
	atomic.StoreUint32(w1, 1)
	if _, err := FutexWake(w1, 1); err != nil {
		return 2
	}
	for i := 0; atomic.LoadUint32(w0) == 0; i++ {
		if i == 3 {
			return 4 // too many spurious wake-ups
		}
		switch err := FutexWait(w0, 0, 5*time.Second); {
		case errors.Is(err, ErrTimeout):
			return 3
		case err != nil:
			fmt.Fprintln(os.Stderr, "child wait:", err)
			return 2
		}
	}
	if v := atomic.LoadUint32(w0); v != 42 {
		fmt.Fprintln(os.Stderr, "child saw", v)
		return 5
	}
	atomic.StoreUint32(w1, 2)
	if _, err := FutexWake(w1, 1); err != nil {
		return 2
	}
	return 0
}

// word returns the futex word at offset off of b.
func word(b []byte, off int) *uint32 {
	return (*uint32)(unsafe.Pointer(&b[off]))
}

// child is a started child process that is always reaped.
type child struct {
	cmd  *exec.Cmd
	once sync.Once
	err  error
	done chan struct{}
}

// startChild starts the test binary in the given role with extra files as
// fds 3, 4, ... The child is killed and reaped at the end of the test if the
// test did not do it.
func startChild(t *testing.T, role string, env []string, extra ...*os.File) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+role)
	// A race-enabled binary sleeps 1 s before exiting by default.
	cmd.Env = append(cmd.Env, "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = extra
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
	})
	return c
}

// wait waits for the child to exit, at most d, and returns cmd.Wait's result.
func (c *child) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(d):
		t.Fatalf("child %d did not exit within %v", c.cmd.Process.Pid, d)
		return nil
	}
}

// socketpair returns both ends of a connected Unix stream socket pair as
// *net.UnixConn (in the netpoller).
func socketpair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := fileConn(t, fds[0]), fileConn(t, fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func fileConn(t *testing.T, fd int) *net.UnixConn {
	t.Helper()
	f := os.NewFile(uintptr(fd), "socket")
	defer f.Close() // net.FileConn dups it
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		t.Fatalf("FileConn returned %T", c)
	}
	return uc
}

// countFds counts the open descriptors of this process.
func countFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// isClosed reports whether fd is not an open descriptor.
func isClosed(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == unix.EBADF
}

// checkGoroutines fails the test if the number of goroutines does not come
// back to at most base within two seconds.
func checkGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutine leak: %d running, want <= %d\n%s", n, base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}
