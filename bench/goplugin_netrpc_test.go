package bench

import (
	"context"
	"net/rpc"
	"os"
	"testing"

	goplugin "github.com/hashicorp/go-plugin"
)

// go-plugin with its original protocol, net/rpc (gob over a yamux stream on
// the Unix socket go-plugin sets up), serving the same Echo:
//
//	impl=goplugin-netrpc/form=call  the RPC server's Echo(args []byte, reply
//	    *[]byte) sets the reply to its request (gob has already decoded it
//	    into a new slice), as the gRPC form returns its request; the client
//	    gets a new slice per call (gob decodes into it).
//
// One child serves both protocols: go-plugin picks the protocol of a plugin
// set by the set's plugin type (GRPCPlugin or not), and the set by the
// protocol versions the client offers (PLUGIN_PROTOCOL_VERSIONS). So the
// child serves VersionedPlugins {1: the gRPC set, 2: the net/rpc set}, the
// gRPC host offers version 1 (gpHandshake) and this host version 2.
const gpNetRPCVersion = 2

var gpNetRPCPlugins = goplugin.PluginSet{"echo": echoNetRPCPlugin{}}

// gpVersionedPlugins is what the go-plugin child serves.
func gpVersionedPlugins() map[int]goplugin.PluginSet {
	return map[int]goplugin.PluginSet{int(gpHandshake.ProtocolVersion): gpPlugins, gpNetRPCVersion: gpNetRPCPlugins}
}

// echoRPCServer is the net/rpc receiver (go-plugin registers it as
// "Plugin").
type echoRPCServer struct{}

func (echoRPCServer) Echo(args []byte, reply *[]byte) error {
	*reply = args
	return nil
}

// Pid tells the host which process serves it (checked once at start).
func (echoRPCServer) Pid(_ int, reply *int) error {
	*reply = os.Getpid()
	return nil
}

// echoRPCClient is what the host dispenses.
type echoRPCClient struct{ c *rpc.Client }

// call makes one net/rpc call bounded by ctx: net/rpc has no context, so the
// call is started with Go and abandoned (its reply discarded when it comes)
// if ctx ends first. Client.Call itself is Go plus a wait on a new Done
// channel, so this allocates what Call does.
func (e *echoRPCClient) call(ctx context.Context, method string, args, reply any) error {
	call := e.c.Go(method, args, reply, make(chan *rpc.Call, 1))
	select {
	case <-call.Done:
		return call.Error
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *echoRPCClient) Echo(ctx context.Context, req []byte) ([]byte, error) {
	var out []byte
	if err := e.call(ctx, "Plugin.Echo", req, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// echoNetRPCPlugin is the go-plugin (net/rpc) Plugin of the Echo service.
type echoNetRPCPlugin struct{}

func (echoNetRPCPlugin) Server(*goplugin.MuxBroker) (any, error) { return echoRPCServer{}, nil }

func (echoNetRPCPlugin) Client(_ *goplugin.MuxBroker, c *rpc.Client) (any, error) {
	return &echoRPCClient{c: c}, nil
}

func init() {
	register(contender{impl: "goplugin-netrpc", form: "call", start: startGopluginNetRPC})
}

// startGopluginNetRPC starts this binary as a go-plugin net/rpc plugin,
// dispenses its Echo client and checks the serving pid; cleanup kills and
// reaps it.
func startGopluginNetRPC(tb testing.TB) *target {
	tb.Helper()
	hs := gpHandshake
	hs.ProtocolVersion = gpNetRPCVersion
	raw, childPid := launchGoplugin(tb, hs, gpNetRPCPlugins, goplugin.ProtocolNetRPC)
	ec, ok := raw.(*echoRPCClient)
	if !ok {
		tb.Fatalf("go-plugin net/rpc: dispensed %T", raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var pid int
	if err := ec.call(ctx, "Plugin.Pid", 0, &pid); err != nil {
		tb.Fatalf("go-plugin net/rpc: pid: %v", err)
	}
	if pid != childPid {
		tb.Fatalf("go-plugin net/rpc: served by pid %d, started %d", pid, childPid)
	}
	return echoTarget([]int{pid}, ec.Echo)
}
