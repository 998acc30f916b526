//go:build linux && (386 || arm || mips || mipsle)

package probe

import "golang.org/x/sys/unix"

// 32-bit architectures have calls with 64-bit times beside the old ones.
func init() {
	syscallKinds[unix.SYS_FUTEX_TIME64] = slotFutex
	syscallKinds[unix.SYS_RECVMMSG_TIME64] = slotSendRecv
	syscallKinds[unix.SYS_PPOLL_TIME64] = slotPoll
	syscallKinds[unix.SYS_PSELECT6_TIME64] = slotPoll
}
