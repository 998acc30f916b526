//go:build linux

package plugin

import (
	"os/exec"
	"syscall"
)

const sockCloexec = syscall.SOCK_CLOEXEC

// setProcAttr makes the kernel kill the plugin when its host dies.
//
// Pdeathsig fires when the thread that forked the child exits; the Go
// runtime does not end threads except those a goroutine locked and did not
// unlock, so do not Launch from a goroutine that calls
// runtime.LockOSThread and then exits.
func setProcAttr(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
