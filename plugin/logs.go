package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// A launched plugin's log records travel to its host on the plugin's
// stderr, one line each: logPrefix, then the record as slog's JSON handler
// writes it. The host turns such a line back into a record of its own
// logger, with the record's level, time, message and attributes (and the
// plugin attribute the host adds), so a plugin's ERROR stays an ERROR and
// carries no second timestamp. Every other line of output is logged as
// before, as text at level Info.
const logPrefix = "\x1eringwire-log "

// envLogLevel tells a launched plugin the lowest level its host logs, so that
// records nobody keeps are not written at all.
const envLogLevel = "RINGWIRE_LOG_LEVEL"

// LogHandler returns a slog handler that sends a launched plugin's records
// to its host's logger through w, the plugin's stderr. Serve installs one
// on os.Stderr as slog's default (and as the plugin's Logger) when
// Plugin.Logger is nil; use it directly to combine it with a handler of
// your own. opts are those of slog.NewJSONHandler; a nil opts or Level
// selects the lowest level the host logs.
func LogHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	o := slog.HandlerOptions{}
	if opts != nil {
		o = *opts
	}
	if o.Level == nil {
		var l slog.Level
		if err := l.UnmarshalText([]byte(os.Getenv(envLogLevel))); err == nil {
			o.Level = l
		}
	}
	return slog.NewJSONHandler(&prefixWriter{w: w}, &o)
}

// prefixWriter writes each record (one Write from the JSON handler) as one
// line that starts with logPrefix, in one write.
type prefixWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(append(p.buf[:0], logPrefix...), b...)
	if _, err := p.w.Write(p.buf); err != nil {
		return 0, err
	}
	if cap(p.buf) > 64<<10 {
		p.buf = nil
	}
	return len(b), nil
}

// hostLevel is the lowest level log handles, for envLogLevel.
func hostLevel(log *slog.Logger) slog.Level {
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if log.Enabled(context.Background(), l) {
			return l
		}
	}
	return slog.LevelError
}

// logRecord logs line, a record a plugin wrote with LogHandler (without
// logPrefix), as a record of log. It reports false if line is not such a
// record (it is then logged as text).
func logRecord(log *slog.Logger, line []byte, stream string) bool {
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return false
	}
	var level slog.Level
	lv, _ := m[slog.LevelKey].(string)
	msg, ok := m[slog.MessageKey].(string)
	if !ok || level.UnmarshalText([]byte(lv)) != nil {
		return false
	}
	ctx := context.Background()
	if !log.Enabled(ctx, level) {
		return true
	}
	t := time.Now()
	if s, ok := m[slog.TimeKey].(string); ok {
		if pt, err := time.Parse(time.RFC3339Nano, s); err == nil {
			t = pt
		}
	}
	delete(m, slog.LevelKey)
	delete(m, slog.MessageKey)
	delete(m, slog.TimeKey)
	r := slog.NewRecord(t, level, msg, 0)
	r.AddAttrs(attrs(m)...)
	_ = log.Handler().Handle(ctx, r)
	return true
}

// attrs turns a decoded JSON object back into attributes, sorted by key
// (JSON objects have no order), objects into groups.
func attrs(m map[string]any) []slog.Attr {
	out := make([]slog.Attr, 0, len(m))
	for k, v := range m {
		out = append(out, jsonAttr(k, v))
	}
	slices.SortFunc(out, func(a, b slog.Attr) int { return strings.Compare(a.Key, b.Key) })
	return out
}

func jsonAttr(k string, v any) slog.Attr {
	switch v := v.(type) {
	case map[string]any:
		return slog.Attr{Key: k, Value: slog.GroupValue(attrs(v)...)}
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return slog.Int64(k, i)
		}
		f, _ := v.Float64()
		return slog.Float64(k, f)
	case string:
		return slog.String(k, v)
	case bool:
		return slog.Bool(k, v)
	default:
		return slog.Any(k, v)
	}
}
