//go:build linux

package plugin_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	negotiate "github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/plugin"
)

func TestRegistryOrder(t *testing.T) {
	rec := newRecorder()
	var r plugin.Registry
	for _, name := range []string{"a", "b", "c"} {
		cfg := pluginConfig("echo")
		cfg.Logger = slogNew(rec)
		if _, err := r.Add(name, cfg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Add("b", pluginConfig("echo")); !errors.Is(err, plugin.ErrConfig) || !strings.Contains(err.Error(), `plugin "b" is already registered`) {
		t.Errorf("second Add of b: %v, want ErrConfig naming b", err)
	}
	if got := r.Names(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("Names = %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	defer r.StopAll(ctx)
	if err := r.StartAll(ctx); err != nil {
		t.Fatalf("StartAll: %v", err)
	}
	for name, st := range r.Statuses() {
		if st.State != "ready" || st.PID <= 0 {
			t.Errorf("%s: %+v", name, st)
		}
	}
	s, ok := r.Get("b")
	if !ok {
		t.Fatal("Get(b) found nothing")
	}
	if out, err := s.Call(ctx, "echo", []byte("b")); err != nil || string(out) != "b" {
		t.Errorf("b.echo: %q, %v", out, err)
	}
	if _, ok := r.Get("zz"); ok {
		t.Error("Get(zz) found a session")
	}
	err := r.StartAll(ctx)
	if !errors.Is(err, plugin.ErrConfig) || !strings.Contains(err.Error(), `plugin "a": started again while ready`) {
		t.Errorf("second StartAll: %v, want ErrConfig saying each plugin was started again", err)
	}
	if err := r.StopAll(ctx); err != nil {
		t.Errorf("StopAll: %v", err)
	}
	want := []string{
		"a:starting", "a:ready", "b:starting", "b:ready", "c:starting", "c:ready",
		"c:stopping", "c:stopped", "b:stopping", "b:stopped", "a:stopping", "a:stopped",
	}
	if got := rec.states(); !slices.Equal(got, want) {
		t.Errorf("state changes:\n got %v\nwant %v", got, want)
	}
}

func TestRegistryErrors(t *testing.T) {
	var r plugin.Registry
	missing := pluginConfig("echo")
	missing.Path = "/nonexistent/plugin"
	mustAdd := func(name string, cfg *plugin.Config) {
		if _, err := r.Add(name, cfg); err != nil {
			t.Fatal(err)
		}
	}
	mustAdd("missing", missing)
	mustAdd("good", pluginConfig("echo"))
	mismatch := pluginConfig("echo")
	mismatch.Service = otherService
	mustAdd("mismatch", mismatch)
	stubborn := func() *plugin.Config {
		c := pluginConfig("stubborn")
		c.StopTimeout = 150 * time.Millisecond
		return c
	}
	mustAdd("stubborn1", stubborn())
	mustAdd("stubborn2", stubborn())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := r.StartAll(ctx)
	t.Logf("StartAll: %v", err)
	if !errors.Is(err, negotiate.ErrContractMismatch) || !strings.Contains(err.Error(), `plugin "missing"`) ||
		!strings.Contains(err.Error(), "no such file") {
		t.Errorf("StartAll: %v, want both failures joined", err)
	}
	if i, j := strings.Index(err.Error(), `"missing"`), strings.Index(err.Error(), `"mismatch"`); i > j {
		t.Errorf("errors not in insertion order: %v", err)
	}
	sts := r.Statuses()
	for name, want := range map[string]string{
		"missing": "failed", "good": "ready", "mismatch": "failed",
		"stubborn1": "ready", "stubborn2": "ready",
	} {
		if sts[name].State != want {
			t.Errorf("%s: %v (%v), want %v", name, sts[name].State, sts[name].LastErr, want)
		}
	}
	if sts["missing"].LastErr == nil {
		t.Error("missing: no LastErr")
	}

	err = r.StopAll(ctx)
	t.Logf("StopAll: %v", err)
	if !errors.Is(err, plugin.ErrKilled) || !strings.Contains(err.Error(), "stubborn1") || !strings.Contains(err.Error(), "stubborn2") {
		t.Errorf("StopAll: %v, want both kills joined", err)
	}
	if i, j := strings.Index(err.Error(), "stubborn2"), strings.Index(err.Error(), "stubborn1"); i > j {
		t.Errorf("stop errors not in reverse order: %v", err)
	}
	for name, st := range r.Statuses() {
		if st.State != "stopped" {
			t.Errorf("%s after StopAll: %v", name, st.State)
		}
	}
}
