package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
)

// The go-plugin comparison: hashicorp/go-plugin with its gRPC protocol, an
// Echo service declared by hand (no protoc) whose messages are the raw bytes
// themselves (rawCodec): go-plugin's transport (gRPC, HTTP/2 on a Unix
// socket) without any protobuf encoding cost, its best case for bytes.

var gpHandshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "RINGWIRE_BENCH_GOPLUGIN",
	MagicCookieValue: "echo-v1",
}

var gpPlugins = goplugin.PluginSet{"echo": echoGRPCPlugin{}}

// rawCodec passes []byte messages through untouched: Marshal returns the
// caller's slice, Unmarshal keeps the buffer gRPC hands it (a fresh copy of
// the message for a V1 codec). Selected per call by content subtype.
type rawCodec struct{}

const rawCodecName = "ringwire-bench-raw"

func (rawCodec) Name() string { return rawCodecName }

func (rawCodec) Marshal(v any) ([]byte, error) {
	p, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *p, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*p = data
	return nil
}

func init() { encoding.RegisterCodec(rawCodec{}) }

// echoService is the server side of the hand-declared bench.Echo service.
type echoService interface {
	Echo(ctx context.Context, req []byte) ([]byte, error)
}

type echoServer struct{}

func (echoServer) Echo(_ context.Context, req []byte) ([]byte, error) { return req, nil }

const echoMethod = "/ringwire.bench.Echo/Echo"

var echoServiceDesc = grpc.ServiceDesc{
	ServiceName: "ringwire.bench.Echo",
	HandlerType: (*echoService)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, req any) (any, error) {
				out, err := srv.(echoService).Echo(ctx, *req.(*[]byte))
				return &out, err
			}
			if icpt == nil {
				return h(ctx, &in)
			}
			return icpt(ctx, &in, &grpc.UnaryServerInfo{Server: srv, FullMethod: echoMethod}, h)
		},
	}},
	Metadata: "ringwire/bench",
}

// echoClient is what the host dispenses.
type echoClient struct{ cc *grpc.ClientConn }

var rawSubtype = grpc.CallContentSubtype(rawCodecName)

func (c *echoClient) Echo(ctx context.Context, req []byte) ([]byte, error) {
	var out []byte
	err := c.cc.Invoke(ctx, echoMethod, &req, &out, rawSubtype)
	return out, err
}

// echoGRPCPlugin is the go-plugin GRPCPlugin of the Echo service.
type echoGRPCPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
}

func (echoGRPCPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&echoServiceDesc, echoServer{})
	return nil
}

func (echoGRPCPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	return &echoClient{cc: cc}, nil
}

func hclogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "goplugin", Level: hclog.Warn, Output: os.Stderr})
}

// serveGoplugin is the go-plugin plugin process: gRPC or net/rpc, as the
// host's protocol version asks (see goplugin_netrpc_test.go).
func serveGoplugin() int {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  gpHandshake,
		VersionedPlugins: gpVersionedPlugins(),
		GRPCServer:       goplugin.DefaultGRPCServer,
		Logger:           hclogger(),
	})
	return 0
}

func init() {
	register(contender{impl: "goplugin-grpc", form: "call", start: startGopluginTarget})
}

// launchGoplugin starts this binary as a go-plugin plugin speaking proto
// at protocol version (hs) and dispenses its "echo" plugin; cleanup kills and
// reaps it. It returns the dispensed client and the plugin's pid.
func launchGoplugin(tb testing.TB, hs goplugin.HandshakeConfig, plugins goplugin.PluginSet, proto goplugin.Protocol) (any, int) {
	tb.Helper()
	cmd := exec.Command(executable(tb), "-test.run=^$")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  hs,
		Plugins:          plugins,
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{proto},
		StartTimeout:     startTimeout,
		Logger:           hclogger(),
	})
	tb.Cleanup(c.Kill) // graceful, then killed after 2s; blocks until reaped
	rpcc, err := c.Client()
	if err != nil {
		tb.Fatalf("go-plugin %s: %v", proto, err)
	}
	if p := c.NegotiatedVersion(); p != int(hs.ProtocolVersion) {
		tb.Fatalf("go-plugin %s: negotiated protocol version %d, want %d", proto, p, hs.ProtocolVersion)
	}
	raw, err := rpcc.Dispense("echo")
	if err != nil {
		tb.Fatalf("go-plugin %s: dispense: %v", proto, err)
	}
	return raw, cmd.Process.Pid
}

// startGoplugin starts the gRPC form and returns its Echo client and pid.
func startGoplugin(tb testing.TB) (*echoClient, int) {
	raw, pid := launchGoplugin(tb, gpHandshake, gpPlugins, goplugin.ProtocolGRPC)
	ec, ok := raw.(*echoClient)
	if !ok {
		tb.Fatalf("go-plugin gRPC: dispensed %T", raw)
	}
	return ec, pid
}

// startGopluginTarget: the server's handler returns its request (gRPC has
// already copied it out of the connection); the client gets a new slice per
// call.
func startGopluginTarget(tb testing.TB) *target {
	ec, pid := startGoplugin(tb)
	return echoTarget([]int{pid}, ec.Echo)
}
