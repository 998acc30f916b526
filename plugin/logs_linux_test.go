//go:build linux

package plugin_test

import (
	"context"
	"log"
	"log/slog"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/plugin"
)

func init() {
	// logs serves "log", which logs at every level with attributes, and
	// "panic"; Plugin.Logger is nil, so Serve sends records to the host.
	roles["logs"] = func() int {
		m := rpc.NewMux()
		m.Handle("log", func(ctx context.Context, _ []byte) ([]byte, error) {
			slog.Debug("debug detail", "n", 1)
			slog.Info("info note")
			slog.Warn("disk nearly full", "free", 0.05)
			slog.Error("write failed", "path", "/data/x", "ok", false, slog.Group("req", "id", 7, "user", "ana"))
			log.Printf("from the log package")
			return nil, nil
		})
		m.Handle("panic", func(context.Context, []byte) ([]byte, error) { panic("boom") })
		return serve(&plugin.Plugin{Name: "logs", Mux: m})
	}
}

// minLevel is a handler that logs from min up.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }
func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}

func TestPluginLogLevels(t *testing.T) {
	for _, min := range []slog.Level{slog.LevelDebug, slog.LevelWarn} {
		t.Run(min.String(), func(t *testing.T) {
			rec := newRecorder()
			cfg := pluginConfig("logs")
			cfg.Logger = slog.New(minLevel{rec, min})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := plugin.Launch(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if _, err := c.Call(ctx, "log", nil); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Call(ctx, "panic", nil); err == nil {
				t.Fatal("panic call succeeded")
			}
			if err := c.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			fromPlugin := func(msg string) *record {
				for _, r := range rec.records(func(r record) bool { return r.Msg == msg && r.Attrs["plugin"] == "logs" }) {
					return &r
				}
				return nil
			}
			for _, w := range []struct {
				msg   string
				level slog.Level
				attrs map[string]string
			}{
				{"debug detail", slog.LevelDebug, map[string]string{"n": "1"}},
				{"info note", slog.LevelInfo, nil},
				{"disk nearly full", slog.LevelWarn, map[string]string{"free": "0.05"}},
				{"write failed", slog.LevelError, map[string]string{"path": "/data/x", "ok": "false", "req": "[id=7 user=ana]"}},
				{"from the log package", slog.LevelInfo, nil},
				{"ringwire: handler panicked", slog.LevelError, map[string]string{"method": "panic", "panic": "boom"}},
			} {
				r := fromPlugin(w.msg)
				if w.level < min {
					if r != nil {
						t.Errorf("%q logged at %v under a %v host logger", w.msg, r.Level, min)
					}
					continue
				}
				if r == nil {
					rec.dump(t)
					t.Fatalf("no record %q from the plugin", w.msg)
				}
				if r.Level != w.level {
					t.Errorf("%q at %v, want %v", w.msg, r.Level, w.level)
				}
				for k, v := range w.attrs {
					if r.Attrs[k] != v {
						t.Errorf("%q: attribute %s = %q, want %q", w.msg, k, r.Attrs[k], v)
					}
				}
				if _, dup := r.Attrs["time"]; dup {
					t.Errorf("%q carries a second timestamp", w.msg)
				}
				if d := r.Time.Sub(start); d < -time.Second || d > 10*time.Second {
					t.Errorf("%q: time %v, %v after the call started", w.msg, r.Time, d)
				}
			}
		})
	}
}
