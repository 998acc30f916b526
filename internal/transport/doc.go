// Package transport is ringwire's one message-oriented connection, whatever
// carries it: a pair of shared-memory rings when both ends share a Linux host,
// framed messages over a Unix socket otherwise, or framed messages over TCP
// inside mutual TLS between hosts. Dial and Listen run the negotiate handshake
// and pick the fastest transport both sides can use; NetConn and NetListener
// let net/rpc, gRPC and other stream code run over any of them unchanged.
package transport
