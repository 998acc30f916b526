package ring

import "errors"

// Sentinel errors. Every error the package returns wraps one of them.
var (
	// ErrCorrupt reports a value read from shared memory that breaks the
	// protocol: a bad header, a position out of range, a misaligned or oversized
	// record. The ring is unusable afterwards and every call returns it again.
	ErrCorrupt = errors.New("ring: corrupt")
	// ErrPeerGone reports that the other side died or hung up.
	ErrPeerGone = errors.New("ring: peer gone")
	// ErrClosed reports use after Close.
	ErrClosed = errors.New("ring: closed")
	// ErrTimeout reports that a deadline passed before the operation could complete.
	ErrTimeout = errors.New("ring: deadline exceeded")
	// ErrTooLarge reports a record or message over the configured maximum.
	ErrTooLarge = errors.New("ring: too large")
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
