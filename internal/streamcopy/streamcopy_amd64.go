package streamcopy

import "unsafe"

// available: SSE2's MOVNTDQ is part of amd64.
const available = true

// ntCopy copies n bytes, n a positive multiple of 64, from src to dst (dst
// 16-byte aligned) with MOVNTDQ, and ends with SFENCE.
//
//go:noescape
func ntCopy(dst, src unsafe.Pointer, n uintptr)

func stream(dst, src []byte) int {
	n := len(dst)
	// Align dst to 64 bytes with an ordinary copy, stream the whole
	// 64-byte blocks, copy the tail.
	head := int((64 - uintptr(unsafe.Pointer(unsafe.SliceData(dst)))%64) % 64)
	copy(dst[:head], src[:head])
	body := (n - head) &^ 63
	if body > 0 {
		ntCopy(unsafe.Pointer(&dst[head]), unsafe.Pointer(&src[head]), uintptr(body))
	}
	copy(dst[head+body:], src[head+body:])
	return n
}
