package rpc

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Caller is what typed methods call through: *Peer, and the plugin
// package's Client and Session.
type Caller interface {
	Call(ctx context.Context, method string, req []byte) ([]byte, error)
	CallInto(ctx context.Context, method string, req, dst []byte) ([]byte, error)
	CallView(ctx context.Context, method string, req []byte, f func(reply []byte) error) error
}

var _ Caller = (*Peer)(nil)

// Method is a typed method: its name and the codecs of its request and its
// reply. Declare each method once, in a package both sides import, and
// gather them in a Service: the plugin registers handlers with Handle, the
// host calls with Call, CallInto or CallView, and both take their contract
// from the Service.
//
//	var Upper = rpc.NewMethod("upper", rpc.Raw(), rpc.Raw())
//	var Greet = rpc.NewMethod("greet", rpc.JSON[Greeting](), rpc.JSON[Reply]())
type Method[Req, Resp any] struct {
	name     string
	req      Codec[Req]
	resp     Codec[Resp]
	reqBytes func(Req) ([]byte, bool)  // nil unless the request codec is direct
	outBytes func(Resp) ([]byte, bool) // nil unless the reply codec is direct
}

// NewMethod declares a typed method. It panics on an invalid name (as
// Mux.Handle does) or a nil codec.
func NewMethod[Req, Resp any](name string, req Codec[Req], resp Codec[Resp]) *Method[Req, Resp] {
	if name == "" || len(name) > maxMethod || strings.HasPrefix(name, "$") {
		panic(fmt.Sprintf("protocol: invalid method name %q (1-%d bytes, not starting with '$')", name, maxMethod))
	}
	if req == nil || resp == nil {
		panic("protocol: NewMethod " + name + ": nil codec")
	}
	m := &Method[Req, Resp]{name: name, req: req, resp: resp}
	if d, ok := req.(direct[Req]); ok {
		m.reqBytes = d.bytesOf
	}
	if d, ok := resp.(direct[Resp]); ok {
		m.outBytes = d.bytesOf
	}
	return m
}

// Name is the method's name on the wire.
func (m *Method[Req, Resp]) Name() string { return m.name }

// Signature names the request and reply codecs ("raw -> json:api.Reply"):
// two sides agree on a method only if its signatures are equal.
func (m *Method[Req, Resp]) signature() string {
	return m.req.Name() + " -> " + m.resp.Name()
}

// encode returns the request's bytes: the value itself when the codec is
// direct, else its encoding in a pooled buffer (buf, to be put back).
func (m *Method[Req, Resp]) encode(req Req) (b []byte, buf *[]byte, err error) {
	if m.reqBytes != nil {
		if b, ok := m.reqBytes(req); ok {
			return b, nil, nil
		}
	}
	buf = getBuf()
	*buf, err = m.req.Append((*buf)[:0], req)
	if err != nil {
		putBuf(buf)
		return nil, nil, fmt.Errorf("protocol: %s: encoding the request: %w", m.name, err)
	}
	return *buf, buf, nil
}

// Call calls the method on c and decodes the reply, which is the caller's
// to keep.
func (m *Method[Req, Resp]) Call(ctx context.Context, c Caller, req Req) (Resp, error) {
	var zero Resp
	b, buf, err := m.encode(req)
	if err != nil {
		return zero, err
	}
	out, err := c.Call(ctx, m.name, b)
	if buf != nil {
		putBuf(buf)
	}
	if err != nil {
		return zero, err
	}
	return m.decodeReply(out)
}

// CallInto calls the method on c with the reply read into dst (see
// Peer.CallInto) and decodes it. It returns the reply's buffer for the next
// call: with the Raw and FlatBuffers codecs the value refers to that buffer
// and is valid until it is reused, and the call allocates nothing.
func (m *Method[Req, Resp]) CallInto(ctx context.Context, c Caller, req Req, dst []byte) (Resp, []byte, error) {
	var zero Resp
	b, buf, err := m.encode(req)
	if err != nil {
		return zero, dst, err
	}
	out, err := c.CallInto(ctx, m.name, b, dst)
	if buf != nil {
		putBuf(buf)
	}
	if err != nil {
		return zero, out, err
	}
	v, err := m.decodeReply(out)
	return v, out, err
}

// CallView calls the method on c and hands the decoded reply to f, which
// runs while the reply is still in the connection's memory (see
// Peer.CallView: f must be short and must not call c). With the Raw and
// FlatBuffers codecs the value refers to that memory and is valid only
// inside f.
func (m *Method[Req, Resp]) CallView(ctx context.Context, c Caller, req Req, f func(Resp) error) error {
	b, buf, err := m.encode(req)
	if err != nil {
		return err
	}
	err = c.CallView(ctx, m.name, b, func(out []byte) error {
		v, err := m.decodeReply(out)
		if err != nil {
			return err
		}
		return f(v)
	})
	if buf != nil {
		putBuf(buf)
	}
	return err
}

func (m *Method[Req, Resp]) decodeReply(out []byte) (Resp, error) {
	v, err := m.resp.Decode(out)
	if err != nil {
		return v, fmt.Errorf("%s: the reply: %w", m.name, err)
	}
	return v, nil
}

// Handle registers h as the method's handler on mux. The request value is
// valid until h returns (with Raw and FlatBuffers it refers to the request's
// buffer); so is a reply that refers to it. A request that does not decode
// is answered with a CodeInvalidArgument error without calling h.
func (m *Method[Req, Resp]) Handle(mux *Mux, h func(ctx context.Context, req Req) (Resp, error)) {
	e := &method{name: m.name, sig: m.signature()}
	if m.outBytes != nil {
		// The reply is a slice already: the Peer sends it as it is.
		e.h = func(ctx context.Context, req []byte) ([]byte, error) {
			v, err := m.req.Decode(req)
			if err != nil {
				return nil, &Error{Code: CodeInvalidArgument, Message: m.name + ": the request: " + err.Error()}
			}
			out, err := h(ctx, v)
			if err != nil {
				return nil, err
			}
			if b, ok := m.outBytes(out); ok {
				return b, nil
			}
			return m.resp.Append(nil, out)
		}
	} else {
		// Encode into the Peer's reply buffer: no allocation by the
		// library.
		e.rh = func(ctx context.Context, req []byte, w *Reply) error {
			v, err := m.req.Decode(req)
			if err != nil {
				return &Error{Code: CodeInvalidArgument, Message: m.name + ": the request: " + err.Error()}
			}
			out, err := h(ctx, v)
			if err != nil {
				return err
			}
			w.b, err = m.resp.Append(w.b, out)
			if err != nil {
				return fmt.Errorf("%s: encoding the reply: %w", m.name, err)
			}
			return nil
		}
	}
	mux.add(m.name, e)
}

// MethodInfo describes one method of a Service or a Mux.
type MethodInfo struct {
	Name string
	// Signature is the method's codecs ("raw -> json:api.Reply"), empty
	// for a method registered untyped (Mux.Handle and its siblings).
	Signature string
}

// String is "name(signature)", or the name alone when untyped.
func (mi MethodInfo) String() string {
	if mi.Signature == "" {
		return mi.Name
	}
	return mi.Name + "(" + mi.Signature + ")"
}

// Declared is a method as a Service lists it: every *Method is one.
type Declared interface {
	Name() string
	signature() string
}

// Service is one service definition: its name, its version and its typed
// methods. Both sides build it from the same package; it yields the
// contract and checks that a Mux serves every method.
type Service struct {
	name, version string
	methods       []MethodInfo // sorted by name
}

// NewService declares a service. It panics on a duplicate method name.
func NewService(name, version string, methods ...Declared) *Service {
	s := &Service{name: name, version: version}
	for _, m := range methods {
		s.methods = append(s.methods, MethodInfo{Name: m.Name(), Signature: m.signature()})
	}
	slices.SortFunc(s.methods, func(a, b MethodInfo) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(s.methods); i++ {
		if s.methods[i].Name == s.methods[i-1].Name {
			panic(fmt.Sprintf("protocol: service %s declares method %q twice", name, s.methods[i].Name))
		}
	}
	return s
}

// Name and Version are the service's.
func (s *Service) Name() string    { return s.name }
func (s *Service) Version() string { return s.version }

// Methods lists the service's methods, sorted by name.
func MethodsOf(s *Service) []MethodInfo { return slices.Clone(s.methods) }

// CheckServed reports the methods of s that mux does not serve, or serves
// with another signature: a plugin calls it at start-up so that a forgotten
// handler is found then, not by the first call.
func CheckServed(s *Service, mux *Mux) error {
	have := map[string]string{}
	for _, mi := range InfosOf(mux) {
		have[mi.Name] = mi.Signature
	}
	var missing, differ []string
	for _, mi := range s.methods {
		sig, ok := have[mi.Name]
		switch {
		case !ok:
			missing = append(missing, mi.Name)
		case sig != mi.Signature:
			differ = append(differ, fmt.Sprintf("%s (declared %s, registered %s)", mi.Name, sigOrBytes(mi.Signature), sigOrBytes(sig)))
		}
	}
	if len(missing) == 0 && len(differ) == 0 {
		return nil
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "no handler for "+strings.Join(missing, ", "))
	}
	if len(differ) > 0 {
		parts = append(parts, "other signature: "+strings.Join(differ, "; "))
	}
	return fmt.Errorf("protocol: service %s %s: %s", s.name, s.version, strings.Join(parts, "; "))
}

func sigOrBytes(sig string) string {
	if sig == "" {
		return "untyped"
	}
	return sig
}
