package probe

import "golang.org/x/sys/unix"

// syscallKinds maps the numbers of the system calls this package sorts
// into kinds to the slot of their kind's counter. It holds the calls every
// Linux architecture has; files for some architectures add the others
// (syscalls_*_linux.go).
var syscallKinds = map[uint32]int{
	unix.SYS_FUTEX: slotFutex,

	unix.SYS_READ:     slotReadWrite,
	unix.SYS_WRITE:    slotReadWrite,
	unix.SYS_READV:    slotReadWrite,
	unix.SYS_WRITEV:   slotReadWrite,
	unix.SYS_PREAD64:  slotReadWrite,
	unix.SYS_PWRITE64: slotReadWrite,
	unix.SYS_PREADV:   slotReadWrite,
	unix.SYS_PWRITEV:  slotReadWrite,
	unix.SYS_PREADV2:  slotReadWrite,
	unix.SYS_PWRITEV2: slotReadWrite,

	unix.SYS_SENDMSG:  slotSendRecv,
	unix.SYS_RECVMSG:  slotSendRecv,
	unix.SYS_SENDTO:   slotSendRecv,
	unix.SYS_RECVFROM: slotSendRecv,
	unix.SYS_SENDMMSG: slotSendRecv,
	unix.SYS_RECVMMSG: slotSendRecv,

	unix.SYS_EPOLL_PWAIT:  slotEpoll,
	unix.SYS_EPOLL_PWAIT2: slotEpoll,
	unix.SYS_EPOLL_CTL:    slotEpoll,

	unix.SYS_PPOLL:    slotPoll,
	unix.SYS_PSELECT6: slotPoll,

	unix.SYS_SCHED_YIELD: slotYield,
}
