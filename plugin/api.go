package plugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/internal/rpc"
)

// The service definition and what handlers use, so that a plugin, its host
// and their shared api package import this package alone. The RPC engine
// behind them is internal; docs/protocol.md specifies its wire format.
type (
	// Mux holds the methods a plugin (or a host, for callbacks) serves.
	Mux = rpc.Mux
	// Method is a typed method: its name and the codecs of its request and
	// reply.
	Method[Req, Resp any] = rpc.Method[Req, Resp]
	// Codec encodes and decodes the values of one type.
	Codec[T any] = rpc.Codec[T]
	// Service is a service definition: name, version, typed methods.
	Service = rpc.Service
	// Caller is what typed methods call through: a *Client, or CallerOf
	// inside a handler.
	Caller = rpc.Caller
	// Error is an error with a code that crosses the wire.
	Error = rpc.Error
	// Code classifies an Error (gRPC's status codes).
	Code = rpc.Code
	// Reply is the buffer a Mux.HandleReply handler writes its reply into:
	// owned and reused by the connection, so serving allocates nothing.
	Reply = rpc.Reply
	// Object is a remote object a Mux.HandleType constructor makes for the
	// other side's Client.New; it serves calls until destroyed (and is
	// closed then, if it is an io.Closer).
	Object = rpc.Object
	// Handle is the caller's side of a remote Object.
	Handle = rpc.Handle
	// ClientInterceptor wraps the calls a side makes (Config.Intercept,
	// Plugin.Intercept): metrics, tracing, auth.
	ClientInterceptor = rpc.ClientInterceptor
	// ServerInterceptor wraps the calls a Mux serves (Mux.Intercept).
	ServerInterceptor = rpc.ServerInterceptor
)

// Error codes a handler returns with Errorf. A caller also meets
// CodeCanceled and CodeDeadlineExceeded (its context ended first, on the
// other side) and CodeResourceExhaust (the other side's limits refused the
// call).
const (
	CodeCanceled         = rpc.CodeCanceled
	CodeDeadlineExceeded = rpc.CodeDeadlineExceeded
	CodeInvalidArgument  = rpc.CodeInvalidArgument
	CodeNotFound         = rpc.CodeNotFound
	CodePermissionDenied = rpc.CodePermissionDenied
	CodeResourceExhaust  = rpc.CodeResourceExhaust
	CodeUnavailable      = rpc.CodeUnavailable
	CodeInternal         = rpc.CodeInternal
)

// Sentinels of the layers below that a plugin's user meets (the same
// values, so either name matches).
var (
	// ErrPeerGone: the connection failed or the other side died; calls in
	// flight fail with it.
	ErrPeerGone = rpc.ErrPeerGone
	// ErrUnknownMethod: the other side serves no such method.
	ErrUnknownMethod = rpc.ErrUnknownMethod
	// ErrDecode: a typed method's request or reply did not decode.
	ErrDecode = rpc.ErrDecode
	// ErrTooLarge: a request or reply exceeds the connection's limit.
	ErrTooLarge = rpc.ErrTooLarge
	// ErrUnauthorized: the plugin's (or the host's) token was missing or
	// wrong. It is permanent: a Client does not retry it.
	ErrUnauthorized = handshake.ErrUnauthorized
	// ErrVersion: host and plugin speak no common protocol version.
	ErrVersion = handshake.ErrVersion
)

// NewMux returns an empty Mux.
func NewMux() *Mux { return rpc.NewMux() }

// NewMethod declares a typed method.
func NewMethod[Req, Resp any](name string, req Codec[Req], resp Codec[Resp]) *Method[Req, Resp] {
	return rpc.NewMethod(name, req, resp)
}

// NewService declares a service.
func NewService(name, version string, methods ...rpc.Declared) *Service {
	return rpc.NewService(name, version, methods...)
}

// Raw is the identity codec.
func Raw() Codec[[]byte] { return rpc.Raw() }

// JSON is the encoding/json codec.
func JSON[T any]() Codec[T] { return rpc.JSON[T]() }

// FlatBuffers is the codec of a flatc-generated table type, used by value:
// sent as its finished buffer, decoded in place.
func FlatBuffers[T any, PT rpc.FlatBuffersTable[T]]() Codec[T] {
	return rpc.FlatBuffers[T, PT]()
}

// Callback, from inside a handler, calls the handler the caller passed with
// WithCallback for this call (a call back into the caller, e.g. one per
// item of a scan). It fails with an error matching ErrUnknownMethod when the
// caller passed none, and with ErrConfig outside a handler.
func Callback(ctx context.Context, req []byte) ([]byte, error) {
	out, err := rpc.Callback(ctx, req)
	if errors.Is(err, rpc.ErrNoCallback) {
		return nil, fmt.Errorf("%w: Callback outside a handler's context", ErrConfig)
	}
	return out, err
}

// WithCallback returns a context whose calls carry h: the handler serving
// such a call may call h back with Callback, any number of times, until it
// returns.
func WithCallback(ctx context.Context, h func(ctx context.Context, req []byte) ([]byte, error)) context.Context {
	return rpc.WithCallback(ctx, h)
}

// WithTraceparent returns a context whose calls carry tp, a W3C
// traceparent, to the handler that serves them (Traceparent there): what a
// tracing ClientInterceptor sets.
func WithTraceparent(ctx context.Context, tp string) context.Context {
	return rpc.WithTraceparent(ctx, tp)
}

// Traceparent returns, inside a handler, the traceparent its caller sent
// (WithTraceparent), or "".
func Traceparent(ctx context.Context) string { return rpc.Traceparent(ctx) }

// CallerOf returns, inside a handler, the other side of the connection the
// call came on, to call the methods it serves (a plugin calling its host).
func CallerOf(ctx context.Context) (Caller, bool) {
	p, ok := rpc.PeerFromContext(ctx)
	if !ok {
		return nil, false
	}
	return p, true
}

// Errorf returns an *Error with code.
func Errorf(code Code, format string, args ...any) *Error {
	return rpc.Errorf(code, format, args...)
}

var _ Caller = (*Client)(nil)
