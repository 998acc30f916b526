package duplex

// Memory returns the mapped bytes of ring i (0: the ring the offering side
// writes, 1: the ring it reads; the same numbering on both sides), or nil
// after Close. It is for tests and tooling, such as a hostile peer that
// scribbles over the shared memory: ordinary users go through Tx and Rx.
func (e *End) Memory(i int) []byte {
	if i < 0 || i >= len(e.segs) || e.segs[i] == nil {
		return nil
	}
	return e.segs[i].Bytes()
}
