package bench

import (
	"bytes"
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

// serveGoplugin is the go-plugin plugin process.
func serveGoplugin() int {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: gpHandshake,
		Plugins:         gpPlugins,
		GRPCServer:      goplugin.DefaultGRPCServer,
		Logger:          hclogger(),
	})
	return 0
}

// startGoplugin starts this binary as a go-plugin gRPC plugin and dispenses
// its Echo client; cleanup kills and reaps it.
func startGoplugin(tb testing.TB) *echoClient {
	tb.Helper()
	cmd := exec.Command(executable(tb), "-test.run=^$")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  gpHandshake,
		Plugins:          gpPlugins,
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		StartTimeout:     startTimeout,
		Logger:           hclogger(),
	})
	tb.Cleanup(c.Kill) // graceful, then killed after 2s; blocks until reaped
	rpc, err := c.Client()
	if err != nil {
		tb.Fatalf("go-plugin: %v", err)
	}
	raw, err := rpc.Dispense("echo")
	if err != nil {
		tb.Fatalf("go-plugin: dispense: %v", err)
	}
	return raw.(*echoClient)
}

func benchGoplugin(b *testing.B) {
	ec := startGoplugin(b)
	for _, sz := range sizes {
		b.Run("form=bytes/size="+sz.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), callBudget)
			defer cancel()
			req := payload(sz.n)
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			for b.Loop() {
				out, err := ec.Echo(ctx, req)
				if err != nil || len(out) != sz.n {
					b.Fatal(len(out), err)
				}
			}
		})
	}
	// The same 8 concurrent callers as ringwire's callers=8 (gRPC
	// multiplexes them on one HTTP/2 connection).
	b.Run("form=bytes/callers=8/size=10B", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), callBudget)
		defer cancel()
		req := payload(10)
		b.SetBytes(10)
		b.ReportAllocs()
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				out, err := ec.Echo(ctx, req)
				if err != nil || len(out) != 10 {
					b.Error(len(out), err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
}

func echoGoplugin(t *testing.T, req []byte) {
	ec := startGoplugin(t)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	out, err := ec.Echo(ctx, req)
	if err != nil || !bytes.Equal(out, req) {
		t.Fatalf("goplugin: %d bytes, %v", len(out), err)
	}
}
