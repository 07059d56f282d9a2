package hold

import (
	"reflect"
	"testing"
)

func ids(rs []Request) []uint32 {
	var out []uint32
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func TestHoldAndResumeOldestFirst(t *testing.T) {
	h := New(Options{Max: 10, TimeoutMs: 1000, ProbeEveryMs: 250})
	for i, c := range []string{"a", "b", "a", "a"} {
		if !h.Hold(uint32(i+1), uint64(i), []byte(c), int64(i)) {
			t.Fatalf("Hold %d refused", i+1)
		}
	}
	if got := h.DueProbes(nil, 10); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("DueProbes = %v, want a and b", got)
	}
	h.ProbeSent("a", 10)
	if got := h.DueProbes(nil, 300); !reflect.DeepEqual(got, []string{"b"}) {
		t.Fatalf("DueProbes with a's check in flight = %v, want b", got)
	}
	if got := h.ProbeDone("a", false, 20); len(got) != 0 {
		t.Fatalf("not ready let go %v", got)
	}
	if got := h.DueProbes(nil, 200); !reflect.DeepEqual(got, []string{"b"}) {
		t.Fatalf("DueProbes 190ms after a's check = %v, want only b (a waits its interval)", got)
	}
	if got := h.DueProbes(nil, 260); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("DueProbes after a's interval = %v", got)
	}
	h.ProbeSent("a", 260)
	got := h.ProbeDone("a", true, 300)
	if !reflect.DeepEqual(ids(got), []uint32{1, 3, 4}) || got[0].HeldMs != 300 || got[0].Tag != 0 {
		t.Fatalf("ready let go %+v, want 1, 3, 4 oldest first", got)
	}
	if s := h.Stats(); s.Held != 4 || s.Resumed != 3 || s.Now != 1 || s.Probes != 2 || s.ProbesReady != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestBoundTimeoutForgetShutdown(t *testing.T) {
	tests := []struct {
		name string
		run  func(h *Holder) ([]uint32, Stats)
		want []uint32
		st   func(Stats) bool
	}{
		{"beyond Max a request is not held", func(h *Holder) ([]uint32, Stats) {
			h.Hold(1, 0, []byte("a"), 0)
			h.Hold(2, 0, []byte("a"), 0)
			ok := h.Hold(3, 0, []byte("a"), 0)
			if ok {
				return []uint32{3}, h.Stats()
			}
			return nil, h.Stats()
		}, nil, func(s Stats) bool { return s.OverBound == 1 && s.Now == 2 }},
		{"timeout lets go the old ones only", func(h *Holder) ([]uint32, Stats) {
			h.Hold(1, 0, []byte("a"), 0)
			h.Hold(2, 0, []byte("b"), 500)
			return ids(h.Expired(1000)), h.Stats()
		}, []uint32{1}, func(s Stats) bool { return s.TimedOut == 1 && s.Now == 1 }},
		{"a forgotten request is not let go", func(h *Holder) ([]uint32, Stats) {
			h.Hold(1, 0, []byte("a"), 0)
			h.Hold(2, 0, []byte("a"), 0)
			if !h.Forget(1) || h.Forget(1) || h.Forget(9) {
				return []uint32{0}, h.Stats()
			}
			return ids(h.ProbeDone("a", true, 10)), h.Stats()
		}, []uint32{2}, func(s Stats) bool { return s.Abandoned == 1 && s.Resumed == 1 && s.Now == 0 }},
		{"a freed slot reused by another cluster", func(h *Holder) ([]uint32, Stats) {
			h.Hold(1, 0, []byte("a"), 0)
			h.Forget(1)
			h.Hold(2, 0, []byte("b"), 0) // takes 1's slot; a's queue still names it
			return ids(h.ProbeDone("a", true, 10)), h.Stats()
		}, nil, func(s Stats) bool { return s.Now == 1 }},
		{"shutdown lets every request go", func(h *Holder) ([]uint32, Stats) {
			h.Hold(1, 0, []byte("a"), 0)
			h.Hold(2, 0, []byte("b"), 0)
			return ids(h.ReleaseAll(5)), h.Stats()
		}, []uint32{1, 2}, func(s Stats) bool { return s.Released == 2 && s.Now == 0 }},
		{"no second hold of one stream", func(h *Holder) ([]uint32, Stats) {
			h.Hold(1, 0, []byte("a"), 0)
			if h.Hold(1, 0, []byte("a"), 0) {
				return []uint32{1}, h.Stats()
			}
			return nil, h.Stats()
		}, nil, func(s Stats) bool { return s.Held == 1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New(Options{Max: 2, TimeoutMs: 1000, ProbeEveryMs: 250})
			got, st := tt.run(h)
			if !reflect.DeepEqual(got, tt.want) || !tt.st(st) {
				t.Fatalf("got %v, stats %+v; want %v", got, st, tt.want)
			}
		})
	}
}

// TestHoldAllocs: holding and letting go allocates nothing once warm.
func TestHoldAllocs(t *testing.T) {
	h := New(Options{Max: 100, TimeoutMs: 1000, ProbeEveryMs: 250})
	var probes []string
	cycle := func() {
		for i := uint32(1); i <= 50; i++ {
			h.Hold(i, 0, []byte("a"), 0)
		}
		probes = h.DueProbes(probes[:0], 0)
		h.ProbeSent("a", 0)
		h.ProbeDone("a", true, 1)
	}
	cycle()
	if n := testing.AllocsPerRun(10, cycle); n > 0 {
		t.Fatalf("%.1f allocations per cycle of 50 holds", n)
	}
}
