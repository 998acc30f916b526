// Package transport gives stream code (net/rpc, gRPC, HTTP, anything that
// runs over a net.Conn) ringwire's connections: Dial and Listen run the
// versioned handshake (token, contract, capabilities) on a Unix socket or
// TCP address and then carry the stream over the fastest transport both
// sides can use: a pair of shared-memory rings when both ends share a Linux
// host, framed messages over the Unix socket otherwise, or framed messages
// over TCP inside mutual TLS (with negotiated LZ4 or ZSTD compression)
// between hosts. CA issues the certificates for that TLS without files.
//
// Plugins and hosts do not need this package: package plugin runs the same
// connections under its RPC. The message-level connection underneath is
// internal to the module.
package transport
