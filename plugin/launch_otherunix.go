//go:build unix && !linux

package plugin

import "os/exec"

// sockCloexec is 0 where socket(2) has no SOCK_CLOEXEC flag in package
// syscall: socketPair sets the flag under syscall.ForkLock instead.
const sockCloexec = 0

// setProcAttr: there is no Pdeathsig here; a launched plugin still ends with
// its host through the liveness socket (Serve returns when it closes).
func setProcAttr(*exec.Cmd) {}
