// Package bench holds ringwire's full-stack comparison benchmarks: a host
// calling echo in a real plugin process through ringwire (plugin.Launch and
// plugin.Serve), through hashicorp/go-plugin over gRPC, and through a
// hand-written length-prefix echo on a Unix socketpair, all in one
// `go test -bench` run. It is a separate module so that the library's go.mod
// does not depend on go-plugin or gRPC. See README.md.
package bench
