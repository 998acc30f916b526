//go:build amd64 && !race

package ring

// publish stores v at addr (a position the peer polls) and then fences, so
// that no later load (the peer's bell, in wakePeer) is performed before the
// store is visible: the StoreLoad order the no-lost-wakeup argument needs.
// atomic.StoreUint64 gives the same order with XCHG, but on the development VM
// a locked exchange on the line the peer polls made a cross-process round
// trip about 1.6 times slower than a plain store followed by a locked no-op on
// our own stack, which is what publish does (see docs/benchmarks.md). Race builds use atomic.StoreUint64, so the race
// detector sees the synchronisation.
//
//go:noescape
func publish(addr *uint64, v uint64)

// Add adds d to the counter. Only the side owning the counter writes it, so a
// plain read-modify-write suffices; readers load it atomically, and an aligned
// 64-bit store is never torn on amd64. This keeps three locked instructions
// per released record off the consumer's hot path.
func (c *ownedCounter) Add(d uint64) { c.v += d }

// touchNext makes a waiting consumer also read the cache line of the next
// record's header (see Consumer.ready). Off in race builds: the read races, by
// design and harmlessly, with the producer writing that header.
const touchNext = true
