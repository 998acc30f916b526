package plugin

import (
	"github.com/ringwire/ringwire/negotiate"
	"github.com/ringwire/ringwire/protocol"
)

// The service definition and what handlers use, so that a plugin, its host
// and their shared api package import this package alone. Each is the
// protocol package's (see there).
type (
	// Mux holds the methods a plugin (or a host, for callbacks) serves.
	Mux = protocol.Mux
	// Method is a typed method: its name and the codecs of its request and
	// reply.
	Method[Req, Resp any] = protocol.Method[Req, Resp]
	// Codec encodes and decodes the values of one type.
	Codec[T any] = protocol.Codec[T]
	// Service is a service definition: name, version, typed methods.
	Service = protocol.Service
	// MethodInfo names a method and its signature (Info.Methods).
	MethodInfo = protocol.MethodInfo
	// Caller is what typed methods call through: *Client, *Session.
	Caller = protocol.Caller
	// Error is an error with a code that crosses the wire.
	Error = protocol.Error
	// Code classifies an Error (gRPC's status codes).
	Code = protocol.Code
)

// Error codes a handler returns with Errorf (the rest are protocol's).
const (
	CodeInvalidArgument  = protocol.CodeInvalidArgument
	CodeNotFound         = protocol.CodeNotFound
	CodePermissionDenied = protocol.CodePermissionDenied
	CodeUnavailable      = protocol.CodeUnavailable
	CodeInternal         = protocol.CodeInternal
)

// Sentinels of the layers below that a plugin's user meets (the same
// values, so either name matches).
var (
	// ErrPeerGone: the connection failed or the other side died; calls in
	// flight fail with it.
	ErrPeerGone = protocol.ErrPeerGone
	// ErrUnknownMethod: the other side serves no such method.
	ErrUnknownMethod = protocol.ErrUnknownMethod
	// ErrDecode: a typed method's request or reply did not decode.
	ErrDecode = protocol.ErrDecode
	// ErrTooLarge: a request or reply exceeds the connection's limit.
	ErrTooLarge = protocol.ErrTooLarge
	// ErrUnauthorized: the plugin's (or the host's) token was missing or
	// wrong. It is permanent: a Session does not retry it.
	ErrUnauthorized = negotiate.ErrUnauthorized
	// ErrVersion: host and plugin speak no common protocol version.
	ErrVersion = negotiate.ErrVersion
)

// NewMux returns an empty Mux.
func NewMux() *Mux { return protocol.NewMux() }

// NewMethod declares a typed method (protocol.NewMethod).
func NewMethod[Req, Resp any](name string, req Codec[Req], resp Codec[Resp]) *Method[Req, Resp] {
	return protocol.NewMethod(name, req, resp)
}

// NewService declares a service (protocol.NewService).
func NewService(name, version string, methods ...protocol.Declared) *Service {
	return protocol.NewService(name, version, methods...)
}

// Raw is the identity codec (protocol.Raw).
func Raw() Codec[[]byte] { return protocol.Raw() }

// JSON is the encoding/json codec (protocol.JSON).
func JSON[T any]() Codec[T] { return protocol.JSON[T]() }

// FlatBuffers is the codec of a flatc-generated table type
// (protocol.FlatBuffers).
func FlatBuffers[T any, PT protocol.FlatBuffersTable[T]]() Codec[T] {
	return protocol.FlatBuffers[T, PT]()
}

// FlatBuffersRoot returns the root table of a finished buffer
// (protocol.FlatBuffersRoot).
func FlatBuffersRoot[T any, PT protocol.FlatBuffersTable[T]](buf []byte) T {
	return protocol.FlatBuffersRoot[T, PT](buf)
}

// Errorf returns an *Error with code (protocol.Errorf).
func Errorf(code Code, format string, args ...any) *Error {
	return protocol.Errorf(code, format, args...)
}

var (
	_ Caller = (*Client)(nil)
	_ Caller = (*Session)(nil)
)
