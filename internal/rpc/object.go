package rpc

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// Handle is a remote object the peer created for us with New: call its
// methods with Call, release it with Destroy. Every handle dies with its
// connection.
type Handle struct {
	p         *Peer
	id        uint64
	typ       string
	destroyed atomic.Bool
	// errs, if set (SetHandleErrors), rewrites the errors of Call and
	// Destroy the way its owner rewrites its own calls' errors.
	errs func(error) error
}

// SetHandleErrors makes h report its errors through f, as the Client or
// Session that created it reports its calls' (a plugin that died, a
// restart).
func SetHandleErrors(h *Handle, f func(error) error) { h.errs = f }

func (h *Handle) mapErr(err error) error {
	if err == nil || h.errs == nil {
		return err
	}
	return h.errs(err)
}

// New asks the peer to create an object of the registered type typ from args
// and returns its handle.
func (p *Peer) New(ctx context.Context, typ string, args []byte) (*Handle, error) {
	out, err := p.call(ctx, flagNew, 0, typ, args, nil)
	if err != nil {
		return nil, err
	}
	if len(out) != idSize {
		return nil, fmt.Errorf("%w: New answered %d bytes, want an 8-byte handle", ErrCorrupt, len(out))
	}
	return &Handle{p: p, id: binary.LittleEndian.Uint64(out), typ: typ}, nil
}

// Call invokes method on the object.
func (h *Handle) Call(ctx context.Context, method string, req []byte) ([]byte, error) {
	if h.destroyed.Load() {
		return nil, fmt.Errorf("%w: handle %d of %q was destroyed", ErrUnknownMethod, h.id, h.typ)
	}
	out, err := h.p.call(ctx, flagObject, h.id, method, req, nil)
	return out, h.mapErr(err)
}

// Destroy releases the object on the peer's side (calling its Close, if it
// has one). Calls after Destroy fail.
func (h *Handle) Destroy(ctx context.Context) error {
	if h.destroyed.Swap(true) {
		return nil
	}
	_, err := h.p.call(ctx, flagDestroy, h.id, "", nil, nil)
	return h.mapErr(err)
}
