package wasmhost

// sliceMemory is a linear memory in a Go slice that is copied when it outgrows
// its capacity (wazero's own way): the fallback where address space cannot be
// reserved.
type sliceMemory struct{ buf []byte }

// Reallocate grows the slice to size bytes, zeroed.
func (m *sliceMemory) Reallocate(size uint64) []byte {
	if n := uint64(len(m.buf)); size > n {
		m.buf = append(m.buf, make([]byte, size-n)...)
	}
	return m.buf[:size]
}

// Free drops the slice.
func (m *sliceMemory) Free() { m.buf = nil }
