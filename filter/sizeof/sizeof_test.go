package sizeof

import "testing"

func TestSlice(t *testing.T) {
	type pair struct{ a, b uint32 }
	tests := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"nil", Slice[byte](nil), 0},
		{"bytes by capacity, not length", Slice(make([]byte, 3, 10)), 10},
		{"8-byte elements", Slice(make([]uint64, 0, 4)), 32},
		{"structs", Slice(make([]pair, 2)), 16},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}
