package wasmhost

import (
	"testing"
	"unsafe"
)

// TestReservedMemory checks the linear memory the host gives each instance:
// growing it keeps its address and its contents (as Envoy's engines reserve
// the maximum up front), new bytes read zero, it never grows past the
// maximum, and shrinking requests keep it as it is.
func TestReservedMemory(t *testing.T) {
	const page = 64 << 10
	tests := []struct {
		name  string
		max   uint64
		sizes []uint64 // Reallocate calls, in order
		fail  int      // index of the call that must return nil, or -1
	}{
		{"grows in place to the maximum", 256 * page, []uint64{page, 2 * page, 100 * page, 256 * page}, -1},
		{"a wasm32 module without a maximum: 4 GiB reserved", 1 << 32, []uint64{page, 1024 * page}, -1},
		{"refuses to grow past the maximum", 4 * page, []uint64{page, 5 * page}, 1},
		{"a smaller size keeps what is mapped", 8 * page, []uint64{4 * page, 2 * page, 8 * page}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := reservedMemory.Allocate(0, tt.max)
			defer m.Free()
			var base unsafe.Pointer
			var written uint64
			for i, size := range tt.sizes {
				buf := m.Reallocate(size)
				if i == tt.fail {
					if buf != nil {
						t.Fatalf("Reallocate(%d) past the maximum %d = %d bytes, want nil", size, tt.max, len(buf))
					}
					continue
				}
				if uint64(len(buf)) != size {
					t.Fatalf("Reallocate(%d) = %d bytes", size, len(buf))
				}
				if base == nil {
					base = unsafe.Pointer(unsafe.SliceData(buf))
				} else if p := unsafe.Pointer(unsafe.SliceData(buf)); p != base {
					t.Fatalf("Reallocate(%d) moved the memory", size)
				}
				for j := uint64(0); j < min(written, size); j += page {
					if buf[j] != byte(j/page+1) {
						t.Fatalf("byte %d lost on Reallocate(%d): %d", j, size, buf[j])
					}
				}
				for j := written; j < size; j += page {
					if buf[j] != 0 {
						t.Fatalf("new byte %d is %d, want 0", j, buf[j])
					}
					buf[j] = byte(j/page + 1)
				}
				written = max(written, size)
			}
		})
	}
}
