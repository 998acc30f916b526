//go:build !unix

package plugin

import (
	"net"
	"os"
	"os/exec"
)

// socketPair: inheriting a socket descriptor is not supported here; Launch
// fails with ErrUnsupported (external and remote plugins over TCP work).
func socketPair() (*net.UnixConn, *os.File, error) {
	return nil, nil, ErrUnsupported
}

func setProcAttr(*exec.Cmd) {}

// terminate has no SIGTERM to send here: it kills.
func (p *process) terminate() error { return p.cmd.Process.Kill() }
