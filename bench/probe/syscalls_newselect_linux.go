//go:build linux && (386 || arm || mips || mipsle || mips64 || mips64le || ppc64 || ppc64le)

package probe

import "golang.org/x/sys/unix"

func init() { syscallKinds[unix.SYS__NEWSELECT] = slotPoll }
