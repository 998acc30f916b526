//go:build linux && !arm64 && !loong64 && !riscv64

package probe

import "golang.org/x/sys/unix"

// The architectures that predate the generic syscall table keep
// epoll_wait and poll.
func init() {
	syscallKinds[unix.SYS_EPOLL_WAIT] = slotEpoll
	syscallKinds[unix.SYS_POLL] = slotPoll
}
