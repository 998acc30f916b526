package ring

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// The layout of one ring, as the package doc draws it. Every offset below is
// relative to the start of the memory handed to Init, Attach or NewHeap.
//
//	0    header line      magic u32 | version u32 | capacity u32 | max record u32 | header size u32 | 0...
//	64   consumer CPU     u32: 1 + the CPU the consumer waits on | beat (advisory, see wait.go)
//	128  producer line    tail  u64  (bytes ever published; written by the producer only)
//	256  consumer line    head  u64  (bytes ever released; written by the consumer only)
//	384  consumer bell    u32 futex word: seq<<1 | asleep (the consumer sleeps here)
//	512  producer bell    u32 futex word: seq<<1 | asleep (the producer sleeps here)
//	640  data             capacity bytes, a power of two
//
// A record in the data area, always 8-byte aligned, never split at the end:
//
//	+----------------+---------------+---------------+---------------------------+
//	| length u32     | type u16      | flags u16     | payload (length bytes)    | pad to 8
//	+----------------+---------------+---------------+---------------------------+
const (
	// Magic identifies a ring header ("RWRG" little endian).
	Magic uint32 = 0x47525752
	// Version is the layout version written by Init and required by Attach.
	Version uint32 = 1

	lineSize = 128

	offMagic      = 0
	offVersion    = 4
	offCapacity   = 8
	offMaxRecord  = 12
	offHeaderSize = 16
	offTail       = 1 * lineSize
	offHead       = 2 * lineSize
	offDataBell   = 3 * lineSize
	offDataCPU    = 64 // the header line, which nothing reads after attach
	offSpaceBell  = 4 * lineSize

	// HeaderSize is the number of bytes before the data area.
	HeaderSize = 5 * lineSize

	// RecordHeaderSize is the size of the header in front of every record.
	RecordHeaderSize = 8
	// RecordAlign is the alignment of every record.
	RecordAlign = 8

	// MinCapacity and MaxCapacity bound the data area.
	MinCapacity = 1 << 10
	MaxCapacity = 1 << 30
)

// Record flags (the flags u16 of the record header).
const (
	flagPad  uint16 = 1 << 0 // padding to the end of the data area; no payload
	flagMore uint16 = 1 << 1 // another fragment of this message follows
	flagCont uint16 = 1 << 2 // this record continues a fragmented message
	flagMask        = flagPad | flagMore | flagCont

	// fragHeader is the size of the total-length prefix carried by the first
	// fragment of a fragmented message.
	fragHeader = 8
)

// Bell word bits.
const (
	bellAsleep uint32 = 1 // the owner of the bell is (about to be) in FUTEX_WAIT
	bellSeq    uint32 = 2 // increment applied by every waker and kick
)

// Size returns the number of bytes a ring with the given data capacity needs.
func Size(capacity int) int { return HeaderSize + capacity }

// DefaultMaxRecord is the largest payload of one record that Init chooses when
// maxRecord is 0: half the capacity, less the record header, the most the
// layout allows. Larger records mean fewer fragments and, above all, messages
// the consumer reads in place instead of reassembling: with a 4 MiB ring a
// 1 MiB message is one record, which moved 1 MiB throughput from 7 to 30 GB/s
// (docs/benchmarks.md).
func DefaultMaxRecord(capacity int) int { return capacity/2 - RecordHeaderSize }

// align8 rounds n up to a multiple of RecordAlign.
func align8(n uint64) uint64 { return (n + RecordAlign - 1) &^ (RecordAlign - 1) }

// geometry is what both sides learn from the header once, at attach time. The
// shared header is never read again: a peer rewriting it later changes nothing.
type geometry struct {
	data      []byte
	capacity  uint64
	mask      uint64
	maxRecord uint64
	tailp     *uint64
	headp     *uint64
	dataBell  *uint32
	spaceBell *uint32
	dataCPU   *uint32
}

func checkCapacity(capacity, maxRecord int) error {
	if capacity < MinCapacity || capacity > MaxCapacity || bits.OnesCount(uint(capacity)) != 1 {
		return fmt.Errorf("%w: capacity %d is not a power of two in [%d, %d]", ErrConfig, capacity, MinCapacity, MaxCapacity)
	}
	if maxRecord < 1 || RecordHeaderSize+align8(uint64(maxRecord)) > uint64(capacity)/2 {
		return fmt.Errorf("%w: max record %d must be in [1, %d] for capacity %d", ErrConfig, maxRecord, capacity/2-RecordHeaderSize, capacity)
	}
	if maxRecord <= fragHeader {
		return fmt.Errorf("%w: max record %d must exceed the %d-byte fragment header", ErrConfig, maxRecord, fragHeader)
	}
	return nil
}

func checkMemory(mem []byte, capacity int) error {
	if len(mem) < Size(capacity) {
		return fmt.Errorf("%w: memory of %d bytes is smaller than the %d a ring of capacity %d needs", ErrConfig, len(mem), Size(capacity), capacity)
	}
	if uintptr(unsafe.Pointer(unsafe.SliceData(mem)))%RecordAlign != 0 {
		return fmt.Errorf("%w: memory is not %d-byte aligned", ErrConfig, RecordAlign)
	}
	return nil
}

// Init writes a fresh header into mem for a ring with the given data capacity
// (a power of two) and largest record payload (0 picks DefaultMaxRecord). The
// counters and bells start at zero. Only the side that creates the memory calls
// Init, before the peer sees it.
func Init(mem []byte, capacity, maxRecord int) error {
	if maxRecord == 0 {
		maxRecord = DefaultMaxRecord(capacity)
	}
	if err := checkCapacity(capacity, maxRecord); err != nil {
		return err
	}
	if err := checkMemory(mem, capacity); err != nil {
		return err
	}
	clear(mem[:HeaderSize])
	le := binary.LittleEndian
	le.PutUint32(mem[offVersion:], Version)
	le.PutUint32(mem[offCapacity:], uint32(capacity))
	le.PutUint32(mem[offMaxRecord:], uint32(maxRecord))
	le.PutUint32(mem[offHeaderSize:], HeaderSize)
	// The magic goes last, atomically: a header with the magic is complete.
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&mem[offMagic])), Magic)
	return nil
}

// attach validates the header of mem and returns the geometry it describes.
func attach(mem []byte) (geometry, error) {
	var g geometry
	if len(mem) < HeaderSize {
		return g, fmt.Errorf("%w: %d bytes cannot hold the %d-byte header", ErrCorrupt, len(mem), HeaderSize)
	}
	if uintptr(unsafe.Pointer(unsafe.SliceData(mem)))%RecordAlign != 0 {
		return g, fmt.Errorf("%w: memory is not %d-byte aligned", ErrConfig, RecordAlign)
	}
	le := binary.LittleEndian
	if m := atomic.LoadUint32((*uint32)(unsafe.Pointer(&mem[offMagic]))); m != Magic {
		return g, fmt.Errorf("%w: bad magic %#x", ErrCorrupt, m)
	}
	if v := le.Uint32(mem[offVersion:]); v != Version {
		return g, fmt.Errorf("%w: layout version %d, want %d", ErrCorrupt, v, Version)
	}
	if hs := le.Uint32(mem[offHeaderSize:]); hs != HeaderSize {
		return g, fmt.Errorf("%w: header size %d, want %d", ErrCorrupt, hs, HeaderSize)
	}
	capacity := int(le.Uint32(mem[offCapacity:]))
	maxRecord := int(le.Uint32(mem[offMaxRecord:]))
	if err := checkCapacity(capacity, maxRecord); err != nil {
		return g, fmt.Errorf("%w: header: %v", ErrCorrupt, err)
	}
	if len(mem) < Size(capacity) {
		return g, fmt.Errorf("%w: header claims capacity %d but memory has %d bytes", ErrCorrupt, capacity, len(mem))
	}
	g = geometry{
		data:      mem[HeaderSize : HeaderSize+capacity : HeaderSize+capacity],
		capacity:  uint64(capacity),
		mask:      uint64(capacity - 1),
		maxRecord: uint64(maxRecord),
		tailp:     (*uint64)(unsafe.Pointer(&mem[offTail])),
		headp:     (*uint64)(unsafe.Pointer(&mem[offHead])),
		dataBell:  (*uint32)(unsafe.Pointer(&mem[offDataBell])),
		spaceBell: (*uint32)(unsafe.Pointer(&mem[offSpaceBell])),
		dataCPU:   (*uint32)(unsafe.Pointer(&mem[offDataCPU])),
	}
	return g, nil
}

// recordHeader reads the header of the record at index i (i is 8-aligned and
// i+8 <= capacity, so the read is in bounds).
func recordHeader(data []byte, i uint64) (length uint32, typ, flags uint16) {
	h := binary.LittleEndian.Uint64(data[i : i+RecordHeaderSize])
	return uint32(h), uint16(h >> 32), uint16(h >> 48)
}

func putRecordHeader(data []byte, i uint64, length uint32, typ, flags uint16) {
	binary.LittleEndian.PutUint64(data[i:i+RecordHeaderSize], uint64(length)|uint64(typ)<<32|uint64(flags)<<48)
}

// NewHeap allocates 8-byte aligned heap memory for a ring, initialises it and
// returns it. Heap rings serve tests, fuzzing and in-process use; futexes work
// on them within one process.
func NewHeap(capacity, maxRecord int) ([]byte, error) {
	if maxRecord == 0 {
		maxRecord = DefaultMaxRecord(capacity)
	}
	if err := checkCapacity(capacity, maxRecord); err != nil {
		return nil, err
	}
	words := make([]uint64, (Size(capacity)+7)/8)
	mem := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), Size(capacity))
	if err := Init(mem, capacity, maxRecord); err != nil {
		return nil, err
	}
	return mem, nil
}
