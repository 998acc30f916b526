// Package seam lets the module's own tools reach constructors that are not
// part of any public API: the cross-layer fuzzers (fuzz/) build a shared-
// memory transport.Conn over rings they write themselves. Packages fill the
// hooks in init; nothing outside the module can import this package.
package seam

import "github.com/ringwire/ringwire/internal/duplex"

// ShmConn, set by package transport, returns a transport.Conn (as any, to
// avoid an import cycle) over end, with maxMessage as its message limit.
var ShmConn func(end *duplex.End, maxMessage int) any
