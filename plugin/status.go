package plugin

import (
	"fmt"
	"time"
)

// State is where a Session is in its life.
type State int

const (
	// StateIdle: not started yet.
	StateIdle State = iota
	// StateStarting: Start is launching (or connecting to) the plugin.
	StateStarting
	// StateReady: the plugin runs and answers its health pings.
	StateReady
	// StateUnhealthy: the last health ping failed; calls still go through.
	StateUnhealthy
	// StateRestarting: the plugin died or failed its health checks; a new
	// instance is on its way (after the backoff delay).
	StateRestarting
	// StateStopping: Stop is draining and ending the plugin.
	StateStopping
	// StateStopped: Stop ended the plugin.
	StateStopped
	// StateFailed: the plugin could not be started, or died more often in a
	// row than MaxRestarts allows; Status().LastErr says why. Start may be
	// called again.
	StateFailed
)

func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateStarting:
		return "starting"
	case StateReady:
		return "ready"
	case StateUnhealthy:
		return "unhealthy"
	case StateRestarting:
		return "restarting"
	case StateStopping:
		return "stopping"
	case StateStopped:
		return "stopped"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Status is a snapshot of a Session.
type Status struct {
	State State
	// Started is when the current (or last) instance started.
	Started time.Time
	// Restarts counts the restart attempts since Start.
	Restarts int
	// PID is the current instance's process id (-1: none, or not launched).
	PID int
	// LastErr is why the last instance ended or the last start failed.
	LastErr error
}
