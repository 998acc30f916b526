//go:build !race

package rpc

// raceEnabled: the race detector slows everything several times over.
const raceEnabled = false
