package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	negotiate "github.com/ringwire/ringwire/internal/handshake"
)

// Cross-process benchmarks: the child is this test binary dialling the
// parent's listener. Each case runs in the same go test invocation as the
// hand-written length-prefix baselines (raw-unix, raw-tcp) it is compared to.
//
//	go test -run '^$' -bench 'RoundTrip|Throughput' -benchmem -count 6 ./transport

const (
	typeDone   = 0xFEFF // Throughput: the last message; the sink acknowledges it
	benchLimit = 2 * time.Minute
)

func init() {
	// sink counts messages until typeDone and then acknowledges.
	childRoles["sink"] = func(c Conn, err error) int {
		if err != nil {
			fmt.Fprintln(os.Stderr, "child: dial:", err)
			return 2
		}
		defer c.Close()
		for {
			m, err := c.Recv()
			if err != nil {
				return 0
			}
			done := m.Type == typeDone
			c.Release()
			if done {
				if err := c.Send(typeDone, nil); err != nil {
					return 0
				}
			}
		}
	}
	childRoles["rawecho"] = func(Conn, error) int { return rawChild(true) }
	childRoles["rawsink"] = func(Conn, error) int { return rawChild(false) }
}

// rawChild is the hand-written baseline peer: 4-byte little-endian length
// prefix, io.ReadFull, one writev (net.Buffers) per reply. A length of
// 0xFFFFFFFF ends a throughput run and is acknowledged with one byte.
func rawChild(echo bool) int {
	nc, err := net.Dial(os.Getenv(childNetEnv), os.Getenv(childAddrEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: dial:", err)
		return 2
	}
	defer nc.Close()
	var hdr [4]byte
	buf := make([]byte, 1<<20)
	for {
		if _, err := io.ReadFull(nc, hdr[:]); err != nil {
			return 0
		}
		n := binary.LittleEndian.Uint32(hdr[:])
		if n == 0xFFFFFFFF {
			if _, err := nc.Write([]byte{1}); err != nil {
				return 0
			}
			continue
		}
		if int(n) > len(buf) {
			fmt.Fprintln(os.Stderr, "child: oversized frame", n)
			return 3
		}
		if _, err := io.ReadFull(nc, buf[:n]); err != nil {
			return 0
		}
		if echo {
			bufs := net.Buffers{hdr[:], buf[:n]}
			if _, err := bufs.WriteTo(nc); err != nil {
				return 0
			}
		}
	}
}

var benchSizes = []int{10, 1 << 10, 64 << 10, 1 << 20}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return strconv.Itoa(n>>20) + "MiB"
	case n >= 1<<10:
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// benchTransports are the cases of the round-trip and throughput benchmarks.
var benchTransports = []struct {
	name string
	kind Kind
	tls  bool
	raw  bool
}{
	{"shm", KindShm, false, false},
	{"unix", KindUnix, false, false},
	{"raw-unix", KindUnix, false, true},
	{"tcp", KindTCP, false, false},
	{"raw-tcp", KindTCP, false, true},
	{"tcp+tls", KindTCP, true, false},
}

// benchConn starts a child of role for transport kind/tls and returns the
// parent's Conn.
func benchConn(b *testing.B, role string, kind Kind, withTLS bool) Conn {
	b.Helper()
	cfg := &Config{Logger: quietLogger}
	var spec childSpec
	var l *Listener
	if kind == KindTCP && !withTLS {
		cfg.InsecurePlaintextTCP, cfg.Compressions = true, []negotiate.Compression{}
		var err error
		if l, err = Listen("tcp", "127.0.0.1:0", cfg); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { l.Close() })
		spec = childSpec{Network: "tcp", Addr: l.Addr().String(), Comp: "-", Plain: true}
	} else {
		l, spec = listenCombo(b, combo{kind: kind}, cfg)
	}
	spec.Role = role
	startChild(b, spec)
	return accept(b, l, 10*time.Second)
}

var quietLogger = slog.New(slog.DiscardHandler)

// rawConn starts a raw baseline child of role and returns the parent's socket.
func rawConn(b *testing.B, role string, kind Kind) net.Conn {
	b.Helper()
	network, addr := "unix", unixAddr()
	if kind == KindTCP {
		network, addr = "tcp", "127.0.0.1:0"
	}
	nl, err := net.Listen(network, addr)
	if err != nil {
		b.Fatal(err)
	}
	defer nl.Close()
	startChild(b, childSpec{Role: role, Network: network, Addr: nl.Addr().String()})
	if d, ok := nl.(interface{ SetDeadline(time.Time) error }); ok {
		_ = d.SetDeadline(time.Now().Add(10 * time.Second))
	}
	nc, err := nl.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(benchLimit))
	return nc
}

// rawRoundTrip sends msg with a length prefix and reads the echo into echo.
func rawRoundTrip(nc net.Conn, msg, echo []byte) error {
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(len(msg)))
	bufs := net.Buffers{hdr[:], msg}
	if _, err := bufs.WriteTo(nc); err != nil {
		return err
	}
	if _, err := io.ReadFull(nc, hdr[:]); err != nil {
		return err
	}
	if int(binary.LittleEndian.Uint32(hdr[:])) != len(msg) {
		return errors.New("echo of the wrong length")
	}
	_, err := io.ReadFull(nc, echo[:len(msg)])
	return err
}

// BenchmarkRoundTrip measures one message to an echoing child process and
// back, per transport and size. ns/op is the round trip.
func BenchmarkRoundTrip(b *testing.B) {
	for _, tr := range benchTransports {
		for _, size := range benchSizes {
			b.Run("transport="+tr.name+"/size="+sizeName(size), func(b *testing.B) {
				msg := make([]byte, size)
				if tr.raw {
					nc := rawConn(b, "rawecho", tr.kind)
					echo := make([]byte, size)
					for range 100 {
						if err := rawRoundTrip(nc, msg, echo); err != nil {
							b.Fatal(err)
						}
					}
					b.SetBytes(int64(2 * size))
					b.ReportAllocs()
					b.ResetTimer()
					for range b.N {
						if err := rawRoundTrip(nc, msg, echo); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				c := benchConn(b, "echo", tr.kind, tr.tls)
				_ = c.SetReadDeadline(time.Now().Add(benchLimit))
				_ = c.SetWriteDeadline(time.Now().Add(benchLimit))
				once := func() {
					if err := c.Send(1, msg); err != nil {
						b.Fatal(err)
					}
					m, err := c.Recv()
					if err != nil {
						b.Fatal(err)
					}
					if len(m.Data) != size {
						b.Fatalf("echo of %d bytes", len(m.Data))
					}
					c.Release()
				}
				for range 1000 {
					once()
				}
				b.SetBytes(int64(2 * size))
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					once()
				}
			})
		}
	}
}

// BenchmarkThroughput measures one-way streaming to a child that only
// counts; the run ends with a message the child acknowledges, so every byte
// has arrived when the timer stops.
func BenchmarkThroughput(b *testing.B) {
	for _, tr := range benchTransports {
		for _, size := range benchSizes {
			b.Run("transport="+tr.name+"/size="+sizeName(size), func(b *testing.B) {
				msg := make([]byte, size)
				if tr.raw {
					nc := rawConn(b, "rawsink", tr.kind)
					var hdr [4]byte
					binary.LittleEndian.PutUint32(hdr[:], uint32(size))
					end := []byte{0xff, 0xff, 0xff, 0xff}
					var ack [1]byte
					b.SetBytes(int64(size))
					b.ReportAllocs()
					b.ResetTimer()
					for range b.N {
						bufs := net.Buffers{hdr[:], msg}
						if _, err := bufs.WriteTo(nc); err != nil {
							b.Fatal(err)
						}
					}
					if _, err := nc.Write(end); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(nc, ack[:]); err != nil {
						b.Fatal(err)
					}
					return
				}
				c := benchConn(b, "sink", tr.kind, tr.tls)
				_ = c.SetReadDeadline(time.Now().Add(benchLimit))
				_ = c.SetWriteDeadline(time.Now().Add(benchLimit))
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if err := c.Send(1, msg); err != nil {
						b.Fatal(err)
					}
				}
				if err := c.Send(typeDone, nil); err != nil {
					b.Fatal(err)
				}
				m, err := c.Recv()
				if err != nil || m.Type != typeDone {
					b.Fatalf("no acknowledgement: %v", err)
				}
				c.Release()
			})
		}
	}
}
