package rpc

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Handler serves one method: it gets the request and returns the reply. req is
// valid only until the handler returns (it may be reused, or be a view of
// shared memory): copy what you keep. A returned *Error keeps its code across
// the wire; a panic becomes a CodeInternal error and the Peer keeps serving.
type Handler func(ctx context.Context, req []byte) ([]byte, error)

// ReplyHandler is the zero-copy form of Handler: it writes the reply into w,
// a buffer the Peer owns and reuses, so serving allocates nothing.
type ReplyHandler func(ctx context.Context, req []byte, w *Reply) error

// Object is an instance the peer created with Peer.New. It lives until the
// peer destroys it or the connection closes; if it implements io.Closer, Close
// is called then. Call may run on several goroutines at once (one per call in
// flight): guard the object's state.
type Object interface {
	Call(ctx context.Context, method string, req []byte) ([]byte, error)
}

// Constructor creates an Object from the arguments the peer passed to New.
type Constructor func(ctx context.Context, args []byte) (Object, error)

// Methods is an Object made of one Handler per method.
type Methods map[string]Handler

// Call runs the method's handler, or fails with ErrUnknownMethod.
func (m Methods) Call(ctx context.Context, method string, req []byte) ([]byte, error) {
	h, ok := m[method]
	if !ok {
		return nil, fmt.Errorf("%w: object has no method %q", ErrUnknownMethod, method)
	}
	return h(ctx, req)
}

var _ Object = Methods(nil)

// Reply is the buffer a ReplyHandler writes its reply into.
type Reply struct {
	b    []byte
	base int // bytes of header before the reply proper
}

// Write appends p to the reply. It never fails.
func (r *Reply) Write(p []byte) (int, error) {
	r.b = append(r.b, p...)
	return len(p), nil
}

// Extend grows the reply by n bytes and returns them, to be filled in place.
func (r *Reply) Extend(n int) []byte {
	r.b = slices.Grow(r.b, n)
	l := len(r.b)
	r.b = r.b[:l+n]
	return r.b[l : l+n : l+n]
}

// Len is the reply's length so far.
func (r *Reply) len() int { return len(r.b) - r.base }

// Bytes returns the reply so far (valid until the next write).
func (r *Reply) bytes() []byte { return r.b[r.base:] }

// Reset empties the reply.
func (r *Reply) reset() { r.b = r.b[:r.base] }

// method is one registered method with the statistics that decide whether it
// runs on the reading goroutine.
type method struct {
	name string
	sig  string // the typed method's signature ("" if untyped)
	h    Handler
	rh   ReplyHandler
	view bool // h gets the request in the connection's memory
	// avg is a moving average of the handler's run time in nanoseconds; slow
	// marks a method whose inline run outlasted the guard (it runs on its own
	// goroutine for the next slowRuns calls).
	avg  atomic.Int64
	slow atomic.Int32
}

const slowRuns = 64

func (m *method) observe(d int64) {
	for {
		old := m.avg.Load()
		if m.avg.CompareAndSwap(old, old+(d-old)/8) {
			break
		}
	}
	for {
		n := m.slow.Load()
		if n <= 0 || m.slow.CompareAndSwap(n, n-1) {
			break
		}
	}
}

// Mux holds the methods and object types one side serves. Register
// everything before the Mux is used by a Peer; a Mux may serve many Peers.
type Mux struct {
	mu      sync.RWMutex
	methods map[string]*method
	types   map[string]Constructor
	icpt    atomic.Pointer[[]ServerInterceptor]
}

// NewMux returns an empty Mux.
func NewMux() *Mux {
	return &Mux{methods: map[string]*method{}, types: map[string]Constructor{}}
}

func (m *Mux) add(name string, e *method) {
	if name == "" || len(name) > maxMethod || strings.HasPrefix(name, "$") {
		panic(fmt.Sprintf("protocol: invalid method name %q (1-%d bytes, not starting with '$')", name, maxMethod))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.methods[name]; dup {
		panic(fmt.Sprintf("protocol: method %q registered twice", name))
	}
	m.methods[name] = e
}

// Handle registers h for method name. It panics on an empty, too long (over
// 255 bytes) or duplicate name, like http.ServeMux.
func (m *Mux) Handle(name string, h Handler) {
	m.add(name, &method{name: name, h: h})
}

// HandleView registers h for method name as a view handler: req is the
// request in the connection's memory itself (shared memory on shm: the peer
// can change it, copy what you validate), and h may return req or part of it
// as its reply, so an echo copies its payload once each way. h runs on the
// goroutine that reads the connection and holds it meanwhile: it must be
// short, must not block, and cannot call the peer (such calls fail with
// ErrViewCall). Use Handle for anything else. While answers wait for the
// peer to make room, a call of h is served like a Handle call (on a copy
// of its request, on a goroutine of its own), so the reader never waits.
func (m *Mux) HandleView(name string, h Handler) {
	m.add(name, &method{name: name, h: h, view: true})
}

// HandleReply registers the zero-copy handler h for method name.
func (m *Mux) HandleReply(name string, h ReplyHandler) {
	m.add(name, &method{name: name, rh: h})
}

// HandleType registers an object type the peer can create with New.
func (m *Mux) HandleType(name string, c Constructor) {
	if name == "" || len(name) > maxMethod {
		panic(fmt.Sprintf("protocol: invalid type name %q", name))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.types[name]; dup {
		panic(fmt.Sprintf("protocol: type %q registered twice", name))
	}
	m.types[name] = c
}

func (m *Mux) lookup(name []byte) *method {
	if m == nil {
		return nil
	}
	m.mu.RLock()
	e := m.methods[string(name)]
	m.mu.RUnlock()
	return e
}

func (m *Mux) constructor(name []byte) Constructor {
	if m == nil {
		return nil
	}
	m.mu.RLock()
	c := m.types[string(name)]
	m.mu.RUnlock()
	return c
}

// Methods lists the registered method names, sorted.
func (m *Mux) methodNames() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	names := make([]string, 0, len(m.methods))
	for n := range m.methods {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Infos lists the registered methods with their signatures, sorted by name.
func InfosOf(m *Mux) []MethodInfo {
	m.mu.RLock()
	defer m.mu.RUnlock()
	infos := make([]MethodInfo, 0, len(m.methods))
	for n, e := range m.methods {
		infos = append(infos, MethodInfo{Name: n, Signature: e.sig})
	}
	slices.SortFunc(infos, func(a, b MethodInfo) int { return strings.Compare(a.Name, b.Name) })
	return infos
}
