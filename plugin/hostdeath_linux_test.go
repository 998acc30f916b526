//go:build linux

package plugin_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A plugin dies with its host: the test starts a host process that launches
// a plugin, kills the host with SIGKILL and watches the plugin disappear.
func TestPluginDiesWithHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	host := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	host.Env = childEnv("host")
	host.Stderr = os.Stderr
	out, err := host.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := make(chan error, 1)
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(15 * time.Second):
		host.Process.Kill()
		host.Wait()
		t.Fatal("the host printed no plugin pid")
	}
	pid, err := strconv.Atoi(strings.TrimPrefix(line, "PID "))
	if err != nil || pid <= 0 {
		host.Process.Kill()
		host.Wait()
		t.Fatalf("host said %q", line)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) }) // should be gone already
	if processGone(pid) {
		t.Fatalf("plugin %d not running before the host's death", pid)
	}

	killed := time.Now()
	if err := host.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	go func() { reaped <- host.Wait() }()
	gone := waitGone(pid, time.Second)
	took := time.Since(killed)
	select {
	case <-reaped:
	case <-time.After(10 * time.Second):
		t.Error("host not reaped")
	}
	if !gone {
		t.Fatalf("plugin %d still alive %v after its host was killed", pid, took)
	}
	t.Logf("plugin gone %v after the host's SIGKILL", took)
}
