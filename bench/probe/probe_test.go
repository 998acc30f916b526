package probe

import "testing"

func TestCountsSub(t *testing.T) {
	after := Counts{Syscalls: 10, Futex: 7, FutexWake: 3, CtxSwitches: 5}
	before := Counts{Syscalls: 4, Futex: 2, FutexWake: 1, CtxSwitches: 5}
	want := Counts{Syscalls: 6, Futex: 5, FutexWake: 2, CtxSwitches: 0}
	if got := after.Sub(before); got != want {
		t.Errorf("Sub = %+v, want %+v", got, want)
	}
}
