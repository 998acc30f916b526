// Package bench is ringwire's comparison suite: one `go test -bench` run
// that lines up ringwire (through its public plugin API, over shared memory,
// framed Unix and framed TCP plain, LZ4, ZSTD and mutual TLS) against
// hashicorp/go-plugin (gRPC and net/rpc), cloudwego/shmipc-go (defaults and
// tuned), an unchanged gRPC service over ringwire and over a plain socket,
// and hand-written socket echoes, each serving from a real child process,
// under the same load shapes, with eBPF counts (package probe) of what every
// call asks of the kernel. cmd/report renders a run as a results page with
// charts. It is a separate module so that the library's go.mod depends on
// none of the peers. See README.md.
package bench
