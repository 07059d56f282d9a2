package main

import "testing"

func TestGCTarget(t *testing.T) {
	tests := []struct {
		name       string
		live, want uint64
	}{
		{"empty heap: the minimum headroom", 0, gcMinHeadroom},
		{"small heap: live plus the minimum headroom", 100 << 10, 228 << 10},
		{"a heap as large as the minimum headroom doubles", gcMinHeadroom, 2 * gcMinHeadroom},
		{"a larger heap doubles", 1 << 20, 2 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := gcTarget(tt.live); got != tt.want {
				t.Errorf("gcTarget(%d) = %d, want %d", tt.live, got, tt.want)
			}
		})
	}
}

func TestGCPacer(t *testing.T) {
	type step struct {
		collect       bool   // record a pacer cycle instead of asking due
		cycles, heap  uint64 // due's arguments, or record's
		want          bool   // due's answer
		wantCollected uint64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"the first observation only takes the estimate", []step{
			{cycles: 0, heap: 3 << 20, want: false},
		}},
		{"due once the heap reaches twice the live heap, not before", []step{
			{cycles: 0, heap: 200 << 10},
			{cycles: 0, heap: 399 << 10, want: false},
			{cycles: 0, heap: 400 << 10, want: true},
		}},
		{"a small live heap grows by the minimum headroom", []step{
			{cycles: 0, heap: 50 << 10},
			{cycles: 0, heap: 177 << 10, want: false},
			{cycles: 0, heap: 178 << 10, want: true},
		}},
		{"after the pacer's cycle the live heap it recorded sets the target", []step{
			{cycles: 0, heap: 200 << 10},
			{cycles: 0, heap: 400 << 10, want: true},
			{collect: true, cycles: 1, heap: 100 << 10, wantCollected: 1},
			{cycles: 1, heap: 227 << 10, want: false, wantCollected: 1},
			{cycles: 1, heap: 228 << 10, want: true, wantCollected: 1},
		}},
		{"a cycle the runtime ran re-takes the estimate", []step{
			{cycles: 0, heap: 200 << 10},
			{cycles: 1, heap: 300 << 10, want: false},
			{cycles: 1, heap: 599 << 10, want: false},
			{cycles: 1, heap: 600 << 10, want: true},
		}},
		{"a live heap whose target reaches the runtime's floor is left to the runtime", []step{
			{cycles: 0, heap: 2 << 20},
			{cycles: 0, heap: 64 << 20, want: false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g gcPacer
			for i, s := range tt.steps {
				if s.collect {
					g.record(s.cycles, s.heap)
				} else if got := g.due(s.cycles, s.heap); got != s.want {
					t.Fatalf("step %d: due(%d, %d) = %v, want %v", i, s.cycles, s.heap, got, s.want)
				}
				if g.collected != s.wantCollected {
					t.Fatalf("step %d: collected %d, want %d", i, g.collected, s.wantCollected)
				}
			}
		})
	}
}
