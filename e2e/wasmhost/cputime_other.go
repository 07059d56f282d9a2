//go:build !linux

package wasmhost

// threadCPU is not measured off Linux: Stats.GuestCPU stays empty.
func threadCPU() (int64, bool) { return 0, false }
