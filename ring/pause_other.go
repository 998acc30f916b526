//go:build !amd64 && !arm64

package ring

// pause is a no-op where we have no spin-wait hint instruction.
func pause() {}
