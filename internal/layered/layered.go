// Package layered lets one layer report a lower layer's condition under its
// own sentinel without repeating it: "protocol: peer gone: the peer hung up",
// not "protocol: peer gone: transport: peer gone (ring: peer gone)".
package layered

import "strings"

// Wrap returns err, which matches below (a lower layer's sentinel), as an
// error that reads as ours followed by whatever err says beyond below's
// own text, and that matches ours, below and everything err matches.
func Wrap(ours, below, err error) error {
	detail := err.Error()
	if i := strings.Index(detail, below.Error()); i >= 0 {
		// Drop the lower sentinel's text and the separator after it.
		rest := strings.TrimLeft(detail[i+len(below.Error()):], ": ")
		rest = strings.TrimSuffix(strings.TrimPrefix(rest, "("), ")")
		detail = strings.TrimRight(detail[:i], ": ") + joinSep(detail[:i], rest)
	}
	return &layeredError{ours: ours, detail: strings.Trim(detail, ": "), err: err}
}

func joinSep(before, rest string) string {
	if strings.TrimRight(before, ": ") == "" || rest == "" {
		return rest
	}
	return ": " + rest
}

type layeredError struct {
	ours   error
	detail string
	err    error
}

func (e *layeredError) Error() string {
	if e.detail == "" {
		return e.ours.Error()
	}
	return e.ours.Error() + ": " + e.detail
}

// Unwrap makes errors.Is and errors.As see both ours and err.
func (e *layeredError) Unwrap() []error { return []error{e.ours, e.err} }
