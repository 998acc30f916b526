//go:build linux

package plugin_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/transport"
	"github.com/ringwire/ringwire/plugin"
)

// A "text" service in three versions: 1.1 (upper, greet), 1.2 (adds
// shout) and 2.0; svcUpperJSON is upper with another signature.
type greeting struct {
	Name string `json:"name"`
}

var (
	svcUpper     = rpc.NewMethod("upper", rpc.Raw(), rpc.Raw())
	svcGreet     = rpc.NewMethod("greet", rpc.JSON[greeting](), rpc.JSON[greeting]())
	svcShout     = rpc.NewMethod("shout", rpc.Raw(), rpc.Raw())
	svcUpperJSON = rpc.NewMethod("upper", rpc.JSON[greeting](), rpc.Raw())

	textV11 = rpc.NewService("text", "1.1.0", svcUpper, svcGreet)
	textV12 = rpc.NewService("text", "1.2.0", svcUpper, svcGreet, svcShout)
)

func init() {
	roles["text1.1"] = func() int { return serve(textPlugin("1.1.0", false)) }
	roles["text1.2"] = func() int { return serve(textPlugin("1.2.0", true)) }
	roles["text2.0"] = func() int { return serve(textPlugin("2.0.0", true)) }
	roles["textother"] = func() int {
		p := textPlugin("1.2.0", true)
		p.Service = rpc.NewService("math", "1.2.0", svcUpper, svcGreet, svcShout)
		return serve(p)
	}
	roles["textsig"] = func() int {
		m := rpc.NewMux()
		svcUpperJSON.Handle(m, func(_ context.Context, g greeting) ([]byte, error) { return []byte(strings.ToUpper(g.Name)), nil })
		svcGreet.Handle(m, greet)
		return serve(&plugin.Plugin{Name: "text", Version: "1.1.0", Mux: m, Service: rpc.NewService("text", "1.1.0", svcUpperJSON, svcGreet)})
	}
	// textflip serves 1.2 and crashes the first time (creating the file
	// flipEnv names), then serves 1.1 only.
	roles["textflip"] = func() int {
		f := os.Getenv(flipEnv)
		if _, err := os.Stat(f); err == nil {
			return serve(textPlugin("1.1.0", false))
		}
		os.WriteFile(f, nil, 0o600)
		time.AfterFunc(150*time.Millisecond, func() { os.Exit(3) })
		return serve(textPlugin("1.2.0", true))
	}
}

const flipEnv = "RINGWIRE_PLUGIN_TEST_FLIP"

func greet(_ context.Context, g greeting) (greeting, error) {
	return greeting{Name: "hello, " + g.Name}, nil
}

func textPlugin(version string, shout bool) *plugin.Plugin {
	m := rpc.NewMux()
	svcUpper.Handle(m, func(_ context.Context, b []byte) ([]byte, error) { return []byte(strings.ToUpper(string(b))), nil })
	svcGreet.Handle(m, greet)
	svc := rpc.NewService("text", version, svcUpper, svcGreet)
	if shout {
		svcShout.Handle(m, func(_ context.Context, b []byte) ([]byte, error) {
			return []byte(strings.ToUpper(string(b)) + "!"), nil
		})
		svc = rpc.NewService("text", version, svcUpper, svcGreet, svcShout)
	}
	return &plugin.Plugin{Name: "text", Version: version, Mux: m, Service: svc}
}

// textConfig launches role for a host that needs svc.
func textConfig(role string, svc *rpc.Service, env ...string) *plugin.Config {
	cfg := pluginConfig(role, env...)
	cfg.Service = svc
	return cfg
}

// An older host works with a newer plugin that serves more, and sees what
// the plugin serves in Info.
func TestServiceSuperset(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := plugin.Launch(ctx, textConfig("text1.2", textV11))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in := c.Info()
	if in.Service != "text" || in.ServiceVersion != "1.2.0" || len(in.Methods) != 3 {
		t.Errorf("Info: service %q %q, methods %v; want text 1.2.0 and 3 methods", in.Service, in.ServiceVersion, in.Methods)
	}
	want := "greet(json:plugin_test.greeting -> json:plugin_test.greeting) shout(raw -> raw) upper(raw -> raw)"
	if got := strings.Join(in.Methods, " "); got != want {
		t.Errorf("Info.Methods = %s\nwant %s", got, want)
	}
	for k := range in.Constants {
		if strings.HasPrefix(k, "ringwire.") {
			t.Errorf("Info.Constants shows the reserved key %q", k)
		}
	}
	g, err := svcGreet.Call(ctx, c, greeting{Name: "ana"})
	if err != nil || g.Name != "hello, ana" {
		t.Fatalf("greet = %+v, %v", g, err)
	}
	u, err := svcUpper.Call(ctx, c, []byte("abc"))
	if err != nil || string(u) != "ABC" {
		t.Fatalf("upper = %q, %v", u, err)
	}

	// And the same plugin through a Client, which is a Caller too.
	s, err := plugin.Launch(ctx, textConfig("text1.2", textV12))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(ctx)
	if sh, err := svcShout.Call(ctx, s, []byte("hey")); err != nil || string(sh) != "HEY!" {
		t.Fatalf("shout through a Client = %q, %v", sh, err)
	}
}

// TestForeignContract: a peer whose handshake presents another contract
// than the plugin runtime's is not a plugin of this version, and the error
// says so.
func TestForeignContract(t *testing.T) {
	l, err := transport.Listen("tcp", "127.0.0.1:0", &transport.Config{Contract: []byte("foreign"), InsecurePlaintextTCP: true, Logger: childOutput})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := plugin.Connect(ctx, "tcp", l.Addr().String(), &plugin.Config{Name: "foreign", Logger: childOutput,
		Transport: transport.Config{InsecurePlaintextTCP: true}})
	if err == nil {
		c.Close()
		t.Fatal("Connect succeeded")
	}
	want := `plugin "foreign": connect: negotiate: contract mismatch`
	hint := "(the other side is not a ringwire plugin or host of this version: rebuild it with this one)"
	if !errors.Is(err, plugin.ErrContractMismatch) || !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), hint) {
		t.Errorf("Connect = %v\nwant ErrContractMismatch, starting %q and ending %q", err, want, hint)
	}
}

func TestServiceMismatch(t *testing.T) {
	for _, c := range []struct {
		name, role string
		svc        *rpc.Service
		versions   string
		want       string
	}{
		{"missing method", "text1.1", textV12, "",
			"contract mismatch: the plugin (text 1.1.0) does not serve what the host (text 1.2.0) needs: missing on the plugin: shout(raw -> raw)"},
		{"version range", "text1.1", textV11, ">=1.2 <2",
			"contract mismatch: the host (text 1.1.0) accepts plugin versions >=1.2 <2, the plugin serves text 1.1.0"},
		{"major version", "text2.0", textV11, "",
			"contract mismatch: the host (text 1.1.0) accepts plugin versions >=1.0.0 <2.0.0, the plugin serves text 2.0.0"},
		{"other service", "textother", textV11, "",
			`contract mismatch: the host needs service "text", the plugin serves "math"`},
		{"signature", "textsig", textV11, "",
			"contract mismatch: the plugin (text 1.1.0) does not serve what the host (text 1.1.0) needs: other signature: upper (host raw -> raw, plugin json:plugin_test.greeting -> raw)"},
		{"no service", "echo", textV11, "",
			"contract mismatch: the plugin declares no service (the host needs text 1.1.0)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cfg := textConfig(c.role, c.svc)
			cfg.Versions = c.versions
			start := time.Now()
			cl, err := plugin.Launch(ctx, cfg)
			if err == nil {
				cl.Close()
				t.Fatal("Launch succeeded")
			}
			if !errors.Is(err, plugin.ErrContractMismatch) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Launch: %v\nwant ErrContractMismatch saying %q", err, c.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("refusal took %v", d)
			}
		})
	}
}

// A plugin whose Mux lacks a method of its own Service does not start.
func TestServiceUnimplemented(t *testing.T) {
	p := textPlugin("1.2.0", false)
	p.Service = textV12
	err := plugin.Serve(context.Background(), p)
	if !errors.Is(err, plugin.ErrConfig) || !strings.Contains(err.Error(), "service text 1.2.0: no handler for shout") {
		t.Errorf("Serve = %v, want ErrConfig naming the missing handler", err)
	}
}

// A Session does not retry a permanent refusal: the plugin binary became
// incompatible while it ran.
func TestSessionPermanentRefusal(t *testing.T) {
	flip := filepath.Join(t.TempDir(), "flipped")
	cfg := textConfig("textflip", textV12, flipEnv+"="+flip)
	cfg.MaxRestarts = 5
	cfg.Backoff = 20 * time.Millisecond
	cfg.HealthInterval = -1
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := plugin.Launch(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(ctx)
	st := waitState(t, s, "failed", 15*time.Second)
	if st.Restarts != 1 {
		t.Errorf("%d restarts, want 1 (the refusal is not retried)", st.Restarts)
	}
	if !errors.Is(st.LastErr, plugin.ErrUnavailable) || !errors.Is(st.LastErr, plugin.ErrContractMismatch) ||
		!strings.Contains(st.LastErr.Error(), "not restarted again, the refusal is permanent") {
		t.Errorf("LastErr = %v", st.LastErr)
	}
}

// Config.Intercept sees every call the host makes, typed or not, with
// its method name; its verdict is the call's.
func TestConfigIntercept(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var calls []string
	cfg := textConfig("text1.2", textV12)
	cfg.Intercept = []rpc.ClientInterceptor{func(ctx context.Context, method string, req []byte, call func(context.Context) error) error {
		calls = append(calls, method+" "+string(req))
		if method == "shout" {
			return rpc.Errorf(rpc.CodePermissionDenied, "no shouting")
		}
		return call(ctx)
	}}
	c, err := plugin.Launch(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if u, err := svcUpper.Call(ctx, c, []byte("a")); err != nil || string(u) != "A" {
		t.Fatalf("upper = %q, %v", u, err)
	}
	if _, err := svcShout.Call(ctx, c, []byte("b")); err == nil || !strings.Contains(err.Error(), "no shouting") {
		t.Fatalf("shout: %v, want the interceptor's refusal", err)
	}
	if strings.Join(calls, ",") != "upper a,shout b" {
		t.Errorf("intercepted %q", calls)
	}
}
