//go:build !amd64 || race

package ring

import "sync/atomic"

// publish stores v at addr with a full fence (see fast_amd64.go).
func publish(addr *uint64, v uint64) { atomic.StoreUint64(addr, v) }

// Add adds d to the counter (see fast_amd64.go).
func (c *ownedCounter) Add(d uint64) { atomic.AddUint64(&c.v, d) }

// touchNext: see fast_amd64.go. Not measured on other architectures.
const touchNext = false
