package rpc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ringwire/ringwire/internal/errs"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrClosed: this side closed the Peer (the same value as
	// transport.ErrClosed; it matches net.ErrClosed).
	ErrClosed = errs.Closed
	// ErrPeerGone: the connection failed or the peer hung up; calls in flight
	// fail with it (the same value as transport.ErrPeerGone).
	ErrPeerGone = errs.PeerGone
	// ErrUnknownMethod: the peer serves no such method (or object type, or
	// handle).
	ErrUnknownMethod = errors.New("protocol: unknown method")
	// ErrGoAway: the connection is shutting down gracefully; no new calls.
	ErrGoAway = errors.New("protocol: going away")
	// ErrCorrupt: the peer sent a message that breaks the protocol; the
	// connection is closed.
	ErrCorrupt = errors.New("protocol: corrupt message")
	// ErrTooLarge: a request or reply exceeds the connection's limit.
	ErrTooLarge = errs.TooLarge
	// ErrNoCallback: Callback was used outside a call that carries a
	// call-scoped callback.
	ErrNoCallback = errors.New("protocol: no callback for this call")
	// ErrStalled: the peer stopped reading: an answer could not be sent
	// within Options.SendTimeout, so the connection was closed. Calls in
	// flight fail with an error matching both ErrPeerGone and ErrStalled.
	ErrStalled = errors.New("protocol: the peer stopped reading")
	// ErrViewCall: a view handler (Mux.HandleView), or a CallView function
	// running on the connection's memory, tried to call its peer;
	// it holds the connection's reading side, so it cannot.
	ErrViewCall = errors.New("protocol: a view handler cannot call its peer")
)

// Code classifies an error that crosses the wire. The values follow gRPC's
// status codes, so they map cleanly onto gRPC and HTTP.
type Code uint32

// Codes.
const (
	CodeOK               Code = 0
	CodeCanceled         Code = 1
	CodeUnknown          Code = 2
	CodeInvalidArgument  Code = 3
	CodeDeadlineExceeded Code = 4
	CodeNotFound         Code = 5
	CodePermissionDenied Code = 7
	CodeResourceExhaust  Code = 8
	CodeUnimplemented    Code = 12
	CodeInternal         Code = 13
	CodeUnavailable      Code = 14
	// CodeGoingAway is ringwire's own: the serving side is shutting down
	// gracefully and takes no new calls (ErrGoAway). It is distinct from
	// CodeUnavailable, which a handler may return for its own reasons; in
	// gRPC terms it maps onto UNAVAILABLE.
	CodeGoingAway Code = 100
)

func (c Code) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeCanceled:
		return "canceled"
	case CodeUnknown:
		return "unknown"
	case CodeInvalidArgument:
		return "invalid argument"
	case CodeDeadlineExceeded:
		return "deadline exceeded"
	case CodeNotFound:
		return "not found"
	case CodePermissionDenied:
		return "permission denied"
	case CodeResourceExhaust:
		return "resource exhausted"
	case CodeUnimplemented:
		return "unimplemented"
	case CodeInternal:
		return "internal"
	case CodeUnavailable:
		return "unavailable"
	case CodeGoingAway:
		return "going away"
	}
	return fmt.Sprintf("code %d", uint32(c))
}

// Error is an error returned by a remote handler: a code, a message and
// optional details (application-defined bytes, e.g. an encoded struct).
// Handlers may return an *Error to choose the code; any other error travels
// as CodeUnknown with its text (or the code errors.Is finds, for context and
// protocol sentinels).
//
// errors.Is maps codes onto sentinels: CodeUnimplemented matches
// ErrUnknownMethod, CodeDeadlineExceeded matches context.DeadlineExceeded,
// CodeCanceled matches context.Canceled, CodeGoingAway matches ErrGoAway.
type Error struct {
	Code    Code
	Message string
	Details []byte
}

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "remote: " + e.Code.String()
	}
	return "remote: " + e.Code.String() + ": " + e.Message
}

// Is matches the sentinel that corresponds to the code.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnknownMethod:
		return e.Code == CodeUnimplemented
	case context.DeadlineExceeded:
		return e.Code == CodeDeadlineExceeded
	case context.Canceled:
		return e.Code == CodeCanceled
	case ErrGoAway:
		return e.Code == CodeGoingAway
	}
	if t, ok := target.(*Error); ok {
		return t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
	}
	return false
}

// toError turns a handler's error into what goes on the wire.
func toError(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		if err != error(e) {
			// Keep what the wrappers say ("loading x: ..."), with the
			// inner error's message in place of its text.
			return &Error{Code: e.Code, Message: strings.Replace(err.Error(), e.Error(), e.Message, 1), Details: e.Details}
		}
		return e
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: CodeDeadlineExceeded, Message: err.Error()}
	case errors.Is(err, context.Canceled):
		return &Error{Code: CodeCanceled, Message: err.Error()}
	case errors.Is(err, ErrUnknownMethod):
		return &Error{Code: CodeUnimplemented, Message: err.Error()}
	case errors.Is(err, ErrGoAway):
		return &Error{Code: CodeGoingAway, Message: err.Error()}
	}
	return &Error{Code: CodeUnknown, Message: err.Error()}
}
