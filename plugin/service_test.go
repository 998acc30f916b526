package plugin

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ringwire/ringwire/internal/handshake"
	"github.com/ringwire/ringwire/internal/rpc"
)

func TestMethodTable(t *testing.T) {
	var ms []rpc.MethodInfo
	for i := range 300 { // more than one constant's worth
		ms = append(ms, rpc.MethodInfo{Name: fmt.Sprintf("method%03d", i), Signature: "json:api.Request -> json:api.Reply"})
	}
	ms = append(ms, rpc.MethodInfo{Name: "untyped"})
	c := map[string]string{}
	putTable(c, servesKey, ms)
	if len(c) < 3 {
		t.Errorf("%d constants for %d methods", len(c), len(ms))
	}
	for k, v := range c {
		if len(v) > handshake.MaxConstantValue {
			t.Errorf("%s holds %d bytes", k, len(v))
		}
	}
	got, ok, err := table(c, servesKey)
	if err != nil || !ok || len(got) != len(ms) {
		t.Fatalf("table: %d methods, %v, %v", len(got), ok, err)
	}
	for i := range ms {
		if got[i] != ms[i] {
			t.Fatalf("method %d: %+v, want %+v", i, got[i], ms[i])
		}
	}
	if _, ok, _ := table(c, needsKey); ok {
		t.Error("a table under another prefix")
	}
	c[servesKey+"0"] = "no tab here\n"
	if _, _, err := table(c, servesKey); err == nil || !strings.Contains(err.Error(), "malformed method table entry") {
		t.Errorf("malformed table: %v", err)
	}
}

func TestAcceptsVersion(t *testing.T) {
	for _, c := range []struct {
		host, versions, plugin string
		ok                     bool
		err                    string
	}{
		{"1.2.0", "", "1.0.0", true, ""},
		{"1.2.0", "", "1.9.3", true, ""},
		{"1.2.0", "", "2.0.0", false, ""},
		{"1.2.0", "", "v1.3.0-rc1", true, ""},
		{"1.2.0", ">=1.2 <2", "1.1.9", false, ""},
		{"1.2.0", ">=1.2 <2", "1.2", true, ""},
		{"1.2.0", ">=1.2, <2", "2.0.0", false, ""},
		{"1.2.0", "=1.4.1", "1.4.1", true, ""},
		{"1.2.0", ">1.4 <=1.5", "1.5.0", true, ""},
		{"1.2.0", "~1.4", "1.4.0", false, `unknown comparison "~"`},
		{"1.2.0", "", "one", false, `version "one" is not MAJOR.MINOR.PATCH`},
		{"dev", "", "dev", true, ""},
	} {
		ok, err := acceptsVersion(declaration{version: c.host, versions: c.versions}, c.plugin)
		if ok != c.ok || (err == nil) != (c.err == "") || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("host %s %q, plugin %s: %v, %v; want %v, %q", c.host, c.versions, c.plugin, ok, err, c.ok, c.err)
		}
	}
}
