package plugin

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// outputGrace is how long the output of a process that exited may take to
// drain; a grandchild that inherited the pipes could keep them open forever,
// so after it the pipes are closed.
const outputGrace = 2 * time.Second

// reapTimeout bounds the wait for a killed process to be reaped (a process
// stuck in an uninterruptible sleep cannot die at once).
const reapTimeout = 5 * time.Second

// process is a started plugin process whose output goes to a logger and
// whose exit is awaited by a goroutine, so it is always reaped.
type process struct {
	cmd    *exec.Cmd
	pid    int
	exited chan struct{} // closed once reaped
	err    error         // Wait's result; read after exited
	output sync.WaitGroup

	tailMu sync.Mutex
	tail   []string // the last lines of output (see lastOutput)
}

// tailLines is how many of a process's last output lines its errors quote.
const tailLines = 3

// outputSettle bounds how long lastOutput waits for an exited process's
// output to be read (a grandchild may hold the pipes open).
const outputSettle = 500 * time.Millisecond

// note keeps line among the last lines of output.
func (p *process) note(line string) {
	if len(line) > 200 {
		line = line[:200] + "..."
	}
	p.tailMu.Lock()
	if len(p.tail) == tailLines {
		p.tail = append(p.tail[:0], p.tail[1:]...)
	}
	p.tail = append(p.tail, line)
	p.tailMu.Unlock()
}

// lastOutput quotes the last lines the process printed ("" if none), for
// errors about a process that did not start. It first lets the output of a
// process that has exited drain, for up to outputSettle.
func (p *process) lastOutput() string {
	if p.hasExited() {
		drained := make(chan struct{})
		go func() {
			p.output.Wait()
			close(drained)
		}()
		select {
		case <-drained:
		case <-time.After(outputSettle):
		}
	}
	p.tailMu.Lock()
	defer p.tailMu.Unlock()
	if len(p.tail) == 0 {
		return ""
	}
	q := make([]string, len(p.tail))
	for i, l := range p.tail {
		q[i] = strconv.Quote(l)
	}
	return "; its last output: " + strings.Join(q, ", ")
}

// startProcess starts cmd with its stdout and stderr logged line by line.
// extra are descriptors of the child to close in this process once it runs.
func startProcess(cmd *exec.Cmd, log *slog.Logger, extra ...*os.File) (*process, error) {
	var parent, child []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	for range 2 {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(parent)
			closeAll(child)
			closeAll(extra)
			return nil, fmt.Errorf("plugin: output pipe: %w", err)
		}
		parent, child = append(parent, r), append(child, w)
	}
	// *os.File outputs go to the child as they are: no copying goroutine
	// that Wait would have to wait for.
	cmd.Stdout, cmd.Stderr = child[0], child[1]
	err := cmd.Start()
	closeAll(child)
	closeAll(extra)
	if err != nil {
		closeAll(parent)
		return nil, fmt.Errorf("plugin: starting %s: %w", cmd.Path, err)
	}
	p := &process{cmd: cmd, pid: cmd.Process.Pid, exited: make(chan struct{})}
	for i, stream := range []string{"stdout", "stderr"} {
		p.output.Add(1)
		go func() {
			defer p.output.Done()
			logLines(parent[i], log, stream, p.note)
		}()
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
		drained := make(chan struct{})
		go func() {
			p.output.Wait()
			close(drained)
		}()
		select {
		case <-drained:
		case <-time.After(outputGrace):
		}
		closeAll(parent)
	}()
	return p, nil
}

// hasExited reports whether the process has been reaped.
func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// waitExit waits up to d for the process to be reaped.
func (p *process) waitExit(d time.Duration) bool {
	if p.hasExited() {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exited:
		return true
	case <-t.C:
		return false
	}
}

// kill sends SIGKILL (unless the process is gone already) and waits for it
// to be reaped, up to reapTimeout.
func (p *process) kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("plugin: killing process %d: %w", p.pid, err)
	}
	if !p.waitExit(reapTimeout) {
		return fmt.Errorf("plugin: process %d still not reaped %v after SIGKILL", p.pid, reapTimeout)
	}
	return nil
}

// exitErr describes how the process ended (after exited is closed).
func (p *process) exitErr() error {
	return &exitedError{pid: p.pid, status: exitStatus(p.err)}
}

func exitStatus(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
