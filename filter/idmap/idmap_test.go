package idmap

import (
	"math/rand/v2"
	"testing"
)

func TestMap(t *testing.T) {
	type op struct {
		kind       byte // 'p' put, 'd' delete, 'g' get
		key, value uint32
		want       bool // delete's or get's ok
		wantValue  uint32
	}
	tests := []struct {
		name    string
		ops     []op
		wantLen int
	}{
		{"empty map: get and delete find nothing", []op{
			{kind: 'g', key: 1}, {kind: 'd', key: 1},
		}, 0},
		{"key 0 is never held", []op{
			{kind: 'g', key: 0}, {kind: 'd', key: 0},
		}, 0},
		{"put then get", []op{
			{kind: 'p', key: 7, value: 70}, {kind: 'g', key: 7, want: true, wantValue: 70}, {kind: 'g', key: 8},
		}, 1},
		{"put replaces", []op{
			{kind: 'p', key: 7, value: 70}, {kind: 'p', key: 7, value: 71}, {kind: 'g', key: 7, want: true, wantValue: 71},
		}, 1},
		{"value 0 is a value", []op{
			{kind: 'p', key: 7}, {kind: 'g', key: 7, want: true},
		}, 1},
		{"delete removes once", []op{
			{kind: 'p', key: 7, value: 70}, {kind: 'd', key: 7, want: true}, {kind: 'd', key: 7}, {kind: 'g', key: 7},
		}, 0},
		{"the largest key", []op{
			{kind: 'p', key: ^uint32(0), value: 1}, {kind: 'g', key: ^uint32(0), want: true, wantValue: 1},
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Map
			for i, o := range tt.ops {
				switch o.kind {
				case 'p':
					m.Put(o.key, o.value)
				case 'd':
					if got := m.Delete(o.key); got != o.want {
						t.Fatalf("op %d: Delete(%d) = %v, want %v", i, o.key, got, o.want)
					}
				case 'g':
					v, ok := m.Get(o.key)
					if ok != o.want || v != o.wantValue {
						t.Fatalf("op %d: Get(%d) = %d, %v; want %d, %v", i, o.key, v, ok, o.wantValue, o.want)
					}
				}
			}
			if m.Len() != tt.wantLen {
				t.Errorf("Len() = %d, want %d", m.Len(), tt.wantLen)
			}
		})
	}
}

func TestPutZeroPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Put(0, …) did not panic")
		}
	}()
	var m Map
	m.Put(0, 1)
}

// TestAgainstGoMap runs long random sequences of context-id-like operations (ids
// that only grow, streams of random lifetimes, a few long-lived ones) and, with
// random keys, crowded probe runs that wrap around the table, checking every
// answer against a Go map, and every held key after each delete.
func TestAgainstGoMap(t *testing.T) {
	tests := []struct {
		name string
		key  func(r *rand.Rand, next *uint32) uint32
	}{
		{"growing ids", func(_ *rand.Rand, next *uint32) uint32 { *next++; return *next }},
		{"random ids", func(r *rand.Rand, _ *uint32) uint32 { return r.Uint32N(1<<12) + 1 }},
		{"ids on one home slot", func(r *rand.Rand, _ *uint32) uint32 { return (r.Uint32N(63) + 1) << 26 }},
	}
	for _, tt := range tests {
		for seed := range uint64(10) {
			r := rand.New(rand.NewPCG(seed, 1))
			var m Map
			ref := map[uint32]uint32{}
			var live []uint32
			var next uint32
			for step := range 5000 {
				switch x := r.IntN(10); {
				case x < 5 || len(live) == 0:
					k, v := tt.key(r, &next), r.Uint32()
					m.Put(k, v)
					if _, ok := ref[k]; !ok {
						live = append(live, k)
					}
					ref[k] = v
				case x < 9:
					// Delete a live key: mostly recent ones, sometimes an old one.
					i := len(live) - 1 - r.IntN(min(len(live), 8))
					if r.IntN(4) == 0 {
						i = r.IntN(len(live))
					}
					k := live[i]
					live[i] = live[len(live)-1]
					live = live[:len(live)-1]
					if !m.Delete(k) {
						t.Fatalf("%s seed %d step %d: Delete(%d) = false for a held key", tt.name, seed, step, k)
					}
					delete(ref, k)
					for k, v := range ref {
						if got, ok := m.Get(k); !ok || got != v {
							t.Fatalf("%s seed %d step %d: after a delete, Get(%d) = %d, %v; want %d", tt.name, seed, step, k, got, ok, v)
						}
					}
				default:
					k := tt.key(r, &next)
					want, wantOK := ref[k]
					if got, ok := m.Get(k); ok != wantOK || got != want {
						t.Fatalf("%s seed %d step %d: Get(%d) = %d, %v; want %d, %v", tt.name, seed, step, k, got, ok, want, wantOK)
					}
				}
				if m.Len() != len(ref) {
					t.Fatalf("%s seed %d step %d: Len() = %d, want %d", tt.name, seed, step, m.Len(), len(ref))
				}
			}
		}
	}
}

// TestStreamsAllocateNothing: once the table has room, a stream's put, gets and
// delete allocate nothing.
func TestStreamsAllocateNothing(t *testing.T) {
	var m Map
	for id := uint32(1); id <= 100; id++ {
		m.Put(id, 1)
	}
	next := uint32(1000)
	allocs := testing.AllocsPerRun(1000, func() {
		next++
		m.Put(next, 1)
		m.Get(next)
		m.Delete(next)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per stream, want 0", allocs)
	}
}

// BenchmarkStream is one stream's bookkeeping with 100 streams live: a put, three
// gets and a delete, against the same with a Go map (what the SDK does).
func BenchmarkStream(b *testing.B) {
	b.Run("idmap", func(b *testing.B) {
		var m Map
		for id := uint32(1); id <= 100; id++ {
			m.Put(id, 1)
		}
		next := uint32(1000)
		for b.Loop() {
			next++
			m.Put(next, 1)
			m.Get(next)
			m.Get(next)
			m.Get(next)
			m.Delete(next)
		}
	})
	b.Run("go map", func(b *testing.B) {
		m := map[uint32]uint32{}
		for id := uint32(1); id <= 100; id++ {
			m[id] = 1
		}
		next := uint32(1000)
		for b.Loop() {
			next++
			m[next] = 1
			_ = m[next]
			_ = m[next]
			_ = m[next]
			delete(m, next)
		}
	})
}
