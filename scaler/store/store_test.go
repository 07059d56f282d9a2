package store

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/reqcount/reqcount/messages"
)

// clock is a settable clock for tests.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func msg(svc, ns string, n int) messages.RequestCount {
	return messages.RequestCount{Count: n, Svc: svc, Namespace: ns}
}

func newStore(t *testing.T, opts Options) (*Store, *clock) {
	t.Helper()
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	opts.Now = c.now
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

var web = Key{"web", "shop"}

func TestNewOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{"zero value: defaults", Options{}, true},
		{"negative targets", Options{MaxTargets: -1}, false},
		{"window not a multiple of resolution", Options{MaxWindow: 1500 * time.Millisecond}, false},
		{"window below resolution", Options{MaxWindow: time.Second, Resolution: 2 * time.Second}, false},
		{"resolution below 1ms", Options{Resolution: time.Microsecond, MaxWindow: time.Millisecond}, false},
		{"too many buckets", Options{Resolution: time.Millisecond, MaxWindow: time.Hour}, false},
		{"5s buckets over an hour", Options{Resolution: 5 * time.Second, MaxWindow: time.Hour}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opts)
			if (err == nil) != tc.ok {
				t.Fatalf("New(%+v) = %v, want ok %v", tc.opts, err, tc.ok)
			}
		})
	}
}

// TestRateAndActive drives one target through arrivals at chosen offsets and
// checks Sum, Rate and Active after each step.
func TestRateAndActive(t *testing.T) {
	type step struct {
		advance time.Duration
		count   int // 0: no arrival
		window  time.Duration
		sum     uint64
		active  bool
		left    time.Duration
	}
	for _, tc := range []struct {
		name  string
		opts  Options
		steps []step
	}{
		{"one report, then silence", Options{MaxWindow: time.Minute}, []step{
			{0, 0, 10 * time.Second, 0, false, 0},
			{0, 30, 10 * time.Second, 30, true, 10 * time.Second},
			{4 * time.Second, 0, 10 * time.Second, 30, true, 6 * time.Second},
			{5 * time.Second, 0, 10 * time.Second, 30, true, time.Second},
			{time.Second, 0, 10 * time.Second, 0, false, 0},
			{0, 0, 20 * time.Second, 30, true, 10 * time.Second},
		}},
		{"reports every 30s, 2m window", Options{}, []step{
			{0, 60, 2 * time.Minute, 60, true, 2 * time.Minute},
			{30 * time.Second, 60, 2 * time.Minute, 120, true, 2 * time.Minute},
			{30 * time.Second, 60, 2 * time.Minute, 180, true, 2 * time.Minute},
			{30 * time.Second, 60, 2 * time.Minute, 240, true, 2 * time.Minute},
			{30 * time.Second, 60, 2 * time.Minute, 240, true, 2 * time.Minute}, // the first fell out
			{30 * time.Second, 0, 2 * time.Minute, 180, true, 90 * time.Second},
		}},
		{"counts in one second add up", Options{}, []step{
			{0, 1, time.Second, 1, true, time.Second},
			{100 * time.Millisecond, 2, time.Second, 3, true, time.Second},
			{800 * time.Millisecond, 3, time.Second, 6, true, time.Second},
			{100 * time.Millisecond, 0, time.Second, 0, true, 900 * time.Millisecond},
			{0, 0, 2 * time.Second, 6, true, 1900 * time.Millisecond},
		}},
		{"window longer than MaxWindow is MaxWindow", Options{MaxWindow: 10 * time.Second}, []step{
			{0, 5, time.Hour, 5, true, 10 * time.Second},
			{9 * time.Second, 0, time.Hour, 5, true, time.Second},
			{time.Second, 0, time.Hour, 0, false, 0},
		}},
		{"a gap longer than the ring clears it", Options{MaxWindow: 10 * time.Second}, []step{
			{0, 5, 10 * time.Second, 5, true, 10 * time.Second},
			{25 * time.Second, 7, 10 * time.Second, 7, true, 10 * time.Second},
			{9 * time.Second, 0, 10 * time.Second, 7, true, time.Second},
		}},
		{"5s buckets", Options{MaxWindow: time.Minute, Resolution: 5 * time.Second}, []step{
			{0, 4, 10 * time.Second, 4, true, 10 * time.Second},
			{5 * time.Second, 6, 10 * time.Second, 10, true, 10 * time.Second},
			{5 * time.Second, 0, 10 * time.Second, 6, true, 5 * time.Second},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, c := newStore(t, tc.opts)
			for i, st := range tc.steps {
				c.add(st.advance)
				if st.count > 0 {
					if err := s.Add([]messages.RequestCount{msg("web", "shop", st.count)}); err != nil {
						t.Fatal(err)
					}
				}
				if got := s.Sum(web, st.window); got != st.sum {
					t.Errorf("step %d: Sum(%v) = %d, want %d", i, st.window, got, st.sum)
				}
				secs := float64(min(st.window, s.MaxWindow())) / float64(time.Second)
				if got, want := s.Rate(web, st.window), float64(st.sum)/secs; math.Abs(got-want) > 1e-9 {
					t.Errorf("step %d: Rate(%v) = %v, want %v", i, st.window, got, want)
				}
				active, left := s.Active(web, st.window)
				if active != st.active || left != st.left {
					t.Errorf("step %d: Active(%v) = %v, %v; want %v, %v", i, st.window, active, left, st.active, st.left)
				}
			}
		})
	}
}

func TestAddKeepsTargetsApart(t *testing.T) {
	s, _ := newStore(t, Options{})
	if err := s.Add([]messages.RequestCount{msg("web", "shop", 3), msg("web", "blog", 5), msg("web", "shop", 1)}); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[Key]uint64{web: 4, {"web", "blog"}: 5, {"api", "shop"}: 0} {
		if got := s.Sum(k, time.Minute); got != want {
			t.Errorf("Sum(%v) = %d, want %d", k, got, want)
		}
	}
	if st := s.Stats(); st.Messages != 3 || st.Counts != 9 || st.Targets != 2 {
		t.Errorf("Stats = %+v, want 3 messages, 9 counts, 2 targets", st)
	}
}

func TestBucketSaturates(t *testing.T) {
	s, _ := newStore(t, Options{})
	for range 3 {
		if err := s.Add([]messages.RequestCount{msg("web", "shop", math.MaxInt32)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Sum(web, time.Second); got != math.MaxUint32 {
		t.Errorf("Sum = %d, want the bucket saturated at %d", got, uint32(math.MaxUint32))
	}
}

func TestFullRefusesWholeBatch(t *testing.T) {
	s, c := newStore(t, Options{MaxTargets: 2, MaxWindow: time.Minute})
	if err := s.Add([]messages.RequestCount{msg("a", "ns", 1), msg("b", "ns", 1)}); err != nil {
		t.Fatal(err)
	}
	// A known target still counts; a batch with one new target is refused whole.
	if err := s.Add([]messages.RequestCount{msg("a", "ns", 1)}); err != nil {
		t.Fatal(err)
	}
	err := s.Add([]messages.RequestCount{msg("a", "ns", 10), msg("c", "ns", 1)})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Add with a third target = %v, want ErrFull", err)
	}
	if got := s.Sum(Key{"a", "ns"}, time.Minute); got != 2 {
		t.Errorf("a's sum = %d after a refused batch, want 2 (nothing of the batch counted)", got)
	}
	if st := s.Stats(); st.Refused != 2 {
		t.Errorf("Refused = %d, want 2", st.Refused)
	}
	// Once b is silent for MaxWindow it makes room; a stays (reported later).
	c.add(30 * time.Second)
	if err := s.Add([]messages.RequestCount{msg("a", "ns", 1)}); err != nil {
		t.Fatal(err)
	}
	c.add(30 * time.Second)
	if err := s.Add([]messages.RequestCount{msg("c", "ns", 1)}); err != nil {
		t.Fatalf("Add after b went silent: %v", err)
	}
	if _, ok := s.Last(Key{"b", "ns"}); ok {
		t.Error("b is still held after MaxWindow of silence")
	}
	if _, ok := s.Last(Key{"a", "ns"}); !ok {
		t.Error("a was evicted though reported 30s ago")
	}
	if st := s.Stats(); st.Evicted != 1 || st.Targets != 2 {
		t.Errorf("Stats = %+v, want 1 evicted, 2 targets", st)
	}
}

func TestSweep(t *testing.T) {
	s, c := newStore(t, Options{MaxWindow: 10 * time.Second})
	for i := range 100 {
		if err := s.Add([]messages.RequestCount{msg(fmt.Sprintf("s%d", i), "ns", 1)}); err != nil {
			t.Fatal(err)
		}
		if i == 49 {
			c.add(5 * time.Second)
		}
	}
	c.add(5 * time.Second)
	if n := s.Sweep(); n != 50 {
		t.Errorf("Sweep = %d, want the 50 reported 10s ago", n)
	}
	if st := s.Stats(); st.Targets != 50 {
		t.Errorf("Targets = %d, want 50", st.Targets)
	}
}

func TestSubscription(t *testing.T) {
	s, _ := newStore(t, Options{})
	sub := s.Subscribe(web)
	other := s.Subscribe(Key{"api", "shop"})
	signalled := func(sub *Subscription) bool {
		select {
		case <-sub.C():
			return true
		default:
			return false
		}
	}
	if signalled(sub) {
		t.Fatal("signalled before any Add")
	}
	for range 3 {
		if err := s.Add([]messages.RequestCount{msg("web", "shop", 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if !signalled(sub) {
		t.Error("no signal after Add")
	}
	if signalled(sub) {
		t.Error("three Adds before a read gave more than one signal")
	}
	if signalled(other) {
		t.Error("another key's subscriber was signalled")
	}
	if st := s.Stats(); st.Subscribers != 2 {
		t.Errorf("Subscribers = %d, want 2", st.Subscribers)
	}
	sub.Close()
	sub.Close()
	other.Close()
	if st := s.Stats(); st.Subscribers != 0 {
		t.Errorf("Subscribers = %d after Close, want 0", st.Subscribers)
	}
	if err := s.Add([]messages.RequestCount{msg("web", "shop", 1)}); err != nil {
		t.Fatal(err)
	}
	if signalled(sub) {
		t.Error("signalled after Close")
	}
}

// TestClockBack: an arrival stamped before the newest bucket (the clock went
// back) still counts.
func TestClockBack(t *testing.T) {
	s, c := newStore(t, Options{})
	if err := s.Add([]messages.RequestCount{msg("web", "shop", 1)}); err != nil {
		t.Fatal(err)
	}
	c.add(-3 * time.Second)
	if err := s.Add([]messages.RequestCount{msg("web", "shop", 2)}); err != nil {
		t.Fatal(err)
	}
	c.add(3 * time.Second)
	if got := s.Sum(web, time.Second); got != 3 {
		t.Errorf("Sum = %d, want 3", got)
	}
}
