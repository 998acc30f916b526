package handshake

// Protocol versions this build speaks.
const (
	MinVersion uint16 = 1
	MaxVersion uint16 = 1
)

// Wire prefix of every handshake message: Magic, then the payload length as a
// little-endian uint32, then the FlatBuffers payload.
const (
	Magic      = "RWH1"
	PrefixSize = 8
)

// Bounds on handshake messages, checked by Encode and Decode (and before any
// allocation by ReadMessage).
const (
	MaxHandshake     = 64 << 10 // payload bytes of one message
	MaxString        = 1 << 10  // Name, Version, Refuse.Message (UTF-8 bytes)
	MaxToken         = 256
	MaxContract      = 64
	MaxConstants     = 256     // entries in Constants
	MaxConstantKey   = 256     // bytes of one key (non-empty, UTF-8)
	MaxConstantValue = 4 << 10 // bytes of one value (UTF-8)
	MaxCompressions  = 8       // entries in Hello.Compressions
)

// Defaults and bounds of the listener's offer.
const (
	// DefaultMaxMessage is the largest message when Policy.MaxMessage is 0.
	DefaultMaxMessage = 128 << 20
	// DefaultRingSize is the ring capacity when Policy.RingSize is 0: on this
	// hardware 4 MiB rings were 3-5x faster than 1 MiB for 1-64 KiB messages.
	DefaultRingSize = 4 << 20
	// MinRingSize and MaxRingSize bound a ring's data capacity, which is a
	// power of two (the same bounds as package ring's capacity).
	MinRingSize = 1 << 10
	MaxRingSize = 1 << 30
)
