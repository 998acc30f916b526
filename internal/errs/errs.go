// Package errs declares, once, the conditions that every layer of ringwire
// reports: ring, transport, protocol and plugin export these very values
// under their own names (ring.ErrPeerGone == transport.ErrPeerGone ==
// rpc.ErrPeerGone), so an error crosses the layers without being
// remapped or renamed, and reads once.
package errs

import (
	"errors"
	"net"
	"os"
)

var (
	// Closed: this side closed (or use after Close). It matches
	// net.ErrClosed.
	Closed error = &sentinel{msg: "ringwire: closed", also: net.ErrClosed}
	// PeerGone: the other side hung up, died or broke the connection.
	PeerGone = errors.New("ringwire: peer gone")
	// Timeout: a deadline passed. It matches os.ErrDeadlineExceeded and is
	// a net.Error whose Timeout reports true.
	Timeout error = &timeout{}
	// TooLarge: a message over the configured or negotiated maximum.
	TooLarge = errors.New("ringwire: message too large")
)

type sentinel struct {
	msg  string
	also error
}

func (s *sentinel) Error() string        { return s.msg }
func (s *sentinel) Is(target error) bool { return target == s.also }

type timeout struct{}

func (*timeout) Error() string        { return "ringwire: deadline exceeded" }
func (*timeout) Timeout() bool        { return true }
func (*timeout) Temporary() bool      { return true }
func (*timeout) Is(target error) bool { return target == os.ErrDeadlineExceeded }
