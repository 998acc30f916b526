package plugin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Registry holds named plugins (Clients, idle until StartAll). StartAll starts them in the order
// they were added and StopAll stops them in the reverse order, so a plugin
// added after another may rely on it for its whole life. The zero value is
// an empty Registry ready to use; its methods are safe for concurrent use.
type Registry struct {
	mu     sync.Mutex
	order  []string
	byName map[string]*Client
}

// Add creates a Client for cfg under name (which becomes the Config's Name)
// and adds it. It fails with ErrConfig if name is taken.
func (r *Registry) Add(name string, cfg *Config) (*Client, error) {
	c := Config{}
	if cfg != nil {
		c = *cfg
	}
	c.Name = name
	s := newClient(&c)
	if err := r.add(s); err != nil {
		return nil, err
	}
	return s, nil
}

// add adds s under its Name. It fails with ErrConfig if the name
// is taken.
func (r *Registry) add(s *Client) error {
	name := s.name()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.byName[name]; dup {
		return fmt.Errorf("%w: plugin %q is already registered", ErrConfig, name)
	}
	if r.byName == nil {
		r.byName = map[string]*Client{}
	}
	r.byName[name] = s
	r.order = append(r.order, name)
	return nil
}

// Get returns the Client named name.
func (r *Registry) Get(name string) (*Client, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.byName[name]
	return s, ok
}

// Names lists the Clients' names in the order they were added.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.order)
}

func (r *Registry) clients() []*Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Client, len(r.order))
	for i, n := range r.order {
		out[i] = r.byName[n]
	}
	return out
}

// StartAll starts every Client in insertion order, one after the other. A
// Client that fails to start does not stop the others; the errors are
// joined (errors.Join) in that order.
func (r *Registry) StartAll(ctx context.Context) error {
	var errs []error
	for _, s := range r.clients() {
		if err := s.start(ctx); err != nil {
			errs = append(errs, err) // it names the plugin
		}
	}
	return errors.Join(errs...)
}

// StopAll stops every Client in reverse insertion order and joins the
// errors.
func (r *Registry) StopAll(ctx context.Context) error {
	var errs []error
	ss := r.clients()
	for i := len(ss) - 1; i >= 0; i-- {
		if err := ss[i].Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Statuses returns every Client's status by name.
func (r *Registry) Statuses() map[string]Status {
	ss := r.clients()
	out := make(map[string]Status, len(ss))
	for _, s := range ss {
		out[s.name()] = s.Status()
	}
	return out
}
