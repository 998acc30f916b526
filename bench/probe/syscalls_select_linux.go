//go:build linux && (386 || amd64 || ppc64 || ppc64le || s390x)

package probe

import "golang.org/x/sys/unix"

func init() { syscallKinds[unix.SYS_SELECT] = slotPoll }
