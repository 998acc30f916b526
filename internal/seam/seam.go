// Package seam lets the module's own tools and tests reach what no public
// API offers: the cross-layer fuzzers (fuzz/) build a shared-memory
// transport.Conn over rings they write themselves, and a hostile test plugin
// scribbles on its rings. Packages fill the hooks in init (tests set
// PluginConn); nothing outside the module can import this package.
package seam

import "github.com/ringwire/ringwire/internal/duplex"

// ShmConn, set by package transport, returns a transport.Conn (as any, to
// avoid an import cycle) over end, with maxMessage as its message limit.
var ShmConn func(end *duplex.End, maxMessage int) any

// ShmEnd, set by package transport, returns the rings under a shared-memory
// transport.Conn, or nil for another Conn.
var ShmEnd func(conn any) *duplex.End

// PluginConn, if set (by a test plugin), is called by package plugin with
// each connection a plugin serves, once its handshake is done: a hostile
// test plugin reaches its rings this way.
var PluginConn func(conn any)
