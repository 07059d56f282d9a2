package main

import "testing"

func TestGCTarget(t *testing.T) {
	tests := []struct {
		name       string
		live, want uint64
	}{
		{"empty heap: the minimum headroom", 0, gcMinHeadroom},
		{"small heap: live plus the minimum headroom", 100 << 10, 228 << 10},
		{"a heap twice the minimum headroom grows by half", 2 * gcMinHeadroom, 3 * gcMinHeadroom},
		{"a larger heap grows by half", 1 << 20, 3 << 19},
		{"above the runtime's 4 MiB floor too", 6 << 20, 9 << 20},
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
		{"due once the heap reaches 1.5 × the live heap, not before", []step{
			{cycles: 0, heap: 400 << 10},
			{cycles: 0, heap: 599 << 10, want: false},
			{cycles: 0, heap: 600 << 10, want: true},
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
			{cycles: 1, heap: 400 << 10, want: false},
			{cycles: 1, heap: 599 << 10, want: false},
			{cycles: 1, heap: 600 << 10, want: true},
		}},
		{"the pacer governs above the runtime's floor", []step{
			{cycles: 0, heap: 4 << 20},
			{cycles: 0, heap: 6<<20 - 1, want: false},
			{cycles: 0, heap: 6 << 20, want: true},
		}},
		{"a live heap of gcPacerMaxLive is still collected", []step{
			{cycles: 0, heap: gcPacerMaxLive},
			{cycles: 0, heap: gcPacerMaxLive * 3 / 2, want: true},
		}},
		{"a live heap above gcPacerMaxLive is left to the runtime", []step{
			{cycles: 0, heap: gcPacerMaxLive + 1},
			{cycles: 0, heap: 64 << 20, want: false},
		}},
		{"the pacer comes back once the live heap falls below gcPacerMaxLive", []step{
			{cycles: 0, heap: 16 << 20},
			{cycles: 0, heap: 64 << 20, want: false},
			{cycles: 1, heap: 2 << 20, want: false},
			{cycles: 1, heap: 3 << 20, want: true},
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
