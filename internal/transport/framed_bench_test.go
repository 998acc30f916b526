package transport

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// BenchmarkFramed measures the framed transport in process, over a Unix
// socketpair and TCP loopback, next to a hand-written length-prefix
// baseline (impl=prefix: 4-byte length, header+payload written with one
// net.Buffers writev, io.ReadFull on the other side). Payloads are
// JSON-like, so comp=lz4/zstd show real ratios. Compare with
// `benchstat -col /impl` (framed vs prefix) or `-col /comp`.
//
//	op=rtt       one message there and echoed back, one goroutine each side
//	op=oneway    a stream of messages, sender and receiver goroutines
//	op=coalesce  1 or 8 concurrent senders of 10-byte messages; writes/msg
//	op=codec     compress + decompress one payload in memory (threshold)
func BenchmarkFramed(b *testing.B) {
	sizes := []struct {
		name string
		n    int
	}{{"10B", 10}, {"1KiB", 1 << 10}, {"64KiB", 64 << 10}, {"1MiB", 1 << 20}}
	for _, op := range []string{"rtt", "oneway"} {
		for _, kind := range []string{"unix", "tcp"} {
			for _, impl := range []string{"framed", "prefix"} {
				comps := []framedCompression{framedCompNone}
				if impl == "framed" {
					comps = framedComps
				}
				for _, comp := range comps {
					for _, size := range sizes {
						if comp == framedCompLZ4 && size.n < framedDefaultThresholdLZ4 ||
							comp == framedCompZstd && size.n < framedDefaultThresholdZstd {
							continue // below the default threshold it is comp=none
						}
						name := fmt.Sprintf("op=%s/net=%s/impl=%s/comp=%s/size=%s", op, kind, impl, comp, size.name)
						b.Run(name, func(b *testing.B) {
							data := framedJSONPool[:size.n]
							switch {
							case impl == "prefix" && op == "rtt":
								framedBenchPrefixRTT(b, kind, data)
							case impl == "prefix":
								framedBenchPrefixOneway(b, kind, data)
							case op == "rtt":
								framedBenchRTT(b, kind, comp, data)
							default:
								framedBenchOneway(b, kind, comp, data)
							}
						})
					}
				}
			}
		}
	}
	for _, kind := range []string{"unix", "tcp"} {
		for _, senders := range []int{1, 8} {
			b.Run(fmt.Sprintf("op=coalesce/net=%s/senders=%d/size=10B", kind, senders), func(b *testing.B) {
				framedBenchCoalesce(b, kind, senders)
			})
		}
	}
	for _, comp := range []framedCompression{framedCompLZ4, framedCompZstd} {
		for _, n := range []int{256, 1 << 10, 4 << 10, 64 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("op=codec/comp=%s/size=%dB", comp, n), func(b *testing.B) {
				framedBenchCodec(b, comp, framedJSONPool[:n])
			})
		}
	}
}

func framedBenchPair(b *testing.B, kind string, comp framedCompression) (*framedConn, *framedConn) {
	ra, rb := framedNetPair(b, kind)
	o := framedOptions{Compression: comp}
	x, y := newFramed(ra, o), newFramed(rb, o)
	b.Cleanup(func() { x.Close(); y.Close() })
	deadline := time.Now().Add(10 * time.Minute)
	for _, c := range []*framedConn{x, y} {
		c.SetReadDeadline(deadline)
		c.SetWriteDeadline(deadline)
	}
	return x, y
}

// framedBenchRatio reports payload bytes per wire byte of the sending side.
func framedBenchRatio(b *testing.B, c *framedConn) {
	if s := c.Stats(); s.WireBytesSent > 0 {
		b.ReportMetric(float64(s.BytesSent)/float64(s.WireBytesSent), "ratio")
	}
}

func framedBenchRTT(b *testing.B, kind string, comp framedCompression, data []byte) {
	x, y := framedBenchPair(b, kind, comp)
	done := make(chan error, 1)
	go func() {
		for {
			m, err := y.Recv()
			if err != nil {
				done <- nil
				return
			}
			if err := y.Send(m.Type, m.Data); err != nil {
				done <- err
				return
			}
		}
	}()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := x.Send(1, data); err != nil {
			b.Fatal(err)
		}
		m, err := x.Recv()
		if err != nil || len(m.Data) != len(data) {
			b.Fatalf("recv: %d bytes, %v", len(m.Data), err)
		}
	}
	b.StopTimer()
	framedBenchRatio(b, x)
	x.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

func framedBenchOneway(b *testing.B, kind string, comp framedCompression, data []byte) {
	x, y := framedBenchPair(b, kind, comp)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	done := make(chan error, 1)
	go func() {
		for range b.N {
			if err := x.Send(1, data); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for range b.N {
		m, err := y.Recv()
		if err != nil || len(m.Data) != len(data) {
			b.Fatalf("recv: %d bytes, %v", len(m.Data), err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	framedBenchRatio(b, x)
}

// framedPrefix is the baseline: a 4-byte length prefix, writev to send,
// io.ReadFull to receive into a reused buffer.
type framedPrefix struct {
	c    net.Conn
	hdr  [4]byte
	rhdr [4]byte
	bufs net.Buffers
	buf  []byte
}

func (p *framedPrefix) send(data []byte) error {
	binary.LittleEndian.PutUint32(p.hdr[:], uint32(len(data)))
	p.bufs = append(p.bufs[:0], p.hdr[:], data)
	_, err := p.bufs.WriteTo(p.c)
	return err
}

func (p *framedPrefix) recv() ([]byte, error) {
	if _, err := io.ReadFull(p.c, p.rhdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.LittleEndian.Uint32(p.rhdr[:]))
	if cap(p.buf) < n {
		p.buf = make([]byte, n)
	}
	_, err := io.ReadFull(p.c, p.buf[:n])
	return p.buf[:n], err
}

func framedBenchPrefixRTT(b *testing.B, kind string, data []byte) {
	ra, rb := framedNetPair(b, kind)
	x, y := &framedPrefix{c: ra}, &framedPrefix{c: rb}
	go func() {
		for {
			m, err := y.recv()
			if err != nil || y.send(m) != nil {
				return
			}
		}
	}()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := x.send(data); err != nil {
			b.Fatal(err)
		}
		if m, err := x.recv(); err != nil || len(m) != len(data) {
			b.Fatalf("recv: %d bytes, %v", len(m), err)
		}
	}
	b.StopTimer()
	ra.Close()
}

func framedBenchPrefixOneway(b *testing.B, kind string, data []byte) {
	ra, rb := framedNetPair(b, kind)
	x, y := &framedPrefix{c: ra}, &framedPrefix{c: rb}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	done := make(chan error, 1)
	go func() {
		for range b.N {
			if err := x.send(data); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for range b.N {
		if m, err := y.recv(); err != nil || len(m) != len(data) {
			b.Fatalf("recv: %d bytes, %v", len(m), err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

func framedBenchCoalesce(b *testing.B, kind string, senders int) {
	x, y := framedBenchPair(b, kind, framedCompNone)
	data := framedJSONPool[:10]
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		n := b.N / senders
		if s < b.N%senders {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				if err := x.Send(1, data); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range b.N {
		if _, err := y.Recv(); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	s := x.Stats()
	b.ReportMetric(float64(s.Writes)/float64(s.MessagesSent), "writes/msg")
}

// framedBenchCodec measures what compressing a payload costs: compress,
// then decompress, as Send and Recv do.
func framedBenchCodec(b *testing.B, comp framedCompression, data []byte) {
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	wire := 0
	for range b.N {
		p := frameCompress(comp, data, 0)
		if p == nil {
			b.Fatal("did not compress")
		}
		wire = len(*p)
		d, err := frameDecompress(comp.flag(), *p, len(data))
		if err != nil {
			b.Fatal(err)
		}
		framePut(d)
		framePut(p)
	}
	b.ReportMetric(float64(len(data))/float64(frameHeaderLen+frameRawLen+wire), "ratio")
}
