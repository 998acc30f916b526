package rpc

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
)

// objectTable holds the objects the peer created on this side (New), by
// handle. Its invariants, under mu:
//
//   - len(entries) + reserved ≤ max: a constructor runs only on a reserved
//     slot, so the limit is exact however many New calls run at once;
//   - an object is closed exactly once, and never while one of its methods
//     runs: Destroy (or the connection's end) takes it out of the table at
//     once, so no new method starts, and the object is closed when its last
//     running method returns — by Destroy itself, which waits for that
//     within its call's deadline, or else by that last method.
type objectTable struct {
	mu       sync.Mutex
	entries  map[uint64]*objEntry
	next     uint64
	reserved int
	max      int
	closed   bool // the connection ended: New fails
	log      *slog.Logger
}

type objEntry struct {
	obj     Object
	running int           // methods running now
	idle    chan struct{} // made by a Destroy that waits; closed when running drops to 0
	orphan  bool          // out of the table; the last method to return closes it
}

// serveObject serves the object calls: New, a method of a handle, Destroy.
func (p *Peer) serveObject(j serveJob, req []byte) ([]byte, error) {
	t := &p.objects
	switch {
	case j.flags&flagNew != 0:
		ctor := p.mux.constructor([]byte(j.name))
		if ctor == nil {
			return nil, &Error{Code: CodeUnimplemented, Message: fmt.Sprintf("unknown object type %q", j.name)}
		}
		if err := t.reserve(); err != nil {
			return nil, err
		}
		obj, err := ctor(j.hc, req)
		if err == nil && obj == nil {
			err = &Error{Code: CodeInternal, Message: fmt.Sprintf("constructor of %q returned no object", j.name)}
		}
		if err == nil {
			// A caller that gave up would never learn the handle.
			err = j.hc.Err()
		}
		h, err := t.insert(obj, err)
		if err != nil {
			return nil, err
		}
		return appendID(nil, h), nil
	case j.flags&flagDestroy != 0:
		return nil, t.destroy(j.hc, j.aux)
	default:
		e := t.enter(j.aux)
		if e == nil {
			return nil, &Error{Code: CodeNotFound, Message: fmt.Sprintf("no object with handle %d", j.aux)}
		}
		defer t.exit(e)
		return e.obj.Call(j.hc, j.name, req)
	}
}

// reserve takes a slot for a constructor about to run.
func (t *objectTable) reserve() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if len(t.entries)+t.reserved >= t.max {
		return &Error{Code: CodeResourceExhaust, Message: fmt.Sprintf("this connection holds %d objects already", t.max)}
	}
	t.reserved++
	return nil
}

// insert fills a reserved slot with obj, or gives the slot back (closing
// obj, if any) when the constructor failed or the connection ended.
func (t *objectTable) insert(obj Object, err error) (uint64, error) {
	t.mu.Lock()
	t.reserved--
	if err == nil && t.closed {
		err = ErrClosed
	}
	if err != nil {
		t.mu.Unlock()
		if obj != nil {
			t.close(obj)
		}
		return 0, err
	}
	if t.entries == nil {
		t.entries = map[uint64]*objEntry{}
	}
	t.next++
	h := t.next
	t.entries[h] = &objEntry{obj: obj}
	t.mu.Unlock()
	return h, nil
}

// enter finds the object of handle h and counts a method running on it.
func (t *objectTable) enter(h uint64) *objEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entries[h]
	if e != nil {
		e.running++
	}
	return e
}

// exit ends a method that enter counted.
func (t *objectTable) exit(e *objEntry) {
	t.mu.Lock()
	e.running--
	last := e.running == 0
	orphan := last && e.orphan
	if last && e.idle != nil {
		close(e.idle)
		e.idle = nil
	}
	t.mu.Unlock()
	if orphan {
		t.close(e.obj)
	}
}

// destroy takes handle h out of the table and closes its object once no
// method runs on it. It waits for running methods as long as ctx (the
// Destroy call's) lasts; if ctx ends first, the last method closes the
// object and destroy returns ctx's error.
func (t *objectTable) destroy(ctx context.Context, h uint64) error {
	t.mu.Lock()
	e := t.entries[h]
	delete(t.entries, h)
	if e == nil {
		t.mu.Unlock()
		return &Error{Code: CodeNotFound, Message: fmt.Sprintf("no object with handle %d", h)}
	}
	if e.running > 0 {
		if e.idle == nil {
			e.idle = make(chan struct{})
		}
		idle := e.idle
		t.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
		}
		t.mu.Lock()
		if e.running > 0 {
			e.orphan = true
			t.mu.Unlock()
			return ctx.Err()
		}
	}
	t.mu.Unlock()
	return closeObject(e.obj)
}

// closeAll empties the table as the connection ends: idle objects are
// closed now, busy ones by their last running method.
func (t *objectTable) closeAll() {
	t.mu.Lock()
	t.closed = true
	var idle []Object
	for _, e := range t.entries {
		if e.running > 0 {
			e.orphan = true
		} else {
			idle = append(idle, e.obj)
		}
	}
	t.entries = nil
	t.mu.Unlock()
	for _, o := range idle {
		t.close(o)
	}
}

func (t *objectTable) close(o Object) {
	if err := closeObject(o); err != nil {
		t.log.Warn("ringwire: closing an object", "err", err)
	}
}

func closeObject(o Object) error {
	if c, ok := o.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
