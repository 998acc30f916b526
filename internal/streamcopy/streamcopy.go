package streamcopy

// Threshold is the smallest copy made with streaming stores: below it the
// bytes are few enough that the peer's fetch of our dirty lines costs less
// than the detour through memory (docs/benchmarks.md, "Streaming stores").
const Threshold = 16 << 10

// Copy is copy(dst, src) for bytes another process reads next. Copies of at
// least Threshold bytes use streaming stores where the CPU has them, and are
// complete and ordered before any store that follows Copy.
func Copy(dst, src []byte) int {
	n := min(len(dst), len(src))
	if n < Threshold || !available {
		return copy(dst, src)
	}
	return stream(dst[:n], src[:n])
}
