package transport

import (
	"fmt"
	"sync"
	"time"
)

// ncPipeMaxMessage is the pipe's MaxMessage: small, so NetConn splits writes.
const ncPipeMaxMessage = 64 << 10

// ncPipeDepth is how many messages one direction buffers before Send blocks.
const ncPipeDepth = 16

// pipeConns returns the two ends of an in-memory Conn for tests. It follows
// the Conn contract: messages arrive whole and in order; Send copies its data
// and blocks while the peer's queue is full; Recv's Data is valid until
// Release or the next Recv (the pipe then scribbles over it, so a reader that
// keeps using released memory sees garbage); deadlines bound pending and
// later calls; Close unblocks everything with ErrClosed; the peer of a closed
// end receives what was sent before, then ErrPeerGone.
func pipeConns() (Conn, Conn) {
	ab := make(chan ncPipeMsg, ncPipeDepth)
	ba := make(chan ncPipeMsg, ncPipeDepth)
	a := newNcPipeConn("pipe-a", ba, ab)
	b := newNcPipeConn("pipe-b", ab, ba)
	a.peerGone, b.peerGone = b.gone, a.gone
	a.info.Peer.Name, b.info.Peer.Name = "pipe-b", "pipe-a"
	return a, b
}

type ncPipeMsg struct {
	typ  uint16
	data []byte
}

type ncPipeConn struct {
	name     string
	in       <-chan ncPipeMsg
	out      chan<- ncPipeMsg
	done     chan struct{} // closed first by Close: unblocks this end's calls
	gone     chan struct{} // closed once no Send of this end is in flight
	peerGone chan struct{} // the peer's gone
	sendMu   sync.RWMutex  // Sends hold it shared; Close waits for them
	once     sync.Once
	rd, wd   ncPipeDeadline
	info     Info
	limit    int // largest message Send takes (info.MaxMessage unless a test changes it)

	mu    sync.Mutex
	held  []byte // last message from Recv, until Release
	stats Stats
}

func newNcPipeConn(name string, in <-chan ncPipeMsg, out chan<- ncPipeMsg) *ncPipeConn {
	return &ncPipeConn{
		name: name, in: in, out: out,
		done: make(chan struct{}), gone: make(chan struct{}),
		rd: newNcPipeDeadline(), wd: newNcPipeDeadline(),
		info: Info{Kind: KindUnix, Compression: "none", Version: 1, MaxMessage: ncPipeMaxMessage,
			Peer: Peer{UID: -1, PID: -1}},
		limit: ncPipeMaxMessage,
	}
}

func ncIsClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (p *ncPipeConn) Send(typ uint16, data []byte) error {
	if len(data) > p.limit {
		return fmt.Errorf("pipe: %d-byte message: %w", len(data), ErrTooLarge)
	}
	p.sendMu.RLock()
	defer p.sendMu.RUnlock()
	switch {
	case ncIsClosed(p.done):
		return fmt.Errorf("pipe %s: send: %w", p.name, ErrClosed)
	case ncIsClosed(p.peerGone):
		return fmt.Errorf("pipe %s: send: %w", p.name, ErrPeerGone)
	case ncIsClosed(p.wd.wait()):
		return fmt.Errorf("pipe %s: send: %w", p.name, ErrTimeout)
	}
	m := ncPipeMsg{typ: typ, data: append([]byte(nil), data...)}
	select {
	case p.out <- m:
		p.mu.Lock()
		p.stats.MessagesSent++
		p.stats.BytesSent += uint64(len(data))
		p.mu.Unlock()
		return nil
	case <-p.done:
		return fmt.Errorf("pipe %s: send: %w", p.name, ErrClosed)
	case <-p.peerGone:
		return fmt.Errorf("pipe %s: send: %w", p.name, ErrPeerGone)
	case <-p.wd.wait():
		return fmt.Errorf("pipe %s: send: %w", p.name, ErrTimeout)
	}
}

func (p *ncPipeConn) SendBatch(msgs []Message) error {
	for _, m := range msgs {
		if err := p.Send(m.Type, m.Data); err != nil {
			return err
		}
	}
	return nil
}

// SendPartsUntil joins the parts and sends them, bounded by the write
// deadline only (NetConn does not use the other bounds).
func (p *ncPipeConn) SendPartsUntil(_ time.Time, _ <-chan struct{}, typ uint16, head, body []byte) error {
	return p.Send(typ, append(head[:len(head):len(head)], body...))
}

func (p *ncPipeConn) Recv() (Message, error) {
	p.Release()
	if ncIsClosed(p.done) {
		return Message{}, fmt.Errorf("pipe %s: recv: %w", p.name, ErrClosed)
	}
	if ncIsClosed(p.rd.wait()) {
		return Message{}, fmt.Errorf("pipe %s: recv: %w", p.name, ErrTimeout)
	}
	select {
	case m := <-p.in:
		return p.deliver(m), nil
	case <-p.done:
		return Message{}, fmt.Errorf("pipe %s: recv: %w", p.name, ErrClosed)
	case <-p.peerGone:
		// Every Send of the peer has finished: what is queued is all there is.
		select {
		case m := <-p.in:
			return p.deliver(m), nil
		default:
			return Message{}, fmt.Errorf("pipe %s: recv: %w", p.name, ErrPeerGone)
		}
	case <-p.rd.wait():
		return Message{}, fmt.Errorf("pipe %s: recv: %w", p.name, ErrTimeout)
	}
}

func (p *ncPipeConn) deliver(m ncPipeMsg) Message {
	p.mu.Lock()
	p.held = m.data
	p.stats.MessagesRecv++
	p.stats.BytesRecv += uint64(len(m.data))
	p.mu.Unlock()
	return Message{Type: m.typ, Data: m.data}
}

// Release scribbles over the released message, so use after Release shows.
func (p *ncPipeConn) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.held {
		p.held[i] = 0xEE
	}
	p.held = nil
}

func (p *ncPipeConn) SetReadDeadline(t time.Time) error {
	if ncIsClosed(p.done) {
		return fmt.Errorf("pipe %s: %w", p.name, ErrClosed)
	}
	p.rd.set(t)
	return nil
}

func (p *ncPipeConn) SetWriteDeadline(t time.Time) error {
	if ncIsClosed(p.done) {
		return fmt.Errorf("pipe %s: %w", p.name, ErrClosed)
	}
	p.wd.set(t)
	return nil
}

func (p *ncPipeConn) Close() error {
	p.once.Do(func() {
		close(p.done)
		p.sendMu.Lock() // wait for the Sends that done has unblocked
		close(p.gone)
		p.sendMu.Unlock()
	})
	return nil
}

func (p *ncPipeConn) Info() Info { return p.info }

func (p *ncPipeConn) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// ncPipeDeadline is a deadline whose channel closes when it passes; setting
// it again re-arms the same channel unless it already fired.
type ncPipeDeadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func newNcPipeDeadline() ncPipeDeadline {
	return ncPipeDeadline{cancel: make(chan struct{})}
}

func (d *ncPipeDeadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for it to close cancel
	}
	d.timer = nil
	fired := ncIsClosed(d.cancel)
	if t.IsZero() {
		if fired {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if fired {
			d.cancel = make(chan struct{})
		}
		c := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(c) })
		return
	}
	if !fired {
		close(d.cancel)
	}
}

func (d *ncPipeDeadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}
