package plugin

import (
	"fmt"
	"time"
)

// state is where a Client is in its life; Status.State is its String.
type state int

// The states, in the order of their life; Status.State documents each.
const (
	stateIdle state = iota
	stateStarting
	stateReady
	stateUnhealthy
	stateRestarting
	stateStopping
	stateStopped
	stateFailed
)

func (s state) String() string {
	switch s {
	case stateIdle:
		return "idle"
	case stateStarting:
		return "starting"
	case stateReady:
		return "ready"
	case stateUnhealthy:
		return "unhealthy"
	case stateRestarting:
		return "restarting"
	case stateStopping:
		return "stopping"
	case stateStopped:
		return "stopped"
	case stateFailed:
		return "failed"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Status is a snapshot of a Client.
type Status struct {
	// State is where the Client is in its life:
	//
	//	"idle"        not started yet
	//	"starting"    the plugin is being launched (or connected to)
	//	"ready"       the plugin runs and answers its health pings
	//	"unhealthy"   the last health ping failed; calls still go through
	//	"restarting"  the plugin died or failed its health checks; a new
	//	              instance is on its way (after the backoff delay)
	//	"stopping"    Stop is draining and ending the plugin
	//	"stopped"     Stop ended the plugin
	//	"failed"      the plugin could not be started, or died more often in a
	//	              row than MaxRestarts allows (LastErr says why)
	State string
	// Started is when the current (or last) instance started.
	Started time.Time
	// Restarts counts the restart attempts since the plugin was started.
	Restarts int
	// PID is the current instance's process id (-1: none, or not launched).
	PID int
	// LastErr is why the last instance ended or the last start failed.
	LastErr error
}
