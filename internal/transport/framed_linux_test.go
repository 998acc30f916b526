package transport

import (
	"net"
	"strings"
	"testing"
)

// TestFramedNetConnAddrs: NetConn over a framed connection reports the
// socket's addresses. Over TCP (inside TLS) both ends are 127.0.0.1:port
// pairs that mirror each other; over Unix the listener's end is the socket
// path.
func TestFramedNetConnAddrs(t *testing.T) {
	t.Run("kind=tcp", func(t *testing.T) {
		a, b := realPair(t, KindTCP) // dialler, listener
		ca, cb := NetConn(a), NetConn(b)
		for _, addr := range []net.Addr{ca.LocalAddr(), ca.RemoteAddr(), cb.LocalAddr(), cb.RemoteAddr()} {
			ta, ok := addr.(*net.TCPAddr)
			if !ok || !ta.IP.Equal(net.IPv4(127, 0, 0, 1)) || ta.Port == 0 {
				t.Fatalf("address %v (%T), want 127.0.0.1 and a port", addr, addr)
			}
		}
		if ca.LocalAddr().String() != cb.RemoteAddr().String() || ca.RemoteAddr().String() != cb.LocalAddr().String() {
			t.Fatalf("dialler %v -> %v, listener %v -> %v: the ends do not mirror each other",
				ca.LocalAddr(), ca.RemoteAddr(), cb.LocalAddr(), cb.RemoteAddr())
		}
		if ca.LocalAddr().Network() != "tcp" {
			t.Fatalf("Network() = %q", ca.LocalAddr().Network())
		}
	})
	t.Run("kind=unix", func(t *testing.T) {
		a, b := realPair(t, KindUnix)
		ca, cb := NetConn(a), NetConn(b)
		path := cb.LocalAddr().String()
		if !strings.HasPrefix(path, "@ringwire-test-") || cb.LocalAddr().Network() != "unix" {
			t.Fatalf("listener's local address %q (%s), want the socket path", path, cb.LocalAddr().Network())
		}
		if got := ca.RemoteAddr().String(); got != path {
			t.Fatalf("dialler's remote address %q, want the socket path %q", got, path)
		}
		t.Logf("dialler %q -> %q, listener %q -> %q", ca.LocalAddr(), ca.RemoteAddr(), cb.LocalAddr(), cb.RemoteAddr())
	})
}
