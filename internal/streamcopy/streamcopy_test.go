package streamcopy

import (
	"bytes"
	"testing"
)

func TestCopy(t *testing.T) {
	buf := make([]byte, 2<<20+256)
	for _, n := range []int{0, 1, 100, Threshold - 1, Threshold, Threshold + 1, 64 << 10, 1<<20 + 13, 2 << 20} {
		for _, off := range []int{0, 1, 8, 17, 63, 64} {
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(i*7 + i>>9 + 1)
			}
			clear(buf)
			dst := buf[off : off+n]
			if got := Copy(dst, src); got != n || !bytes.Equal(dst, src) {
				t.Fatalf("Copy of %d bytes at offset %d: returned %d, equal %v", n, off, got, bytes.Equal(dst, src))
			}
			if bytes.ContainsFunc(buf[:off], func(r rune) bool { return r != 0 }) || bytes.ContainsFunc(buf[off+n:], func(r rune) bool { return r != 0 }) {
				t.Fatalf("Copy of %d bytes at offset %d wrote outside dst", n, off)
			}
			if n > 0 {
				if got := Copy(dst[:n/2], src); got != n/2 || !bytes.Equal(dst[:n/2], src[:n/2]) {
					t.Fatalf("Copy of %d bytes into %d: returned %d", n, n/2, got)
				}
			}
		}
	}
}
