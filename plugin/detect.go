package plugin

import "os"

// Launched reports whether this process's environment asks it to serve as a
// plugin in any mode (launched by a host, connecting to a host Listener, or
// listening for a remote host). A binary that is both a host and its own
// plugin (re-executing itself) calls it first thing in main:
//
//	if plugin.Launched() {
//		plugin.Main(myPlugin)
//	}
func Launched() bool {
	for _, n := range []string{envCookie, envFD, envConnect, envListen} {
		if os.Getenv(n) != "" {
			return true
		}
	}
	return false
}
