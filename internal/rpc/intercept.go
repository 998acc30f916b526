package rpc

import (
	"context"
	"slices"
)

// ClientInterceptor wraps this side's outgoing calls (Options.Intercept):
// it runs call, which makes the call and returns its error, and may act
// before and after it (time it, count it, log it), pass call a derived
// context (a deadline, a trace: see WithTraceparent), or fail the call
// without running call at all. req is the request; it must not be kept or
// changed.
type ClientInterceptor func(ctx context.Context, method string, req []byte, call func(ctx context.Context) error) error

// ServerInterceptor wraps the handling of every call a Mux serves
// (Mux.Intercept): it runs handle, which runs the method's handler and
// returns its error, and may act before and after it or refuse the call by
// returning an error (a *Error keeps its code) without running handle. req
// is the request; it must not be kept or changed. The error handle returns
// is the handler's: the reply itself has been sent, or will be, by the Peer.
type ServerInterceptor func(ctx context.Context, method string, req []byte, handle func(ctx context.Context) error) error

// Intercept adds interceptors around every call m serves, on every Peer
// that serves m; the first added runs outermost. Add them before m is used.
func (m *Mux) Intercept(i ...ServerInterceptor) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var all []ServerInterceptor
	if p := m.icpt.Load(); p != nil {
		all = slices.Clone(*p)
	}
	all = append(all, i...)
	m.icpt.Store(&all)
}

// interceptors is read on every served call: one atomic load, no lock.
func (m *Mux) interceptors() []ServerInterceptor {
	if m == nil {
		return nil
	}
	if p := m.icpt.Load(); p != nil {
		return *p
	}
	return nil
}

// chainServer runs icpt around handle, outermost first.
func chainServer(icpt []ServerInterceptor, ctx context.Context, method string, req []byte, handle func(context.Context) error) error {
	if len(icpt) == 0 {
		return handle(ctx)
	}
	return icpt[0](ctx, method, req, func(ctx context.Context) error {
		return chainServer(icpt[1:], ctx, method, req, handle)
	})
}

// chainClient runs icpt around call, outermost first.
func chainClient(icpt []ClientInterceptor, ctx context.Context, method string, req []byte, call func(context.Context) error) error {
	if len(icpt) == 0 {
		return call(ctx)
	}
	return icpt[0](ctx, method, req, func(ctx context.Context) error {
		return chainClient(icpt[1:], ctx, method, req, call)
	})
}
