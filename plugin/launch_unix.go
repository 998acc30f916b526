//go:build unix

package plugin

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// socketPair returns the two ends of a connected Unix stream socket pair:
// the host's as a connection, the child's as a file for exec.Cmd.ExtraFiles.
// Both are close-on-exec (ExtraFiles clears the flag in the child only).
func socketPair() (*net.UnixConn, *os.File, error) {
	syscall.ForkLock.RLock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|sockCloexec, 0)
	if err == nil && sockCloexec == 0 {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, nil, fmt.Errorf("plugin: socketpair: %w", err)
	}
	hf := os.NewFile(uintptr(fds[0]), "ringwire-plugin")
	child := os.NewFile(uintptr(fds[1]), "ringwire-host")
	c, err := net.FileConn(hf) // a duplicate; hf is closed below
	hf.Close()
	if err != nil {
		child.Close()
		return nil, nil, fmt.Errorf("plugin: socketpair: %w", err)
	}
	return c.(*net.UnixConn), child, nil
}

// terminate asks the process to stop (SIGTERM).
func (p *process) terminate() error {
	return p.cmd.Process.Signal(syscall.SIGTERM)
}
