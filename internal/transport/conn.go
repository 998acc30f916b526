package transport

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ringwire/ringwire/internal/errs"
	"github.com/ringwire/ringwire/internal/layered"
	"github.com/ringwire/ringwire/ring"
)

// Sentinel errors. Every error the package returns wraps one of them (or one
// of negotiate's refusal errors, ring.ErrCorrupt, or the net error that ended
// a framed connection).
var (
	// ErrClosed reports use of a Conn after Close (the same value as
	// ring.ErrClosed and rpc.ErrClosed; it matches net.ErrClosed).
	ErrClosed = errs.Closed
	// ErrPeerGone reports that the other side hung up or died (the same
	// value as ring.ErrPeerGone and rpc.ErrPeerGone).
	ErrPeerGone = errs.PeerGone
	// ErrCorrupt reports bytes from the peer that break the framing: a bad
	// header, an unknown flag, a compressed payload that does not decode to
	// its declared size. The connection is closed.
	ErrCorrupt = errors.New("transport: corrupt frame")
	// ErrTooLarge reports a message over the negotiated maximum, or a
	// compressed frame that would decompress beyond it.
	ErrTooLarge = errs.TooLarge
	// ErrTimeout reports a deadline that passed (it also matches
	// os.ErrDeadlineExceeded, so net-style timeout checks work).
	ErrTimeout = errs.Timeout
	// ErrConfig reports an unusable Config, such as TCP without TLS.
	ErrConfig = errors.New("transport: invalid configuration")
	// ErrCanceled reports a SendPartsUntil abandoned because its cancel
	// channel was closed before the message could start to go out.
	ErrCanceled = errors.New("transport: send canceled")
)

// Kind is the transport a Conn runs over.
type Kind uint8

const (
	// KindShm is a pair of shared-memory rings; the Unix socket that carried
	// the handshake stays open as the liveness channel.
	KindShm Kind = iota + 1
	// KindUnix is framed messages over a Unix stream socket.
	KindUnix
	// KindTCP is framed messages over TCP, normally inside TLS.
	KindTCP
	// KindStream is framed messages over another net.Conn handed to Client
	// or Server (a pipe, a tunnel).
	KindStream
)

func (k Kind) String() string {
	switch k {
	case KindShm:
		return "shm"
	case KindUnix:
		return "unix"
	case KindTCP:
		return "tcp"
	case KindStream:
		return "stream"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Message is one message: an application-defined type and its bytes.
type Message struct {
	Type uint16
	Data []byte
}

// Conn is a message-oriented connection between two endpoints. Messages
// arrive whole and in order, as sent.
//
// Send and SendBatch are safe for concurrent use; concurrent senders are
// coalesced (one position store and at most one wake on shared memory, one
// writev on a stream). Recv and Release belong to one reading goroutine at a
// time. Close may be called from any goroutine and unblocks every pending
// call with ErrClosed.
type Conn interface {
	// Send sends one message. data may be reused when Send returns.
	Send(typ uint16, data []byte) error
	// SendBatch sends msgs in order, published together.
	SendBatch(msgs []Message) error
	// SendPartsUntil sends head followed by body as one message (copied
	// straight into the ring, or written with one writev), waiting for room
	// only until deadline (zero: no bound of its own; in the past: one
	// attempt), only while cancel (nil: never) is open, and within the write
	// deadline. When the bound ends first it returns ErrTimeout or
	// ErrCanceled having sent nothing, and the connection stays usable; a
	// message that started to go out is always finished, in the background
	// if need be. head and body may be reused when it returns.
	SendPartsUntil(deadline time.Time, cancel <-chan struct{}, typ uint16, head, body []byte) error
	// Recv returns the next message. Its Data is a view into the
	// connection's memory, valid until Release (or the next Recv, which
	// releases it). On shared memory the peer can still write that memory:
	// copy what you validate before acting on it.
	Recv() (Message, error)
	// Release hands the last received message's memory back.
	Release()
	// SetReadDeadline bounds pending and future Recv calls; the zero time
	// removes the bound. An expired deadline returns ErrTimeout and leaves
	// the connection usable.
	SetReadDeadline(t time.Time) error
	// SetWriteDeadline bounds pending and future Send calls in the same way.
	SetWriteDeadline(t time.Time) error
	// Close tears the connection down. Memory of a message still held from
	// Recv stays valid until its Release.
	Close() error
	// Info reports what was negotiated.
	Info() Info
	// Stats returns the connection's counters.
	Stats() Stats
}

// Info describes a Conn: what the handshake chose and who the peer is.
type Info struct {
	Kind        Kind
	Compression string // "none", "lz4" or "zstd"; always "none" on shm
	TLS         bool
	Version     uint16 // negotiated protocol version
	MaxMessage  int    // largest message either side may send
	RingSize    int    // data capacity of each ring (shm only)
	Peer        Peer
}

// Peer is what the other endpoint declared about itself in the handshake.
type Peer struct {
	Name      string
	Version   string
	Contract  []byte
	Constants map[string]string
	UID       int // Unix sockets only (SO_PEERCRED); -1 otherwise
	PID       int // Unix sockets only; -1 otherwise
}

// Stats are a Conn's counters since it was opened.
type Stats struct {
	MessagesSent, MessagesRecv uint64
	BytesSent, BytesRecv       uint64 // payload bytes before compression
	WireBytesSent              uint64 // bytes written to the socket (framed)
	WireBytesRecv              uint64
	Writes                     uint64 // write/writev system calls (framed)
	Wakes, Parks               uint64 // futex wakes issued and sleeps taken (shm)
	// Handoffs counts the times a waiting side gave its CPU over to a peer
	// stuck behind it on that CPU (shm; see docs/ring.md).
	Handoffs uint64
}

var errDeadline = deadlineError{}

// deadlineError matches os.ErrDeadlineExceeded via Is and is a net.Error
// timeout, so code written for net.Conn recognises it.
type deadlineError struct{}

func (deadlineError) Error() string   { return "i/o timeout" }
func (deadlineError) Timeout() bool   { return true }
func (deadlineError) Temporary() bool { return true }
func (deadlineError) Is(target error) bool {
	return target == os.ErrDeadlineExceeded
}

// convertRingErr maps the ring package's sentinels onto this package's.
func convertRingErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ring.ErrCorrupt):
		return layered.Wrap(ErrCorrupt, ring.ErrCorrupt, err)
	}
	// ring's ErrTimeout, ErrPeerGone, ErrClosed and ErrTooLarge are this
	// package's: the error needs no mapping.
	return err
}
