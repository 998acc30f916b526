// Package ring is a single-producer/single-consumer ring of variable-length
// records over a plain []byte: heap memory in tests and fuzzing, a sealed
// shared-memory segment (package shm) between two processes in production.
// One ring carries one direction; a connection uses two.
//
// # Layout
//
// All integers are little endian. Each counter sits on its own 128-byte line so
// the two sides never write the same cache line.
//
//	offset
//	     0 +--------------------------------------------------------------+
//	       | magic "RWRG" u32 | version u32 | capacity u32 | maxRecord u32 |
//	       | header size u32 (640) | zero ...                              |
//	    64 | consumer CPU u32: 1+CPU | beat<<12 (advisory, consumer writes)  |
//	   128 +--------------------------------------------------------------+
//	       | tail u64: bytes published by the producer (producer writes)   |
//	   256 +--------------------------------------------------------------+
//	       | head u64: bytes released by the consumer (consumer writes)    |
//	   384 +--------------------------------------------------------------+
//	       | consumer bell u32: seq<<1 | asleep  (consumer sleeps here)    |
//	   512 +--------------------------------------------------------------+
//	       | producer bell u32: seq<<1 | asleep  (producer sleeps here)    |
//	   640 +--------------------------------------------------------------+
//	       | data: capacity bytes (a power of two)                         |
//	       |  [len u32|type u16|flags u16|payload..|pad] [record] ...      |
//	       |  ... [padding record up to the end] (wrap to data offset 0)   |
//	       +--------------------------------------------------------------+
//
// Positions (tail, head) count bytes from the ring's creation and never wrap;
// a position's index in the data area is position & (capacity-1). The bytes in
// [head, tail) are published records. Each record starts 8-byte aligned with
// an 8-byte header: payload length, an application type and flags. A record is
// never split: when it does not fit before the end of the data area, the
// producer first writes a padding record (flag pad) that covers the rest of the
// area, and the record starts at index 0. A record's payload is at most
// maxRecord bytes (at most capacity/2 with its header, so a padded record
// always fits into an empty ring).
//
// Flags: pad (1) marks padding; more (2) says another fragment of the same
// message follows; cont (4) marks a continuation fragment. A message larger
// than maxRecord travels as fragments: the first carries flags=more and a u64
// total length before its data, middle ones cont|more, the last cont. The
// consumer reassembles them, checking the total against its MaxMessage before
// anything grows and checking that the fragments add up to it exactly.
//
// # Protocol
//
// The producer writes records after tail (Reserve, fill, Commit), then
// publishes all of them with one atomic store of tail (Flush): that store is
// the write coalescing of the design, one store and at most one wake-up for a
// batch. The consumer loads tail, reads records in [head, tail) in place (Peek)
// and, when done with one, stores the new head (Release), giving the space back.
// Each side keeps its own position privately and only ever publishes it; the
// peer's position is re-read when needed and validated: aligned, monotonic,
// 0 <= tail-head <= capacity. Every record header is read once into locals and
// checked (flags known, length <= maxRecord, inside both the published region
// and the data area) before a slice of the payload is handed out. Any violation
// is ErrCorrupt, which sticks. The header's geometry is read once at attach.
//
// # Waiting
//
// A side that finds nothing to do (the consumer an empty ring, the producer a
// full one) spins for a bounded window, yielding its P to the process's
// other goroutines every 32 polls, then announces sleep by setting the
// asleep bit of its bell with a CAS, re-checks, and FUTEX_WAITs on the bell
// with a timeout. The other side, after publishing its position, loads the
// bell and issues FUTEX_WAKE only when the bit is set, clearing it and bumping
// the bell's sequence in one CAS. While both sides are busy no system call is
// made at all. The argument that no wake-up is lost is written out on the
// waiter type in wait.go and in docs/ring.md. The spin window adapts to the
// observed gap between messages, up to Options.AdaptiveSpin, so paced traffic
// and a quick exchange whose peer is descheduled for a moment are caught
// while spinning; once idle, a side parks and uses no CPU.
//
// Waiting happens in the calling goroutine, and the ring allows one reader and
// one writer, so at most two goroutines per connection ever sit in FUTEX_WAIT.
// The futex call is an ordinary (not raw) system call: the Go runtime hands the
// blocked thread's P to another thread, so other goroutines keep running.
//
// A producer's wait can also have a bound of its own (ReserveUntil,
// StagePartsUntil: a deadline and a cancel channel, polled every CancelPoll
// while parked). A fragmented message that such a bound cuts short stays
// open until Resume finishes it; nothing else can be written meanwhile.
//
// # Trust
//
// Nothing read from the shared memory is trusted. A dead peer is reported by a
// liveness watcher (package shm) that calls PeerGone, which wakes local waiters
// at once; messages already published are still delivered first.
package ring
