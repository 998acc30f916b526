package transport

import "syscall"

// setUID drops the child's privileges (all threads) before it dials.
func setUID(uid int) error {
	if err := syscall.Setgid(uid); err != nil {
		return err
	}
	return syscall.Setuid(uid)
}
