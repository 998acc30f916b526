//go:build amd64 || arm64

package ring

// pause tells the CPU we are in a spin-wait loop (PAUSE on amd64, YIELD on
// arm64): it saves power and frees the sibling hyper-thread while we poll.
func pause()
