//go:build !linux

package probe

import (
	"fmt"
	"runtime"
)

// Probe counts for a set of processes; only Linux has one.
type Probe struct{}

// Start fails with ErrUnavailable off Linux.
func Start(pids ...int) (*Probe, error) {
	return nil, fmt.Errorf("%w: %s has no eBPF tracepoints", ErrUnavailable, runtime.GOOS)
}

// Missing returns ErrUnavailable off Linux.
func (p *Probe) Missing() error { return ErrUnavailable }

// Add fails with ErrUnavailable off Linux.
func (p *Probe) Add(pid int) error { return ErrUnavailable }

// Remove fails with ErrUnavailable off Linux.
func (p *Probe) Remove(pid int) error { return ErrUnavailable }

// Snapshot returns zero counts off Linux.
func (p *Probe) Snapshot() Counts { return Counts{} }

// Close does nothing off Linux.
func (p *Probe) Close() error { return nil }
