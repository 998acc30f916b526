package transport

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	negotiate "github.com/ringwire/ringwire/internal/handshake"
)

// netTestCase is one transport NetConn runs over in TestNetTest.
type netTestCase struct {
	name string // the subtest's kind= value
	kind Kind
	comp negotiate.Compression
}

var netTestCases = []netTestCase{
	{"shm", KindShm, negotiate.CompressionNone},
	{"unix", KindUnix, negotiate.CompressionNone},
	{"tcp-none", KindTCP, negotiate.CompressionNone},
	{"tcp-lz4", KindTCP, negotiate.CompressionLZ4},
	{"tcp-zstd", KindTCP, negotiate.CompressionZstd},
}

// TestNetTest runs golang.org/x/net/nettest.TestConn, the net.Conn
// conformance suite, on NetConn over each real transport, with c1 first the
// dialler's end and then the acceptor's. Each pair has a listener of its
// own; once a transport's suite is done, every goroutine and descriptor it
// used must be gone.
func TestNetTest(t *testing.T) {
	authority := ca(t)
	for _, tc := range netTestCases {
		t.Run("kind="+tc.name, func(t *testing.T) {
			for _, order := range []string{"dialler-first", "acceptor-first"} {
				t.Run("order="+order, func(t *testing.T) {
					checkNoLeak(t)
					nettest.TestConn(t, netTestPipe(authority, tc, order == "acceptor-first"))
				})
			}
		})
	}
}

// netTestPipe returns a nettest.MakePipe that listens, dials and accepts a
// fresh connection of tc's transport and wraps both ends in NetConn. c1 is
// the acceptor's end when acceptorFirst, the dialler's otherwise. stop closes
// both ends and the listener, which waits for its goroutines; the pipe's own
// goroutines have ended when it returns.
func netTestPipe(authority *CA, tc netTestCase, acceptorFirst bool) nettest.MakePipe {
	return func() (c1, c2 net.Conn, stop func(), err error) {
		comps := []negotiate.Compression{}
		if tc.comp != negotiate.CompressionNone {
			comps = []negotiate.Compression{tc.comp}
		}
		lcfg := &Config{Name: "acceptor", Logger: quietLogger, Compressions: comps}
		dcfg := &Config{Name: "dialler", Logger: quietLogger, Compressions: comps}
		network, addr := "unix", unixAddr()
		switch tc.kind {
		case KindShm:
			lcfg.Mode, dcfg.Mode = ModeShm, ModeShm
		case KindUnix:
			lcfg.Mode, dcfg.Mode = ModeFramed, ModeFramed
		case KindTCP:
			network, addr = "tcp", "127.0.0.1:0"
			if lcfg.TLS, err = authority.ServerConfig("acceptor", "127.0.0.1"); err != nil {
				return nil, nil, nil, err
			}
			if dcfg.TLS, err = authority.ClientConfig("dialler", "127.0.0.1"); err != nil {
				return nil, nil, nil, err
			}
		}
		l, err := Listen(network, addr, lcfg)
		if err != nil {
			return nil, nil, nil, err
		}
		type result struct {
			c   Conn
			err error
		}
		accepted := make(chan result, 1)
		go func() {
			c, err := l.Accept()
			accepted <- result{c, err}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d, err := Dial(ctx, network, l.Addr().String(), dcfg)
		if err != nil {
			l.Close() // ends the pending Accept
			if a := <-accepted; a.c != nil {
				a.c.Close()
			}
			return nil, nil, nil, err
		}
		var a result
		select {
		case a = <-accepted:
		case <-ctx.Done():
			l.Close()
			a = <-accepted
		}
		if a.err != nil {
			d.Close()
			l.Close()
			return nil, nil, nil, fmt.Errorf("accept: %w", a.err)
		}
		if err := netTestCheckInfo(tc, d.Info(), a.c.Info()); err != nil {
			d.Close()
			a.c.Close()
			l.Close()
			return nil, nil, nil, err
		}
		c1, c2 = NetConn(d), NetConn(a.c)
		if acceptorFirst {
			c1, c2 = c2, c1
		}
		stop = func() {
			c1.Close()
			c2.Close()
			l.Close()
		}
		return c1, c2, stop, nil
	}
}

// netTestCheckInfo checks that both ends negotiated tc's transport.
func netTestCheckInfo(tc netTestCase, infos ...Info) error {
	for _, info := range infos {
		if info.Kind != tc.kind || info.Compression != tc.comp.String() || info.TLS != (tc.kind == KindTCP) {
			return fmt.Errorf("negotiated %v, compression %q, TLS %v; want %v, %q, TLS %v",
				info.Kind, info.Compression, info.TLS, tc.kind, tc.comp, tc.kind == KindTCP)
		}
	}
	return nil
}

// checkNoLeak records how many goroutines and descriptors the process has
// and, when t ends, fails it unless both are back to at most that within a
// few seconds (goroutines nettest starts end once their connection closes).
func checkNoLeak(t *testing.T) {
	t.Helper()
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	t.Cleanup(func() {
		var g, f int
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			g, f = runtime.NumGoroutine(), openFDs(t)
			if g <= goroutines && f <= fds || time.Now().After(end) {
				break
			}
		}
		if g > goroutines {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines left, %d before:\n%s", g, goroutines, buf[:runtime.Stack(buf, true)])
		}
		if f > fds {
			t.Errorf("%d descriptors open, %d before", f, fds)
		}
	})
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
