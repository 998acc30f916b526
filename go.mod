module github.com/ringwire/ringwire

go 1.26.0

require golang.org/x/sys v0.50.0

require (
	github.com/google/flatbuffers v25.12.19+incompatible
	github.com/klauspost/compress v1.20.3
	github.com/pierrec/lz4/v4 v4.1.33
	golang.org/x/net v0.63.0
)
