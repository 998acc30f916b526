package transport

// The framed transport's receive path.
//
// Receiving. A header is checked before its payload is read. Small frames
// (up to framedInlineMax) are read with read-ahead into a per-connection
// buffer and returned as views into it. Larger payloads go into a pooled
// buffer that starts at framedFirstChunk and doubles only as bytes arrive,
// so a header that lies about its length costs about what the peer really
// sent. A compressed payload is then decoded within its declared size
// (frameDecompress, framed_codec.go).

import (
	"fmt"
	"io"
)

const (
	// framedReadBuf is the per-connection read-ahead buffer; frames up to
	// framedInlineMax are returned as views into it.
	framedReadBuf   = 64 << 10
	framedInlineMax = 32 << 10
	// framedFirstChunk is the most a large frame gets before its bytes
	// arrive; the buffer then doubles as they do.
	framedFirstChunk = 1 << 20
)

// Recv returns the next message, a view valid until Release or the next Recv.
func (c *framedConn) Recv() (Message, error) {
	c.Release()
	if err := c.stateErr(); err != nil {
		c.recvShutdown()
		return Message{}, err
	}
	if c.rbuf == nil {
		c.rbuf = frameGet(framedReadBuf)
	}
	buf := (*c.rbuf)[:framedReadBuf]
	for !c.rhave {
		need, err := c.parseHeader(buf[c.rr:c.rw])
		if err != nil {
			return Message{}, c.recvFail(err)
		}
		if need == 0 {
			break
		}
		if err := c.fill(buf); err != nil {
			return Message{}, err
		}
	}
	var payload []byte
	if c.rlen <= framedInlineMax {
		for c.rw-c.rr < c.rlen {
			if err := c.fill(buf); err != nil {
				return Message{}, err
			}
		}
		payload = buf[c.rr : c.rr+c.rlen]
		c.rr += c.rlen
	} else {
		if err := c.readBig(buf); err != nil {
			return Message{}, err
		}
		payload = (*c.big)[:c.rlen]
	}
	c.rhave = false
	msg := Message{Type: c.rtyp, Data: payload}
	if c.rflags != 0 {
		dst, err := frameDecompress(c.rflags, payload[frameRawLen:], c.rraw)
		if err != nil {
			return Message{}, c.recvFail(err)
		}
		if c.big != nil {
			framePut(c.big)
			c.big = nil
		}
		c.held = dst
		msg.Data = (*dst)[:c.rraw]
	} else if c.big != nil {
		c.held, c.big = c.big, nil
	}
	c.msgsRecv.Add(1)
	c.bytesRecv.Add(uint64(len(msg.Data)))
	return msg, nil
}

// Release hands the last received message's memory back.
func (c *framedConn) Release() {
	if c.held != nil {
		framePut(c.held)
		c.held = nil
	}
}

// parseHeader checks the header at the start of b (frameParseHeader). It
// returns how many more bytes it needs first (0 once the header is parsed
// into c.r*), or the error that the header is.
func (c *framedConn) parseHeader(b []byte) (int, error) {
	h, need, err := frameParseHeader(b, c.comp, c.max)
	if err != nil || need > 0 {
		return need, err
	}
	c.rhave, c.rlen, c.rtyp, c.rflags, c.rraw = true, h.length, h.typ, h.flags, h.raw
	c.rr += frameHeaderLen
	return 0, nil
}

// fill reads more bytes into the read-ahead buffer.
func (c *framedConn) fill(buf []byte) error {
	if c.rr > 0 {
		c.rw = copy(buf, buf[c.rr:c.rw])
		c.rr = 0
	}
	return c.read(buf[c.rw:], &c.rw)
}

// readBig reads the rest of a large payload into c.big, growing it as bytes
// arrive.
func (c *framedConn) readBig(buf []byte) error {
	if c.big == nil {
		c.big = frameGet(min(c.rlen, framedFirstChunk))
		c.bigN = copy(*c.big, buf[c.rr:c.rr+min(c.rw-c.rr, c.rlen)])
		c.rr += c.bigN
	}
	for c.bigN < c.rlen {
		b := *c.big
		if c.bigN == len(b) {
			nb := frameGet(min(2*len(b), c.rlen))
			copy(*nb, b)
			framePut(c.big)
			c.big = nb
			b = *nb
		}
		if err := c.read(b[c.bigN:min(len(b), c.rlen)], &c.bigN); err != nil {
			return err
		}
	}
	return nil
}

// read does one Read into b, adds what arrived to *n, and maps the error.
// A timeout keeps all state, so the next Recv resumes.
func (c *framedConn) read(b []byte, n *int) error {
	for tries := 0; ; tries++ {
		k, err := c.nc.Read(b)
		if k > 0 {
			*n += k
			c.wireRecv.Add(uint64(k))
			return nil
		}
		switch {
		case err == nil:
			if tries < 100 {
				continue
			}
			err = io.ErrNoProgress
		case frameIsTimeout(err) && c.stateErr() == nil:
			return fmt.Errorf("%w (%v)", ErrTimeout, err)
		}
		if st := c.stateErr(); st != nil {
			c.recvShutdown()
			return st
		}
		if frameIsPeerGone(err) {
			if c.rhave || c.rw > c.rr {
				err = fmt.Errorf("%w: stream ended inside a frame: %w", ErrPeerGone, io.ErrUnexpectedEOF)
			} else {
				err = fmt.Errorf("%w: %w", ErrPeerGone, err)
			}
		} else {
			err = fmt.Errorf("transport: framed read: %w", err)
		}
		return c.recvFail(err)
	}
}

// recvFail breaks the conn with err and returns the sticky error.
func (c *framedConn) recvFail(err error) error {
	err = c.fail(err)
	c.recvShutdown()
	return err
}

// recvShutdown gives the reader's buffers back once the conn is dead.
func (c *framedConn) recvShutdown() {
	if c.big != nil {
		framePut(c.big)
		c.big = nil
	}
	if c.rbuf != nil {
		framePut(c.rbuf)
		c.rbuf = nil
	}
	c.rr, c.rw, c.rhave = 0, 0, false
}
