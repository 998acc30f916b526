package fuzz

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ringwire/ringwire/internal/duplex"
	"github.com/ringwire/ringwire/internal/rpc"
	"github.com/ringwire/ringwire/internal/seam"
	"github.com/ringwire/ringwire/internal/transport"
	"github.com/ringwire/ringwire/ring"
)

const (
	ringCapacity = 16 << 10
	ringMaxMsg   = 64 << 10
)

// ringPair connects a host End and the fuzzer's End over a socketpair, the
// host offering (host Tx is ring 0, Rx ring 1: the fuzzer writes ring 1).
func ringPair(tb testing.TB) (host, peer *duplex.End) {
	tb.Helper()
	a, b := socketPair(tb)
	type res struct {
		e   *duplex.End
		err error
	}
	ch := make(chan res, 1)
	go func() {
		e, err := duplex.Accept(b, duplex.Config{})
		ch <- res{e, err}
	}()
	host, err := duplex.Offer(a, duplex.Config{Capacity: ringCapacity})
	r := <-ch
	if err != nil || r.err != nil {
		tb.Fatalf("rings: offer %v, accept %v", err, r.err)
	}
	return host, r.e
}

// Ops of FuzzPeerOverRing, one byte each then their arguments:
//
//	0 record:   type u16, length u16 (mod 8 KiB), payload: written as a
//	            message through the fuzzer's producer (fragmented if long)
//	1 scribble: offset u16, length u8, bytes: written over the ring the
//	            host reads (header, positions, records), offset mod its size
//	2 flush:    the producer publishes what it staged
//	3 pause:    1 ms, for the host to act
func FuzzPeerOverRing(f *testing.F) {
	f.Fuzz(playRing)
}

// playRing runs one FuzzPeerOverRing input.
func playRing(t *testing.T, in []byte) {
	hostEnd, fz := ringPair(t)
	conn := seam.ShmConn(hostEnd, ringMaxMsg).(transport.Conn)
	p := rpc.NewPeer(conn, rpc.Options{Mux: fuzzMux(), Logger: quiet, MaxPendingBytes: 1 << 20})
	// Take the host's answers, so that it never waits for room.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if _, err := fz.Rx.Peek(); err != nil {
				return
			}
			if err := fz.Rx.Release(); err != nil {
				return
			}
		}
	}()
	mem := fz.Memory(1)
	pauses := 0
	for len(in) > 0 {
		select {
		case <-p.Done():
			in = nil // the host has given up on us: nothing more to see
			continue
		default:
		}
		op := in[0] % 4
		in = in[1:]
		switch op {
		case 0:
			if len(in) < 4 {
				in = nil
				break
			}
			typ := binary.LittleEndian.Uint16(in)
			n := int(binary.LittleEndian.Uint16(in[2:])) % (8 << 10)
			in = in[4:]
			n = min(n, len(in))
			fz.Tx.SetDeadline(time.Now().Add(20 * time.Millisecond))
			if err := fz.Tx.Write(typ, in[:n]); err != nil {
				if !isRingErr(err) {
					t.Fatalf("the fuzzer's producer: %v", err)
				}
				in = nil // the host stopped reading (or the ring is broken)
				continue
			}
			in = in[n:]
		case 1:
			if len(in) < 3 {
				in = nil
				break
			}
			off := int(binary.LittleEndian.Uint16(in)) % len(mem)
			n := min(int(in[2]), len(in)-3, len(mem)-off)
			copy(mem[off:off+n], in[3:3+n])
			in = in[3+n:]
		case 2:
			fz.Tx.Flush()
		case 3:
			if pauses++; pauses <= 20 {
				time.Sleep(time.Millisecond)
			}
		}
	}
	fz.Tx.Flush()
	// The fuzzer hangs up (its reader first: Close unmaps the rings):
	// the host must notice and end.
	fz.Shutdown()
	wg.Wait()
	fz.Close()
	select {
	case <-p.Done():
	case <-time.After(hangBound):
		t.Fatalf("the Peer did not end within %v of its peer's end", hangBound)
	}
	if err := p.Err(); err != nil && !sentinel(err) {
		t.Fatalf("the Peer failed without a sentinel error: %v", err)
	}
	p.Close()
}

func isRingErr(err error) bool {
	for _, s := range []error{ring.ErrTimeout, ring.ErrClosed, ring.ErrPeerGone, ring.ErrCorrupt, ring.ErrTooLarge} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// recordingConn keeps the messages a real client Peer sends.
type recordingConn struct {
	transport.Conn
	mu   sync.Mutex
	msgs []transport.Message
}

func (r *recordingConn) keep(typ uint16, head, body []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, transport.Message{Type: typ, Data: append(append([]byte(nil), head...), body...)})
}

func (r *recordingConn) Send(typ uint16, data []byte) error {
	r.keep(typ, data, nil)
	return r.Conn.Send(typ, data)
}

func (r *recordingConn) SendBatch(msgs []transport.Message) error {
	for _, m := range msgs {
		r.keep(m.Type, m.Data, nil)
	}
	return r.Conn.SendBatch(msgs)
}

func (r *recordingConn) SendPartsUntil(deadline time.Time, cancel <-chan struct{}, typ uint16, head, body []byte) error {
	r.keep(typ, head, body)
	return r.Conn.SendPartsUntil(deadline, cancel, typ, head, body)
}

// ringSeeds records a real client Peer's calls over a ring pair and turns
// them into FuzzPeerOverRing inputs: the session as records; the same with
// a flush and a pause between calls; and one that then scribbles over the
// ring's positions.
func ringSeeds(tb testing.TB) map[string][]byte {
	hostEnd, cliEnd := ringPair(tb)
	host := rpc.NewPeer(seam.ShmConn(hostEnd, ringMaxMsg).(transport.Conn), rpc.Options{Mux: fuzzMux(), Logger: quiet})
	rec := &recordingConn{Conn: seam.ShmConn(cliEnd, ringMaxMsg).(transport.Conn)}
	cli := rpc.NewPeer(rec, rpc.Options{Logger: quiet})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	big := []byte(strings.Repeat("ringwire ring seed ", 100))
	for _, call := range []struct {
		method string
		req    []byte
	}{{"echo", []byte("hi")}, {"echo0", big}, {"len", big[:40]}, {"fail", nil}, {"wait", nil}, {"nope", nil}} {
		_, _ = cli.Call(ctx, call.method, call.req)
	}
	if h, err := cli.New(ctx, "obj", nil); err == nil {
		_, _ = h.Call(ctx, "echo", big[:200])
		_ = h.Destroy(ctx)
	}
	_ = cli.Ping(ctx)
	cli.Close()
	host.Close()
	var plain, paced []byte
	for _, m := range rec.msgs {
		op := binary.LittleEndian.AppendUint16([]byte{0}, m.Type)
		op = binary.LittleEndian.AppendUint16(op, uint16(len(m.Data)))
		op = append(op, m.Data...)
		plain = append(plain, op...)
		paced = append(append(paced, op...), 2, 3)
	}
	scribble := append([]byte(nil), paced...)
	// Over the tail position's line (offset 64), then the first record.
	scribble = append(scribble, 1, 64, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)
	scribble = append(scribble, 1, 0, 2, 8, 0xff, 0xff, 0, 0, 1, 0, 3, 0, 2, 3)
	return map[string][]byte{"session": plain, "session-paced": paced, "session-scribbled": scribble}
}
