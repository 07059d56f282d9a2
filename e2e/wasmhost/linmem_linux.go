//go:build linux

package wasmhost

import (
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// reservedMemory backs each instance's linear memory the way Envoy's engines
// (V8, Wasmtime, WAMR) do: the memory's whole maximum is reserved as address
// space up front (no access, no commit), and memory.grow only makes the next
// pages accessible. The memory never moves, so a grow costs the guest what it
// costs in Envoy: next to nothing. wazero's default instead appends to a Go
// slice, copying all of linear memory whenever it outgrows its capacity: at
// 9 MiB, milliseconds inside the tick that grew, which a bench of guest time
// then charged to the filter.
var reservedMemory experimental.MemoryAllocator = experimental.MemoryAllocatorFunc(reserve)

// reserve maps max bytes of address space with no access; it falls back to a
// copying slice when the kernel refuses the reservation.
func reserve(capacity, max uint64) experimental.LinearMemory {
	if max > 0 && max <= 1<<32 {
		buf, err := syscall.Mmap(-1, 0, int(max), syscall.PROT_NONE,
			syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
		if err == nil {
			return &mappedMemory{buf: buf}
		}
	}
	return &sliceMemory{buf: make([]byte, 0, capacity)}
}

// mappedMemory is a reservation of which the first size bytes are accessible.
type mappedMemory struct {
	buf  []byte
	size uint64
}

// Reallocate makes the first size bytes accessible: the memory never moves.
func (m *mappedMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.buf)) {
		return nil
	}
	if size > m.size {
		if err := syscall.Mprotect(m.buf[m.size:size], syscall.PROT_READ|syscall.PROT_WRITE); err != nil {
			return nil // the guest sees memory.grow fail, as on a host out of memory
		}
		m.size = size
	}
	return m.buf[:size:size]
}

// Free unmaps the reservation.
func (m *mappedMemory) Free() {
	if m.buf != nil {
		_ = syscall.Munmap(m.buf)
		m.buf, m.size = nil, 0
	}
}
