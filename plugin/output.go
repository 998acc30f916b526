package plugin

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
)

// maxLogLine bounds one record of a plugin's output. A longer line is not
// cut: it is logged in pieces of maxLogLine bytes, each with a "part"
// attribute (1, 2, ...), so memory stays bounded whatever the plugin prints.
const maxLogLine = 1 << 20

// outputBuffer is the read buffer of one output stream.
const outputBuffer = 64 << 10

// logLines logs r's lines (without the end of line) as records of log at
// level Info, with stream as the "stream" attribute, until r ends; a line
// that holds a record of the plugin's LogHandler becomes that record. Bytes that
// are not UTF-8 are logged as they are (the handler escapes them); a last
// line without a newline is logged too.
func logLines(r io.Reader, log *slog.Logger, stream string, note func(string)) {
	br := bufio.NewReaderSize(r, outputBuffer)
	var line []byte
	part := 0 // pieces of the current line already logged
	emit := func(final bool) {
		if final {
			line = bytes.TrimSuffix(line, []byte{'\r'})
		}
		switch {
		case part > 0 || !final:
			part++
			log.Info(string(line), "stream", stream, "part", part)
		case bytes.HasPrefix(line, []byte(logPrefix)) && logRecord(log, line[len(logPrefix):], stream):
		case len(line) > 0:
			log.Info(string(line), "stream", stream)
			if note != nil {
				note(string(line))
			}
		}
		line = line[:0]
		if final {
			part = 0
			if cap(line) > 4*outputBuffer {
				line = nil // do not keep a huge line's memory
			}
		}
	}
	for {
		chunk, err := br.ReadSlice('\n')
		end := err == nil || !errors.Is(err, bufio.ErrBufferFull) // a line ended, or the stream did
		chunk = bytes.TrimSuffix(chunk, []byte{'\n'})
		for len(line)+len(chunk) > maxLogLine {
			n := maxLogLine - len(line)
			line = append(line, chunk[:n]...)
			chunk = chunk[n:]
			emit(false)
		}
		line = append(line, chunk...)
		if end && (len(line) > 0 || part > 0) {
			emit(true)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}
