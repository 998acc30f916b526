package plugin

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

// lines collects the records logLines makes.
type lines struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *lines) Enabled(context.Context, slog.Level) bool { return true }
func (l *lines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r)
	return nil
}
func (l *lines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *lines) WithGroup(string) slog.Handler      { return l }

func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
		}
		return true
	})
	return v
}

func logAll(r io.Reader) []slog.Record {
	var l lines
	logLines(r, slog.New(&l), "stdout", nil)
	return l.recs
}

func TestLogLines(t *testing.T) {
	in := "one\r\ntwo\n\nbin\x00\xff\n" + strings.Repeat("y", maxLogLine) + "\n" +
		strings.Repeat("z", 2*maxLogLine+5) + "\nlast, no newline"
	// One byte at a time as well as whole: the result must not depend on
	// how the pipe delivers the bytes.
	for _, r := range []io.Reader{strings.NewReader(in), iotest.HalfReader(strings.NewReader(in))} {
		recs := logAll(r)
		type want struct {
			msg  string
			part string
		}
		wants := []want{
			{"one", ""}, {"two", ""}, {"bin\x00\xff", ""},
			{strings.Repeat("y", maxLogLine), ""},
			{strings.Repeat("z", maxLogLine), "1"}, {strings.Repeat("z", maxLogLine), "2"}, {"zzzzz", "3"},
			{"last, no newline", ""},
		}
		if len(recs) != len(wants) {
			t.Fatalf("%d records, want %d", len(recs), len(wants))
		}
		for i, w := range wants {
			if recs[i].Message != w.msg || attr(recs[i], "part") != w.part || attr(recs[i], "stream") != "stdout" {
				t.Errorf("record %d: %d bytes %.20q part %q, want %d bytes %.20q part %q",
					i, len(recs[i].Message), recs[i].Message, attr(recs[i], "part"), len(w.msg), w.msg, w.part)
			}
		}
	}
}

func TestLogLinesEmpty(t *testing.T) {
	if recs := logAll(bytes.NewReader(nil)); len(recs) != 0 {
		t.Errorf("%d records from nothing", len(recs))
	}
	if recs := logAll(iotest.ErrReader(io.ErrUnexpectedEOF)); len(recs) != 0 {
		t.Errorf("%d records from a failing reader", len(recs))
	}
}
