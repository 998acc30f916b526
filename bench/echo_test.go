package bench

import "testing"

// BenchmarkEcho: host -> plugin process -> host echo, one impl per
// sub-benchmark, benchstat-friendly names:
//
//	BenchmarkEcho/impl=ringwire/form=bytes|into|view/size=10B|1KiB|64KiB|1MiB
//	BenchmarkEcho/impl=ringwire/form=into/callers=8/size=10B
//	BenchmarkEcho/impl=goplugin/form=bytes/size=...
//	BenchmarkEcho/impl=goplugin/form=bytes/callers=8/size=10B
//	BenchmarkEcho/impl=rawunix/form=bytes/size=...
//
// Each impl starts one child process, used by all its sub-benchmarks and
// reaped when they are done.
func BenchmarkEcho(b *testing.B) {
	b.Run("impl=ringwire", benchRingwire)
	b.Run("impl=goplugin", benchGoplugin)
	b.Run("impl=rawunix", benchRawunix)
}

// TestEchoAll runs the harness of every impl once (a real child each) and
// checks the bytes, so that `go test ./...` exercises it without
// benchmarking.
func TestEchoAll(t *testing.T) {
	impls := []struct {
		name string
		echo func(*testing.T, []byte)
	}{{"ringwire", echoRingwire}, {"goplugin", echoGoplugin}, {"rawunix", echoRawunix}}
	for _, impl := range impls {
		t.Run("impl="+impl.name, func(t *testing.T) {
			for _, sz := range []int{10, 1 << 20} {
				impl.echo(t, payload(sz))
			}
		})
	}
}
