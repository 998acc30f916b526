package rpc

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ringwire/ringwire/internal/transport"
)

type ctxTag struct{}

func TestInterceptors(t *testing.T) {
	var mu sync.Mutex
	var trail []string
	note := func(s string) {
		mu.Lock()
		trail = append(trail, s)
		mu.Unlock()
	}
	mux := echoMux()
	mux.Intercept(
		func(ctx context.Context, method string, req []byte, handle func(context.Context) error) error {
			note("server outer " + method)
			if method == "fail" && string(req) == "deny" {
				return Errorf(CodePermissionDenied, "denied by the interceptor")
			}
			err := handle(context.WithValue(ctx, ctxTag{}, "tagged"))
			note("server outer done " + method)
			return err
		},
		func(ctx context.Context, method string, req []byte, handle func(context.Context) error) error {
			note("server inner " + method)
			return handle(ctx)
		},
	)
	mux.Handle("tag", func(ctx context.Context, req []byte) ([]byte, error) {
		tag, _ := ctx.Value(ctxTag{}).(string)
		if _, ok := PeerFromContext(ctx); !ok {
			return nil, errors.New("no Peer in the handler's context")
		}
		return []byte(tag), nil
	})
	c, s := connPair(t, transport.ModeShm)
	host := NewPeer(c, Options{Logger: quiet, Intercept: []ClientInterceptor{
		func(ctx context.Context, method string, req []byte, call func(context.Context) error) error {
			note("client " + method)
			if method == "blocked" {
				return errors.New("blocked by the client interceptor")
			}
			return call(WithTraceparent(ctx, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
		},
	}})
	plugin := NewPeer(s, Options{Mux: mux, Logger: quiet})
	t.Cleanup(func() {
		host.Close()
		plugin.Close()
	})
	ctx := context.Background()

	out, err := host.Call(ctx, "tag", nil)
	if err != nil || string(out) != "tagged" {
		t.Fatalf("tag = %q, %v: the handler should see the interceptor's context", out, err)
	}
	// A ReplyHandler, and a typed method.
	if out, err := host.CallInto(ctx, "echo0", []byte("r"), nil); err != nil || string(out) != "r" {
		t.Fatalf("echo0 = %q, %v", out, err)
	}
	if out, err := tRaw.Call(ctx, host, []byte("typed")); err != nil || string(out) != "typed" {
		t.Fatalf("t.raw = %q, %v", out, err)
	}
	_, err = host.Call(ctx, "fail", []byte("deny"))
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != CodePermissionDenied || pe.Message != "denied by the interceptor" {
		t.Errorf("denied call: %v", err)
	}
	_, err = host.Call(ctx, "fail", []byte("x"))
	if !errors.As(err, &pe) || pe.Code != CodeInvalidArgument {
		t.Errorf("failing handler: %v, want its own error", err)
	}
	if _, err := host.Call(ctx, "blocked", nil); err == nil || err.Error() != "blocked by the client interceptor" {
		t.Errorf("blocked call: %v", err)
	}
	want := []string{
		"client tag", "server outer tag", "server inner tag", "server outer done tag",
		"client echo0", "server outer echo0", "server inner echo0", "server outer done echo0",
		"client t.raw", "server outer t.raw", "server inner t.raw", "server outer done t.raw",
		"client fail", "server outer fail",
		"client fail", "server outer fail", "server inner fail", "server outer done fail",
		"client blocked",
	}
	mu.Lock()
	got := slices.Clone(trail)
	mu.Unlock()
	// A ReplyHandler's reply goes out inside handle, so the caller may
	// start its next call before the outer interceptor notes its end:
	// compare the calls' order only through their first entries.
	if !slices.Equal(got[:4], want[:4]) {
		t.Errorf("interceptors of the first call ran as %q, want %q", got[:4], want[:4])
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("interceptors ran as\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
