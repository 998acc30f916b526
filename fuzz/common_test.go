package fuzz

import (
	"bytes"
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
)

var quiet = slog.New(slog.DiscardHandler)

// hangBound is how long the stack may take to wind down once the fuzzer's
// side is gone.
const hangBound = 5 * time.Second

// echoes counts the calls of "echo" served (TestSeeds checks that the seeds
// reach the handlers).
var echoes atomic.Int64

// fuzzMux serves what the fuzzers call: plain, reply-buffer and view
// handlers, a slow one, one that fails and an object type.
func fuzzMux() *rpc.Mux {
	m := rpc.NewMux()
	m.Handle("echo", func(_ context.Context, req []byte) ([]byte, error) {
		echoes.Add(1)
		return bytes.Clone(req), nil
	})
	m.HandleReply("echo0", func(_ context.Context, req []byte, w *rpc.Reply) error {
		_, err := w.Write(req)
		return err
	})
	m.HandleView("len", func(_ context.Context, req []byte) ([]byte, error) {
		return []byte{byte(len(req))}, nil
	})
	m.Handle("wait", func(ctx context.Context, _ []byte) ([]byte, error) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
			return nil, nil
		}
	})
	m.Handle("fail", func(context.Context, []byte) ([]byte, error) {
		return nil, rpc.Errorf(rpc.CodeInvalidArgument, "no")
	})
	m.HandleType("obj", func(context.Context, []byte) (rpc.Object, error) {
		return rpc.Methods{"echo": func(_ context.Context, req []byte) ([]byte, error) { return bytes.Clone(req), nil }}, nil
	})
	return m
}
