package ring

import (
	"errors"

	"github.com/ringwire/ringwire/internal/errs"
)

// Sentinel errors. Every error the package returns wraps one of them.
var (
	// ErrCorrupt reports a value read from shared memory that breaks the
	// protocol: a bad header, a position out of range, a misaligned or oversized
	// record. The ring is unusable afterwards and every call returns it again.
	ErrCorrupt = errors.New("ring: corrupt")
	// ErrPeerGone reports that the other side died or hung up (the same
	// value as transport.ErrPeerGone and rpc.ErrPeerGone).
	ErrPeerGone = errs.PeerGone
	// ErrClosed reports use after Close; it matches net.ErrClosed.
	ErrClosed = errs.Closed
	// ErrTimeout reports that a deadline passed before the operation could
	// complete; it matches os.ErrDeadlineExceeded.
	ErrTimeout = errs.Timeout
	// ErrTooLarge reports a record or message over the configured maximum.
	ErrTooLarge = errs.TooLarge
	// ErrCanceled reports a wait for room abandoned because its cancel channel
	// was closed (ReserveUntil, StagePartsUntil).
	ErrCanceled = errors.New("ring: canceled")
	// ErrFull is returned by TryReserve when the ring has no room now.
	ErrFull = errors.New("ring: full")
	// ErrConfig reports invalid capacity, record size or memory.
	ErrConfig = errors.New("ring: invalid configuration")
	// ErrState reports an API misuse such as Commit without Reserve.
	ErrState = errors.New("ring: call out of order")
)
