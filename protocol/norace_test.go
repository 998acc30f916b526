//go:build !race

package protocol

// raceEnabled: the race detector slows everything several times over.
const raceEnabled = false
