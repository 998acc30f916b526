//go:build !race

package ring_test

// raceEnabled reports a -race build: the race detector slows the byte-heavy
// cross-process tests several times, so they scale their message counts down.
const raceEnabled = false
