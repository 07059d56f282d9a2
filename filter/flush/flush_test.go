package flush_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"testing"

	"github.com/reqcount/reqcount/filter/flush"
	"github.com/reqcount/reqcount/filter/table"
	"github.com/reqcount/reqcount/messages"
)

// sentCall is one body the fake host accepted.
type sentCall struct {
	id   uint64
	body string
}

// fakeHost records what the Flusher dispatches and can be told to refuse.
type fakeHost struct {
	attempts int        // dispatch calls, refused ones included
	sent     []sentCall // accepted dispatches, in order
	// fail, when set, is asked on each attempt (1-based) whether to refuse it.
	fail func(attempt int) error
}

var errRefused = errors.New("bad argument: unknown cluster")

func (h *fakeHost) dispatch(body []byte, id uint64) error {
	h.attempts++
	if h.fail != nil {
		if err := h.fail(h.attempts); err != nil {
			return err
		}
	}
	// The Flusher reuses its buffer: keep a copy, as the host does.
	h.sent = append(h.sent, sentCall{id: id, body: string(body)})
	return nil
}

// take returns the calls sent since the last take.
func (h *fakeHost) take() []sentCall {
	s := h.sent
	h.sent = nil
	return s
}

func bodies(cs []sentCall) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.body)
	}
	return out
}

// newFlusher returns a Flusher over a table of max keys, with its fake host.
func newFlusher(max int, opts flush.Options) (*table.Table, *fakeHost, *flush.Flusher) {
	tb := table.New(max)
	h := &fakeHost{}
	return tb, h, flush.New(tb, opts, h.dispatch)
}

func add(tb *table.Table, k string, n uint64) {
	if !tb.Add([]byte(k), n) {
		panic("table full: " + k)
	}
}

func inFlight(tb *table.Table) (n uint64) {
	tb.Each(func(_ table.Slot, e *table.Entry) { n += e.InFlight })
	return n
}

func body(n int, svc, ns string) string {
	return fmt.Sprintf(`{"count":%d,"svc":%q,"namespace":%q}`, n, svc, ns)
}

func TestSingleModeBodies(t *testing.T) {
	tb, h, f := newFlusher(10, flush.Options{})
	add(tb, "web.shop", 3)
	add(tb, "api.shop", 1)
	add(tb, "web.blog", 2)
	f.Tick()
	got := h.take()
	want := []sentCall{
		{1, body(3, "web", "shop")},
		{2, body(1, "api", "shop")},
		{3, body(2, "web", "blog")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("sent %+v, want %+v", got, want)
	}
	// Each body is exactly what the operator decodes: one object.
	for _, c := range got {
		var one messages.RequestCount
		if err := json.Unmarshal([]byte(c.body), &one); err != nil {
			t.Fatalf("body %s: %v", c.body, err)
		}
	}
	if f.InFlight() != 3 || f.Pending() != 0 || inFlight(tb) != 6 {
		t.Fatalf("InFlight %d Pending %d counts in flight %d", f.InFlight(), f.Pending(), inFlight(tb))
	}
	if s := f.Stats(); s.CallsSent != 3 || s.CountsSent != 6 {
		t.Fatalf("stats %+v", s)
	}
}

func TestBatchModeBody(t *testing.T) {
	tb, h, f := newFlusher(10, flush.Options{Batch: true})
	add(tb, "web.shop", 3)
	add(tb, "api.shop", 1)
	add(tb, "web.blog", 2)
	f.Tick()
	got := h.take()
	want := "[" + body(3, "web", "shop") + "," + body(1, "api", "shop") + "," + body(2, "web", "blog") + "]"
	if len(got) != 1 || got[0].body != want || got[0].id != 1 {
		t.Fatalf("sent %+v, want one call with %s", got, want)
	}
	var arr []messages.RequestCount
	if err := json.Unmarshal([]byte(got[0].body), &arr); err != nil || len(arr) != 3 {
		t.Fatalf("batch body is not a JSON array of 3: %v", err)
	}
	if s := f.Stats(); s.CallsSent != 1 || s.CountsSent != 6 || f.InFlight() != 1 {
		t.Fatalf("stats %+v, InFlight %d", s, f.InFlight())
	}

	// While a key is in flight it is not sent again; a new key goes out in a
	// batch of its own.
	add(tb, "web.shop", 1)
	add(tb, "new.shop", 1)
	f.Tick()
	want = "[" + body(1, "new", "shop") + "]"
	if got := h.take(); len(got) != 1 || got[0].body != want || got[0].id != 2 {
		t.Fatalf("second batch %+v, want only the key not in flight: %s", got, want)
	}
	f.Done(1, flush.Delivered, 200)
	f.Tick()
	want = "[" + body(1, "web", "shop") + "]"
	if got := h.take(); len(got) != 1 || got[0].body != want || got[0].id != 3 {
		t.Fatalf("sent %+v, want %s", got, want)
	}
	if s := f.Stats(); s.CountsSent != 8 || f.InFlight() != 2 {
		t.Fatalf("stats %+v, InFlight %d", s, f.InFlight())
	}
}

// TestBatchHoldsOnlyPending checks a batch carries the keys with counts to send,
// not the idle ones still in the table between ticks.
func TestBatchHoldsOnlyPending(t *testing.T) {
	tb, h, f := newFlusher(10, flush.Options{Batch: true})
	add(tb, "a.ns", 1)
	add(tb, "b.ns", 1)
	f.Tick()
	f.Done(h.take()[0].id, flush.Delivered, 200)
	add(tb, "b.ns", 2) // a.ns is idle but not evicted until the next tick
	f.Drain()
	want := "[" + body(2, "b", "ns") + "]"
	if got := h.take(); len(got) != 1 || got[0].body != want {
		t.Fatalf("sent %+v, want %s", got, want)
	}
}

func TestNothingToSend(t *testing.T) {
	for _, batch := range []bool{false, true} {
		_, h, f := newFlusher(10, flush.Options{Batch: batch})
		f.Tick()
		f.Flush()
		f.Tick()
		if h.attempts != 0 {
			t.Fatalf("batch=%v: %d dispatches with nothing to send", batch, h.attempts)
		}
	}
}

func TestInFlightKeyNotSentAgain(t *testing.T) {
	tb, h, f := newFlusher(10, flush.Options{})
	add(tb, "web.shop", 1)
	f.Tick()
	add(tb, "web.shop", 2)
	add(tb, "api.shop", 1)
	f.Tick()
	got := bodies(h.take())
	want := []string{body(1, "web", "shop"), body(1, "api", "shop")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("sent %q, want %q", got, want)
	}
	f.Done(1, flush.Delivered, 200)
	f.Tick()
	if got := bodies(h.take()); !reflect.DeepEqual(got, []string{body(2, "web", "shop")}) {
		t.Fatalf("after delivery sent %q", got)
	}
}

// TestDispatchError checks a refused dispatch keeps the counts pending, stops the
// tick's remaining sends, and that they go out on the next tick.
func TestDispatchError(t *testing.T) {
	for _, tc := range []struct {
		name         string
		batch        bool
		failAttempt  int // the attempt refused
		wantAttempts int // attempts in the failing tick
		wantSent     []string
		wantNext     []string // sent on the next tick
	}{
		{"single: first refused", false, 1, 1, nil,
			[]string{body(3, "a", "ns"), body(1, "b", "ns"), body(2, "c", "ns")}},
		{"single: second refused", false, 2, 2, []string{body(3, "a", "ns")},
			[]string{body(1, "b", "ns"), body(2, "c", "ns")}},
		{"single: last refused", false, 3, 3, []string{body(3, "a", "ns"), body(1, "b", "ns")},
			[]string{body(2, "c", "ns")}},
		{"batch refused", true, 1, 1, nil,
			[]string{"[" + body(3, "a", "ns") + "," + body(1, "b", "ns") + "," + body(2, "c", "ns") + "]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb, h, f := newFlusher(10, flush.Options{Batch: tc.batch})
			add(tb, "a.ns", 3)
			add(tb, "b.ns", 1)
			add(tb, "c.ns", 2)
			h.fail = func(n int) error {
				if n == tc.failAttempt {
					return errRefused
				}
				return nil
			}
			f.Tick()
			if h.attempts != tc.wantAttempts {
				t.Fatalf("%d dispatch attempts, want %d (sends must stop at the first error)", h.attempts, tc.wantAttempts)
			}
			if got := bodies(h.take()); !reflect.DeepEqual(got, tc.wantSent) {
				t.Fatalf("sent %q, want %q", got, tc.wantSent)
			}
			s := f.Stats()
			if s.DispatchErrors != 1 || s.LastDispatchError != errRefused {
				t.Fatalf("DispatchErrors %d LastDispatchError %v", s.DispatchErrors, s.LastDispatchError)
			}
			var sentCounts uint64
			for _, b := range tc.wantSent {
				ms, _ := messages.Decode([]byte(b))
				sentCounts += uint64(ms[0].Count)
			}
			if f.Pending() != 6-sentCounts || inFlight(tb) != sentCounts {
				t.Fatalf("Pending %d, in flight %d; want %d, %d", f.Pending(), inFlight(tb), 6-sentCounts, sentCounts)
			}
			if s.CountsSent != sentCounts {
				t.Fatalf("CountsSent %d, want %d", s.CountsSent, sentCounts)
			}

			f.Tick()
			if got := bodies(h.take()); !reflect.DeepEqual(got, tc.wantNext) {
				t.Fatalf("next tick sent %q, want %q", got, tc.wantNext)
			}
			if f.Pending() != 0 {
				t.Fatalf("Pending %d after the retry", f.Pending())
			}
		})
	}
}

// TestDone checks how each outcome settles a call and what Stats count.
func TestDone(t *testing.T) {
	for _, tc := range []struct {
		name    string
		batch   bool
		outcome flush.Outcome
		status  int
		want    flush.Stats
		pending uint64 // after Done
	}{
		{"single delivered", false, flush.Delivered, 200,
			flush.Stats{CallsSent: 2, CallsDelivered: 1, CountsSent: 5, CountsDelivered: 3}, 0},
		{"single rejected", false, flush.Rejected, 503,
			flush.Stats{CallsSent: 2, CallsRejected: 1, CountsSent: 5, CountsRequeued: 3, LastStatus: 503}, 3},
		{"single reset", false, flush.Reset, 0,
			flush.Stats{CallsSent: 2, CallsReset: 1, CountsSent: 5, CountsRequeued: 3}, 3},
		{"batch delivered", true, flush.Delivered, 204,
			flush.Stats{CallsSent: 1, CallsDelivered: 1, CountsSent: 5, CountsDelivered: 5}, 0},
		{"batch rejected", true, flush.Rejected, 400,
			flush.Stats{CallsSent: 1, CallsRejected: 1, CountsSent: 5, CountsRequeued: 5, LastStatus: 400}, 5},
		{"batch reset", true, flush.Reset, 0,
			flush.Stats{CallsSent: 1, CallsReset: 1, CountsSent: 5, CountsRequeued: 5}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb, h, f := newFlusher(10, flush.Options{Batch: tc.batch})
			add(tb, "a.ns", 3)
			add(tb, "b.ns", 2)
			f.Tick()
			sent := h.take()
			f.Done(sent[0].id, tc.outcome, tc.status)
			if got := f.Stats(); got != tc.want {
				t.Fatalf("stats\n got  %+v\n want %+v", got, tc.want)
			}
			if f.Pending() != tc.pending {
				t.Fatalf("Pending %d, want %d", f.Pending(), tc.pending)
			}
			// What was put back goes out on the next tick, with what came since.
			add(tb, "a.ns", 1)
			f.Tick()
			next := h.take()
			var got []messages.RequestCount
			for _, c := range next {
				ms, err := messages.Decode([]byte(c.body))
				if err != nil {
					t.Fatalf("body %s: %v", c.body, err)
				}
				got = append(got, ms...)
			}
			want := []messages.RequestCount{{Count: 1, Svc: "a", Namespace: "ns"}}
			switch {
			case tc.outcome != flush.Delivered && tc.batch:
				want = []messages.RequestCount{{Count: 4, Svc: "a", Namespace: "ns"}, {Count: 2, Svc: "b", Namespace: "ns"}}
			case tc.outcome != flush.Delivered:
				want = []messages.RequestCount{{Count: 4, Svc: "a", Namespace: "ns"}} // b.ns is still in flight
			case tc.batch:
				// delivered: only the new count
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("next tick sent %+v, want %+v", got, want)
			}
		})
	}
}

func TestLastStatus(t *testing.T) {
	tb, h, f := newFlusher(10, flush.Options{})
	add(tb, "a.ns", 1)
	for _, tc := range []struct {
		outcome flush.Outcome
		status  int
		want    int
	}{
		{flush.Rejected, 503, 503},
		{flush.Delivered, 200, 503}, // a 2xx does not overwrite the last failure
		{flush.Rejected, 404, 404},
		{flush.Reset, 0, 404}, // a reset has no status: the last one stays
	} {
		f.Tick()
		c := h.take()
		if len(c) != 1 {
			t.Fatalf("sent %+v", c)
		}
		f.Done(c[0].id, tc.outcome, tc.status)
		if got := f.Stats().LastStatus; got != tc.want {
			t.Fatalf("after %v %d: LastStatus %d, want %d", tc.outcome, tc.status, got, tc.want)
		}
		add(tb, "a.ns", 1)
	}
}

func TestLateAnswers(t *testing.T) {
	tb, h, f := newFlusher(10, flush.Options{})
	add(tb, "a.ns", 2)
	f.Tick()
	id := h.take()[0].id
	f.Done(999, flush.Delivered, 200) // never made
	f.Done(id, flush.Delivered, 200)
	f.Done(id, flush.Delivered, 200) // answered twice
	f.Done(id, flush.Rejected, 500)
	s := f.Stats()
	if s.LateAnswers != 3 || s.CallsDelivered != 1 || s.CountsDelivered != 2 || s.CallsRejected != 0 || s.CountsRequeued != 0 {
		t.Fatalf("stats %+v", s)
	}
	if f.Pending() != 0 || f.InFlight() != 0 {
		t.Fatalf("Pending %d InFlight %d", f.Pending(), f.InFlight())
	}
}

// TestAbandon checks a call unanswered for more than AbandonAfter ticks has its
// counts put back and sent again, and that its late answer is then ignored.
func TestAbandon(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprintf("batch=%v", batch), func(t *testing.T) {
			tb, h, f := newFlusher(10, flush.Options{Batch: batch, AbandonAfter: 2})
			add(tb, "a.ns", 3)
			f.Tick() // tick 1: sent
			first := h.take()
			if len(first) != 1 {
				t.Fatalf("sent %+v", first)
			}
			f.Tick() // tick 2
			f.Tick() // tick 3: unanswered for 2 ticks, still waited for
			if got := h.take(); len(got) != 0 || f.Stats().CallsAbandoned != 0 {
				t.Fatalf("abandoned too early: sent %+v, stats %+v", got, f.Stats())
			}
			add(tb, "a.ns", 1)
			f.Tick() // tick 4: abandoned, and its counts go out again at once
			again := h.take()
			if len(again) != 1 || again[0].id == first[0].id {
				t.Fatalf("after abandoning sent %+v", again)
			}
			ms, _ := messages.Decode([]byte(again[0].body))
			if len(ms) != 1 || ms[0].Count != 4 {
				t.Fatalf("resent %s, want the 3 abandoned plus 1 new", again[0].body)
			}
			s := f.Stats()
			if s.CallsAbandoned != 1 || s.CountsRequeued != 3 || f.InFlight() != 1 {
				t.Fatalf("stats %+v, InFlight %d", s, f.InFlight())
			}

			// The abandoned call's late 200 must not count its requests twice.
			f.Done(first[0].id, flush.Delivered, 200)
			if s := f.Stats(); s.LateAnswers != 1 || s.CountsDelivered != 0 || s.CallsDelivered != 0 {
				t.Fatalf("late answer counted: %+v", s)
			}
			if inFlight(tb) != 4 || f.InFlight() != 1 {
				t.Fatalf("late answer settled the new call: in flight %d", inFlight(tb))
			}
			f.Done(again[0].id, flush.Delivered, 200)
			if s := f.Stats(); s.CountsDelivered != 4 || s.CallsDelivered != 1 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// TestNeverAbandon checks AbandonAfter 0 waits forever.
func TestNeverAbandon(t *testing.T) {
	tb, h, f := newFlusher(10, flush.Options{})
	add(tb, "a.ns", 1)
	for i := 0; i < 1000; i++ {
		f.Tick()
	}
	if len(h.take()) != 1 || f.Stats().CallsAbandoned != 0 || f.InFlight() != 1 {
		t.Fatalf("stats %+v", f.Stats())
	}
}

// TestEviction checks Tick drops idle keys, and only those.
func TestEviction(t *testing.T) {
	tb, h, f := newFlusher(10, flush.Options{})
	add(tb, "idle.ns", 1)
	add(tb, "inflight.ns", 1)
	add(tb, "pending.ns", 1)
	f.Tick()
	calls := h.take()
	f.Done(calls[0].id, flush.Delivered, 200) // idle.ns: delivered, nothing new
	f.Done(calls[2].id, flush.Rejected, 503)  // pending.ns: back to pending
	h.fail = func(int) error { return errRefused }
	f.Tick() // evicts idle.ns; pending.ns cannot be sent
	if _, ok := tb.Lookup("idle.ns"); ok {
		t.Fatal("idle key not evicted")
	}
	for _, k := range []string{"inflight.ns", "pending.ns"} {
		if _, ok := tb.Lookup(k); !ok {
			t.Fatalf("%s evicted", k)
		}
	}
	if s := f.Stats(); s.KeysEvicted != 1 || tb.Len() != 2 {
		t.Fatalf("KeysEvicted %d, Len %d", s.KeysEvicted, tb.Len())
	}
	// A key counted since the last tick is not idle.
	add(tb, "fresh.ns", 1)
	f.Tick()
	if _, ok := tb.Lookup("fresh.ns"); !ok {
		t.Fatal("key with new counts evicted")
	}
	// Once all is delivered, every key goes on the next tick.
	h.fail = nil
	f.Tick()
	for _, c := range h.take() {
		f.Done(c.id, flush.Delivered, 200)
	}
	f.Done(calls[1].id, flush.Delivered, 200)
	f.Tick()
	if tb.Len() != 0 || f.Stats().KeysEvicted != 4 {
		t.Fatalf("Len %d KeysEvicted %d after all delivered", tb.Len(), f.Stats().KeysEvicted)
	}
	if f.Stats().CountsDelivered != 4 {
		t.Fatalf("CountsDelivered %d", f.Stats().CountsDelivered)
	}
}

func TestDrain(t *testing.T) {
	for _, tc := range []struct {
		name      string
		batch     bool
		refuse    bool
		inflight  bool // a call is already in flight for a.ns
		wantSent  int
		wantCalls int    // Drain's result
		wantLeft  uint64 // Pending after Drain
	}{
		{"single", false, false, false, 2, 2, 0},
		{"single, a.ns in flight", false, false, true, 1, 2, 1},
		{"single, dispatch refused", false, true, false, 0, 0, 3},
		{"batch", true, false, false, 1, 1, 0},
		{"batch, a.ns in flight", true, false, true, 1, 2, 1},
		{"batch, dispatch refused", true, true, false, 0, 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb, h, f := newFlusher(10, flush.Options{Batch: tc.batch, AbandonAfter: 1})
			add(tb, "a.ns", 1)
			if tc.inflight {
				f.Tick()
				h.take()
				add(tb, "a.ns", 1) // a.ns: 1 in flight, 1 pending
			} else {
				add(tb, "a.ns", 1)
			}
			add(tb, "b.ns", 1)
			if tc.refuse {
				h.fail = func(int) error { return errRefused }
			}
			if n := f.Drain(); n != tc.wantCalls {
				t.Fatalf("Drain() = %d, want %d", n, tc.wantCalls)
			}
			sent := h.take()
			if len(sent) != tc.wantSent {
				t.Fatalf("Drain sent %+v, want %d calls", sent, tc.wantSent)
			}
			if f.Pending() != tc.wantLeft {
				t.Fatalf("Pending() = %d, want %d", f.Pending(), tc.wantLeft)
			}
			// Nothing is sent after Drain: not on Flush, not on Tick (even after
			// abandoning), not for new counts, not for put-back counts.
			h.fail = nil
			add(tb, "c.ns", 5)
			for _, c := range sent {
				f.Done(c.id, flush.Rejected, 503)
			}
			attempts := h.attempts
			f.Flush()
			for i := 0; i < 5; i++ {
				f.Tick()
			}
			f.Drain()
			if h.attempts != attempts {
				t.Fatalf("%d dispatches after Drain", h.attempts-attempts)
			}
			if f.Pending() != 8 || f.InFlight() != 0 {
				t.Fatalf("Pending %d, InFlight %d: want all 8 counts pending", f.Pending(), f.InFlight())
			}
		})
	}
}

// TestRandomInterleaving drives a Flusher with a long seeded random sequence of
// counts, ticks, answers (some late, some to abandoned calls) and refused
// dispatches, checking its accounting after every step against a model, and at the
// end that every count was delivered exactly once.
func TestRandomInterleaving(t *testing.T) {
	for _, batch := range []bool{false, true} {
		for _, abandon := range []uint64{0, 3} {
			for _, slices := range []int{1, 3} {
				for _, seed := range []int64{1, 2, 3} {
					t.Run(fmt.Sprintf("batch=%v/abandon=%d/slices=%d/seed=%d", batch, abandon, slices, seed), func(t *testing.T) {
						runInterleaving(t, batch, abandon, slices, seed)
					})
				}
			}
		}
	}
}

// modelCall is a call as the model sees it.
type modelCall struct {
	msgs      []messages.RequestCount
	tick      uint64
	abandoned bool // the Flusher has given up on it; its answer is late
}

func runInterleaving(t *testing.T, batch bool, abandonAfter uint64, slices int, seed int64) {
	const (
		steps   = 4000
		numKeys = 8
		maxKeys = 5 // fewer than numKeys: some counts are refused, keys are evicted and come back
	)
	rng := rand.New(rand.NewSource(seed))
	tb := table.New(maxKeys)
	var (
		tick      uint64
		added     = map[string]uint64{}
		delivered = map[string]uint64{}
		live      = map[uint64]*modelCall{}
		refuse    bool
		abandoned uint64
		late      uint64
		waking    bool                  // inside Wake: the call is a wake-up, not a regular report
		reported  = map[string]uint64{} // key → tick of its last regular report
		wakeups   uint64
	)
	var f *flush.Flusher
	f = flush.New(tb, flush.Options{Batch: batch, AbandonAfter: abandonAfter, Slices: slices, Phase: int(seed)},
		func(b []byte, id uint64) error {
			if refuse {
				return errRefused
			}
			if _, dup := live[id]; dup {
				t.Fatalf("id %d reused while live", id)
			}
			want := byte('{') // single mode: one object, what the operator decodes
			if batch {
				want = '['
			}
			if len(b) == 0 || b[0] != want {
				t.Fatalf("batch=%v: body %s does not start with %c", batch, b, want)
			}
			ms, err := messages.Decode(b)
			if err != nil {
				t.Fatalf("body %s: %v", b, err)
			}
			for _, c := range live {
				if c.abandoned {
					continue
				}
				for _, m := range c.msgs {
					for _, n := range ms {
						if m.Svc == n.Svc && m.Namespace == n.Namespace {
							t.Fatalf("%s sent while %v is in flight for the same key", b, c.msgs)
						}
					}
				}
			}
			if waking && len(ms) != 1 {
				t.Fatalf("wake-up %s carries %d keys", b, len(ms))
			}
			for _, m := range ms {
				k := m.Svc + "." + m.Namespace
				if last, ok := reported[k]; ok && !waking && !f.Draining() && tick-last < uint64(slices) {
					t.Fatalf("%s reported at tick %d, %d ticks after its last report: more than once per interval of %d ticks",
						k, tick, tick-last, slices)
				}
				if !waking {
					reported[k] = tick
				}
			}
			seen := map[string]bool{}
			for _, m := range ms {
				k := m.Svc + "." + m.Namespace
				if seen[k] {
					t.Fatalf("key %s twice in one batch %s", k, b)
				}
				seen[k] = true
			}
			live[id] = &modelCall{msgs: ms, tick: tick}
			return nil
		})

	total := func(m map[string]uint64) (n uint64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	check := func(step int, op string) {
		t.Helper()
		s := f.Stats()
		pending, inflight := f.Pending(), inFlight(tb)
		if s.CountsDelivered+pending+inflight != total(added) {
			t.Fatalf("step %d (%s): delivered %d + pending %d + in flight %d != added %d",
				step, op, s.CountsDelivered, pending, inflight, total(added))
		}
		if s.CountsDelivered != total(delivered) {
			t.Fatalf("step %d (%s): CountsDelivered %d, model %d", step, op, s.CountsDelivered, total(delivered))
		}
		var liveCalls int
		var liveCounts uint64
		for _, c := range live {
			if !c.abandoned {
				liveCalls++
				for _, m := range c.msgs {
					liveCounts += uint64(m.Count)
				}
			}
		}
		if f.InFlight() != liveCalls || inflight != liveCounts {
			t.Fatalf("step %d (%s): InFlight %d calls / %d counts, model %d / %d",
				step, op, f.InFlight(), inflight, liveCalls, liveCounts)
		}
		// Every call dispatched is answered, abandoned or still in flight.
		if settled := s.CallsDelivered + s.CallsRejected + s.CallsReset + s.CallsAbandoned; s.CallsSent != settled+uint64(liveCalls) {
			t.Fatalf("step %d (%s): CallsSent %d, but %d settled and %d in flight", step, op, s.CallsSent, settled, liveCalls)
		}
		if s.CallsAbandoned != abandoned || s.LateAnswers != late {
			t.Fatalf("step %d (%s): CallsAbandoned %d LateAnswers %d, model %d %d",
				step, op, s.CallsAbandoned, s.LateAnswers, abandoned, late)
		}
		if tb.Len() > maxKeys {
			t.Fatalf("step %d: %d keys, max %d", step, tb.Len(), maxKeys)
		}
	}
	doTick := func() {
		tick++
		// The Flusher abandons before it sends, so mark first.
		for _, c := range live {
			if !c.abandoned && abandonAfter > 0 && tick-c.tick > abandonAfter {
				c.abandoned = true
				abandoned++
			}
		}
		f.Tick()
	}
	answer := func(id uint64, o flush.Outcome, status int) {
		c, ok := live[id]
		if !ok || c.abandoned {
			late++
		} else if o == flush.Delivered {
			for _, m := range c.msgs {
				delivered[m.Svc+"."+m.Namespace] += uint64(m.Count)
			}
		}
		delete(live, id)
		f.Done(id, o, status)
	}
	liveIDs := func() []uint64 {
		ids := make([]uint64, 0, len(live))
		for id := range live {
			ids = append(ids, id)
		}
		// Map order is random: sort so the seed alone decides the run.
		for i := 1; i < len(ids); i++ {
			for j := i; j > 0 && ids[j] < ids[j-1]; j-- {
				ids[j], ids[j-1] = ids[j-1], ids[j]
			}
		}
		return ids
	}

	for step := 0; step < steps; step++ {
		var op string
		switch r := rng.Intn(100); {
		case r < 5:
			k := fmt.Sprintf("k%d.ns", rng.Intn(numKeys))
			op = "wake " + k
			if s, ok := tb.Lookup(k); ok {
				waking = true
				if f.Wake(s) {
					wakeups++
				}
				waking = false
			}
		case r < 50:
			k := fmt.Sprintf("k%d.ns", rng.Intn(numKeys))
			n := uint64(1 + rng.Intn(3))
			op = "add " + k
			if tb.Add([]byte(k), n) {
				added[k] += n
			}
		case r < 65:
			refuse = rng.Intn(20) == 0
			op = fmt.Sprintf("tick (refuse=%v)", refuse)
			doTick()
			refuse = false
		case r < 95:
			ids := liveIDs()
			if len(ids) == 0 {
				op = "no call to answer"
				break
			}
			id := ids[rng.Intn(len(ids))]
			o, status := flush.Delivered, 200
			switch rng.Intn(5) {
			case 0:
				o, status = flush.Rejected, []int{400, 404, 500, 503, 504, 302}[rng.Intn(6)]
			case 1:
				o, status = flush.Reset, 0
			}
			op = fmt.Sprintf("answer %d with %v/%d", id, o, status)
			answer(id, o, status)
		default:
			id := uint64(1_000_000 + rng.Intn(100))
			op = fmt.Sprintf("answer unknown %d", id)
			answer(id, flush.Delivered, 200)
		}
		check(step, op)
	}

	// Answer everything with 200 and tick until quiet.
	for round := 0; len(live) > 0 || f.Pending() > 0; round++ {
		if round > 100 {
			t.Fatalf("not quiet after %d rounds: %d live calls, %d pending", round, len(live), f.Pending())
		}
		for _, id := range liveIDs() {
			answer(id, flush.Delivered, 200)
		}
		check(steps+round, "final answers")
		doTick()
		check(steps+round, "final tick")
	}
	if !reflect.DeepEqual(delivered, added) {
		t.Fatalf("delivered per key %v, added %v", delivered, added)
	}
	if s := f.Stats(); s.CountsDelivered != total(added) || total(added) == 0 {
		t.Fatalf("CountsDelivered %d, added %d", s.CountsDelivered, total(added))
	}
	// Everything delivered: one interval of ticks evicts every key.
	for i := 0; i < slices; i++ {
		doTick()
	}
	if tb.Len() != 0 {
		t.Fatalf("%d keys left after all was delivered", tb.Len())
	}
	if s := f.Stats(); s.Wakeups != wakeups {
		t.Fatalf("Stats().Wakeups %d, model %d", s.Wakeups, wakeups)
	}
	s := f.Stats()
	t.Logf("added %d in %d calls (%d delivered, %d rejected, %d reset, %d abandoned, %d refused, %d late), %d evictions",
		total(added), s.CallsSent, s.CallsDelivered, s.CallsRejected, s.CallsReset, s.CallsAbandoned, s.DispatchErrors, s.LateAnswers, s.KeysEvicted)
}

// TestSlicesAndPhase checks which tick sends which key: slot s goes out on the
// ticks t with (t + Phase) % Slices == s % Slices, and idle keys are dropped only
// at their own slice's tick, after IdleTicks.
func TestSlicesAndPhase(t *testing.T) {
	tb, h, f := newFlusher(10, flush.Options{Slices: 3, Phase: 1, IdleTicks: 5})
	for _, k := range []string{"s0.ns", "s1.ns", "s2.ns", "s3.ns"} { // slots 0..3
		add(tb, k, 1)
	}
	want := [][]string{
		1: {body(1, "s2", "ns")},                      // (1+1)%3 = 2
		2: {body(1, "s0", "ns"), body(1, "s3", "ns")}, // (2+1)%3 = 0
		3: {body(1, "s1", "ns")},
	}
	for tick := 1; tick <= 3; tick++ {
		f.Tick()
		got := h.take()
		if !reflect.DeepEqual(bodies(got), want[tick]) {
			t.Fatalf("tick %d sent %v, want %v", tick, bodies(got), want[tick])
		}
		for _, c := range got {
			f.Done(c.id, flush.Delivered, 200)
		}
	}
	// Entry.Last is 0 here: idle from the start. Tick 4 is s2's slice again but
	// 4 < IdleTicks; tick 5 is s0/s3's: 5 ≥ 5, dropped; s1 at tick 6, s2 at 7.
	for tick, wantLen := range []int{4: 4, 5: 2, 6: 1, 7: 0} {
		if tick < 4 {
			continue
		}
		f.Tick()
		if tb.Len() != wantLen {
			t.Fatalf("after tick %d: %d keys, want %d", tick, tb.Len(), wantLen)
		}
	}
	if s := f.Stats(); s.KeysEvicted != 4 || s.CallsSent != 4 {
		t.Fatalf("stats %+v", s)
	}
}

// TestWake checks Wake sends one key at once, not while it is in flight, not
// after Drain, and that a failed wake-up's count goes out at the key's slice.
func TestWake(t *testing.T) {
	tb, h, f := newFlusher(10, flush.Options{Slices: 4})
	add(tb, "web.shop", 2)
	s, _ := tb.Lookup("web.shop")
	if !f.Wake(s) {
		t.Fatal("Wake did not send")
	}
	got := h.take()
	if len(got) != 1 || got[0].body != body(2, "web", "shop") {
		t.Fatalf("sent %v", bodies(got))
	}
	add(tb, "web.shop", 1)
	if f.Wake(s) || len(h.take()) != 0 {
		t.Fatal("Wake sent a key that is in flight")
	}
	f.Done(got[0].id, flush.Rejected, 503)
	for i := 0; i < 4; i++ {
		f.Tick()
	}
	if got := h.take(); len(got) != 1 || got[0].body != body(3, "web", "shop") {
		t.Fatalf("after a failed wake-up, one interval sent %v, want the 3 counts once", bodies(got))
	}
	if st := f.Stats(); st.Wakeups != 1 || st.CountsRequeued != 2 {
		t.Fatalf("stats %+v", st)
	}
	f.Drain()
	add(tb, "api.shop", 1)
	s, _ = tb.Lookup("api.shop")
	if f.Wake(s) {
		t.Fatal("Wake sent after Drain")
	}
}

// TestDropFailed: with DropFailed a failed call's counts leave the table (their
// owner hands them out again) and nothing is sent for them on later ticks, a
// drain's resend included; a delivered call is the same as without it.
func TestDropFailed(t *testing.T) {
	tests := []struct {
		name        string
		outcome     flush.Outcome
		status      int
		wantPending uint64
		wantSent    int // calls on the next tick
	}{
		{"delivered", flush.Delivered, 200, 0, 0},
		{"503", flush.Rejected, 503, 0, 0},
		{"504", flush.Rejected, 504, 0, 0},
		{"reset", flush.Reset, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, h, f := newFlusher(4, flush.Options{DropFailed: true})
			add(tb, "web.shop", 5)
			f.Tick()
			calls := h.take()
			if len(calls) != 1 {
				t.Fatalf("%d calls, want 1", len(calls))
			}
			f.Done(calls[0].id, tt.outcome, tt.status)
			if got := f.Pending(); got != tt.wantPending {
				t.Errorf("Pending = %d, want %d", got, tt.wantPending)
			}
			f.Tick()
			f.Drain()
			if got := len(h.take()); got != tt.wantSent {
				t.Errorf("%d calls after the answer, want %d", got, tt.wantSent)
			}
			st := f.Stats()
			if tt.outcome != flush.Delivered && (st.CountsReturned != 5 || st.CountsRequeued != 0) {
				t.Errorf("CountsReturned %d, CountsRequeued %d; want 5, 0", st.CountsReturned, st.CountsRequeued)
			}
		})
	}
}
