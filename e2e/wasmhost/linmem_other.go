//go:build !linux

package wasmhost

import "github.com/tetratelabs/wazero/experimental"

// reservedMemory is, off Linux, a copying slice (see linmem_linux.go for why a
// reservation is the faithful choice where it can be made).
var reservedMemory experimental.MemoryAllocator = experimental.MemoryAllocatorFunc(
	func(capacity, _ uint64) experimental.LinearMemory {
		return &sliceMemory{buf: make([]byte, 0, capacity)}
	})
