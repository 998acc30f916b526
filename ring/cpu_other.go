//go:build !(linux && amd64)

package ring

// cpuNow returns 1 + the number of the CPU this thread runs on, or 0 if it
// cannot tell; here it cannot, and the waiters spin as if the peer ran
// elsewhere.
func cpuNow() uint32 { return 0 }

// osYield is never called where cpuNow cannot tell the CPU.
func osYield() {}

// moveOff is never called where cpuNow cannot tell the CPU.
func moveOff() bool { return false }
