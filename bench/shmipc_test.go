package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudwego/shmipc-go"
)

// cloudwego/shmipc-go (v0.2.0): shared-memory buffers and queues set up by
// its session protocol over a Unix socket. The child listens on a Unix
// socket in its own temp dir and serves every accepted connection with
// shmipc.Server; the host connects with a shmipc.SessionManager (the
// library's client API) and gives each caller its own Stream of the one
// session, which is how shmipc multiplexes. A message is a 4-byte
// little-endian length prefix and the payload, echoed.
//
//	impl=shmipc-default/form=call  the documented defaults (DefaultConfig,
//	    DefaultSessionManagerConfig as the README shows: 32 MiB in a
//	    /dev/shm file, slices of about 8, 32 and 128 KiB) used as its README
//	    and examples do: BufferWriter().Reserve(4) for the prefix and
//	    WriteBytes (a copy into shared memory, spanning as many slices as it
//	    takes), Flush, BufferReader().ReadBytes (zero-copy inside one slice,
//	    a copy into a new slice when the message spans slices) and
//	    ReleasePreviousRead. Form call: the server's handler builds its reply
//	    in a new slice, and the client copies each reply out of shared memory
//	    into a new slice (a ReadBytes result is only valid until
//	    ReleasePreviousRead).
//	impl=shmipc-tuned/form=into  tuned as shmipc's own bench_test.go tunes
//	    it (memfd mapping, a 65535-entry queue, 1 s write timeout, slice
//	    sizes chosen so every message fits one slice: 64 MiB with slices of
//	    16 KiB, 128 KiB and 1 MiB + 4 KiB) and used as it does: one
//	    Reserve(4+n) per message, zero-copy ReadBytes, the server's
//	    ReleasePreviousRead and the client's ReleaseReadAndReuse (the reply's
//	    slice becomes the next request's). Form into: nothing is allocated in
//	    the steady state; the server copies the request from its shared
//	    memory slice into the reply's, and the client copies the reply into a
//	    buffer it reuses.
//
// Waits: a call sets the stream's deadline (SetDeadline, read and write) to
// the context's, which bounds the wait for the reply and Flush's retries
// when the queue is full; the wake-up of the peer goes through the session's
// send loop, bounded by ConnectionWriteTimeout. The session's start is
// bounded by InitializeTimeout and its dial by ConnectionWriteTimeout.
//
// Shared memory: the default configuration maps files under /dev/shm named
// from ShareMemoryPathPrefix (plus the host's pid); each instance gets its
// own directory under /dev/shm as its prefix, so several instances
// (plugins4) do not collide, and the directory is removed when the instance
// stops (shmipc itself unmaps and unlinks asynchronously, on its event loop).
// The tuned configuration uses memfd: no file at all, the descriptors are
// passed over the socket; its prefix (only a name there) is unique too.
//
// Stopping: the host closes its SessionManager, then the child's stdin; the
// child closes its sessions and exits. shmipc runs a session's close on its
// event loop, which looks at posted work at least once a second, so the
// socket itself may close after the child has exited; nothing waits on it.
// A caller's stream lives until its instance stops (a call leaves at most
// one slice held by it).
const (
	shmipcConfEnv = "RINGWIRE_BENCH_SHMIPC_CONF" // "default" or "tuned"
	shmipcFormEnv = "RINGWIRE_BENCH_SHMIPC_FORM" // "call" or "into"
	shmipcReady   = "SHMIPC_LISTENING"
	// shmipcNoLog is shmipc's level "print nothing" (its levels are
	// unexported), which its bench_test.go sets too: its internal logger
	// writes to stdout, with a warning per closed session and an error
	// when a session ends by a reset (as one of the two sides sees when
	// both close at once). Errors of calls are returned and reported; set
	// SHMIPC_LOG_LEVEL (0 trace ... 4 error) to see its log.
	shmipcNoLog = 5
)

func init() {
	roles["shmipc"] = serveShmipc
	for _, c := range []struct{ conf, form string }{{"default", "call"}, {"tuned", "into"}} {
		register(contender{impl: "shmipc-" + c.conf, form: c.form, start: func(tb testing.TB) *target {
			return startShmipc(tb, c.conf, c.form)
		}})
	}
	if os.Getenv("SHMIPC_LOG_LEVEL") == "" {
		shmipc.SetLogLevel(shmipcNoLog)
	}
}

// shmipcConfig is the session configuration of conf, for both sides (the
// client's decides the shared memory; the server maps what it is sent).
func shmipcConfig(conf string) *shmipc.Config {
	c := shmipc.DefaultConfig()
	c.LogOutput = os.Stderr // the sessions' own log (stdout is the harness's)
	if conf == "tuned" {
		c.QueueCap = 65535
		c.ConnectionWriteTimeout = time.Second
		c.ShareMemoryBufferCap = 64 << 20
		c.MemMapType = shmipc.MemMapTypeMemFd
		c.BufferSliceSizes = []*shmipc.SizePercentPair{
			{Size: 16 << 10, Percent: 25},      // 10B and 1KiB messages (about 1000 slices)
			{Size: 128 << 10, Percent: 25},     // 64KiB (about 127)
			{Size: 1<<20 + 4<<10, Percent: 50}, // 1MiB (about 31)
		}
	}
	return c
}

// serveShmipc is the child: it listens on a Unix socket, prints its path,
// and echoes on every stream of every session until stdin closes.
func serveShmipc() int {
	conf, alloc := os.Getenv(shmipcConfEnv), os.Getenv(shmipcFormEnv) == "call"
	dir, err := os.MkdirTemp("", "ringwire-shmipc")
	if err != nil {
		fmt.Fprintln(os.Stderr, "shmipc:", err)
		return 2
	}
	defer os.RemoveAll(dir)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "shmipc.sock"), Net: "unix"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "shmipc:", err)
		return 2
	}
	var (
		mu       sync.Mutex
		sessions []*shmipc.Session
	)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				s, err := shmipc.Server(conn, shmipcConfig(conf)) // bounded by InitializeTimeout
				if err != nil {
					fmt.Fprintln(os.Stderr, "shmipc server:", err)
					conn.Close()
					return
				}
				mu.Lock()
				sessions = append(sessions, s)
				mu.Unlock()
				for {
					st, err := s.AcceptStream()
					if err != nil {
						return
					}
					go shmipcEcho(st, alloc)
				}
			}()
		}
	}()
	fmt.Println(shmipcReady, l.Addr().String())
	<-untilStdinCloses()
	l.Close()
	mu.Lock()
	for _, s := range sessions {
		s.Close()
	}
	mu.Unlock()
	return 0
}

// shmipcEcho echoes the messages of one stream until it or its session
// closes.
func shmipcEcho(s *shmipc.Stream, alloc bool) {
	defer s.Close()
	r, w := s.BufferReader(), s.BufferWriter()
	for {
		hdr, err := r.ReadBytes(4)
		if err != nil {
			return
		}
		n := int(binary.LittleEndian.Uint32(hdr))
		if n > rawMax {
			fmt.Fprintln(os.Stderr, "shmipc: message of", n, "bytes")
			return
		}
		req, err := r.ReadBytes(n) // in shared memory (or a copy if it spans slices)
		if err != nil {
			return
		}
		if alloc {
			reply := make([]byte, n) // a reply built in new memory
			copy(reply, req)
			r.ReleasePreviousRead()
			p, err := w.Reserve(4)
			if err != nil {
				return
			}
			binary.LittleEndian.PutUint32(p, uint32(n))
			if _, err := w.WriteBytes(reply); err != nil {
				return
			}
		} else {
			p, err := w.Reserve(4 + n) // the whole reply in one slice
			if err != nil {
				return
			}
			binary.LittleEndian.PutUint32(p, uint32(n))
			copy(p[4:], req)
			r.ReleasePreviousRead()
		}
		if err := s.Flush(false); err != nil {
			return
		}
	}
}

// shmipcInstances numbers the instances of this process (unique shared
// memory names).
var shmipcInstances atomic.Int64

// startShmipc starts a shmipc child with conf and form and connects a
// SessionManager (one session) to it; every caller gets its own stream.
func startShmipc(tb testing.TB, conf, form string) *target {
	tb.Helper()
	alloc := form == "call"
	ch := startChild(tb, "shmipc", []string{shmipcConfEnv + "=" + conf, shmipcFormEnv + "=" + form})
	addr := ch.await(tb, shmipcReady)

	smc := shmipc.DefaultSessionManagerConfig()
	smc.Config = shmipcConfig(conf)
	smc.Network, smc.Address = "unix", addr
	name := "ringwire-bench-shmipc-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(shmipcInstances.Add(1), 10)
	if smc.MemMapType == shmipc.MemMapTypeDevShmFile {
		dir := filepath.Join("/dev/shm", name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { os.RemoveAll(dir) }) // after the session's close below
		smc.ShareMemoryPathPrefix = filepath.Join(dir, "shmipc")
	} else {
		smc.ShareMemoryPathPrefix = "/dev/shm/" + name // memfd: a name only
	}
	sm, err := shmipc.NewSessionManager(smc)
	if err != nil {
		tb.Fatalf("shmipc: connecting: %v", err)
	}
	tb.Cleanup(func() { sm.Close() }) // before the child's stdin closes (cleanups run last first)

	return &target{pids: []int{ch.pid()}, newCaller: func(req []byte) func(context.Context) error {
		s, err := sm.GetStream()
		if err != nil {
			tb.Fatalf("shmipc: opening a stream: %v", err)
		}
		// Closed with the session: closing it before would send the child a
		// close event that the session's close can cut short (a reset).
		c := &shmipcCaller{s: s, dst: make([]byte, len(req))}
		return func(ctx context.Context) error {
			out, err := c.echo(ctx, req, alloc)
			if err != nil {
				return err
			}
			return checkEcho(req, out)
		}
	}}
}

// shmipcCaller is one caller's stream. Its reader and writer are taken per
// call: ReleaseReadAndReuse swaps them.
type shmipcCaller struct {
	s        *shmipc.Stream
	dst      []byte    // the reused reply buffer (form into)
	deadline time.Time // the deadline set on s
}

// echo sends req and returns the reply: a new slice when alloc, else c.dst.
func (c *shmipcCaller) echo(ctx context.Context, req []byte, alloc bool) ([]byte, error) {
	if d, _ := ctx.Deadline(); !d.Equal(c.deadline) {
		if err := c.s.SetDeadline(d); err != nil {
			return nil, err
		}
		c.deadline = d
	}
	w := c.s.BufferWriter()
	if alloc { // as the README and examples write: prefix, then a copy of the payload
		p, err := w.Reserve(4)
		if err != nil {
			return nil, err
		}
		binary.LittleEndian.PutUint32(p, uint32(len(req)))
		if _, err := w.WriteBytes(req); err != nil {
			return nil, err
		}
	} else { // as bench_test.go writes: the whole message in one slice
		p, err := w.Reserve(4 + len(req))
		if err != nil {
			return nil, err
		}
		binary.LittleEndian.PutUint32(p, uint32(len(req)))
		copy(p[4:], req)
	}
	if err := c.s.Flush(false); err != nil {
		return nil, err
	}
	r := c.s.BufferReader()
	hdr, err := r.ReadBytes(4)
	if err != nil {
		return nil, err
	}
	n := int(binary.LittleEndian.Uint32(hdr))
	if n > rawMax {
		return nil, fmt.Errorf("shmipc: reply of %d bytes", n)
	}
	data, err := r.ReadBytes(n)
	if err != nil {
		return nil, err
	}
	if alloc {
		out := make([]byte, n)
		copy(out, data)
		r.ReleasePreviousRead()
		return out, nil
	}
	if n > len(c.dst) {
		c.dst = make([]byte, n)
	}
	out := c.dst[:n]
	copy(out, data)
	c.s.ReleaseReadAndReuse()
	return out, nil
}
