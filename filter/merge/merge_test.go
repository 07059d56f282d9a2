package merge_test

import (
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/reqcount/reqcount/filter/merge"
	"github.com/reqcount/reqcount/filter/merge/mergetest"
)

// store is shared data as Envoy keeps it (package mergetest).
type store = mergetest.Store

func newStore() *store { return mergetest.New() }

func TestEncodings(t *testing.T) {
	o := merge.Outbox{HeartbeatMs: 1700000000123, NextGen: 7, Entries: map[string]merge.Cum{"web.shop": {Gen: 3, N: 42}, "a.b": {Gen: 7, N: 1}}}
	enc := merge.AppendOutbox(nil, &o)
	if string(enc) != "v1 1700000000123 7\na.b 7 1\nweb.shop 3 42\n" {
		t.Fatalf("outbox encoding %q", enc)
	}
	if got, err := merge.ParseOutbox(enc); err != nil || !reflect.DeepEqual(got, o) {
		t.Fatalf("ParseOutbox = %+v, %v", got, err)
	}
	a := merge.Acks{"web.shop": {Gen: 3, Delivered: 40, Holder: "w1", UntilMs: 99}, "a.b": {Gen: 1}}
	if got, err := merge.ParseAcks(merge.AppendAcks(nil, a)); err != nil || !reflect.DeepEqual(got, a) {
		t.Fatalf("ParseAcks = %+v, %v", got, err)
	}
	ws := merge.Workers{"00aa", "ff01"}
	if got, err := merge.ParseWorkers(merge.AppendWorkers(nil, ws)); err != nil || !reflect.DeepEqual(got, ws) {
		t.Fatalf("ParseWorkers = %v, %v", got, err)
	}
	for _, l := range []merge.Lease{{Holder: "00aa", ExpiryMs: 5}, {ExpiryMs: 0, Released: true}, {Holder: "x", ExpiryMs: 9, Released: true}} {
		if got, err := merge.ParseLease(merge.AppendLease(nil, l)); err != nil || got != l {
			t.Fatalf("ParseLease(%+v) = %+v, %v", l, got, err)
		}
	}
	w := merge.Wakes{"a.b": 5, "c.d": 9, "e.f": 7}
	if got, err := merge.ParseWakes(merge.AppendWakes(nil, w, 2)); err != nil || !reflect.DeepEqual(got, merge.Wakes{"c.d": 9, "e.f": 7}) {
		t.Fatalf("ParseWakes (newest 2) = %v, %v", got, err)
	}
	for _, bad := range []struct {
		name  string
		parse func([]byte) error
		in    string
	}{
		{"outbox header", func(b []byte) error { _, err := merge.ParseOutbox(b); return err }, "v2 1 1\n"},
		{"outbox short line", func(b []byte) error { _, err := merge.ParseOutbox(b); return err }, "v1 1 1\nweb.shop 1\n"},
		{"outbox number", func(b []byte) error { _, err := merge.ParseOutbox(b); return err }, "v1 1 1\nweb.shop 1 -3\n"},
		{"acks header", func(b []byte) error { _, err := merge.ParseAcks(b); return err }, "x\n"},
		{"workers", func(b []byte) error { _, err := merge.ParseWorkers(b); return err }, ""},
		{"lease", func(b []byte) error { _, err := merge.ParseLease(b); return err }, "v1 a b"},
		{"lease flag", func(b []byte) error { _, err := merge.ParseLease(b); return err }, "v1 a 1 gone"},
		{"wakes", func(b []byte) error { _, err := merge.ParseWakes(b); return err }, "v1\na\n"},
	} {
		if err := bad.parse([]byte(bad.in)); err == nil {
			t.Errorf("%s: %q parsed", bad.name, bad.in)
		}
	}
}

func TestCreate(t *testing.T) {
	s := newStore()
	if ok, err := merge.Create(s, "k", []byte("a")); !ok || err != nil {
		t.Fatalf("first Create = %v, %v", ok, err)
	}
	if ok, err := merge.Create(s, "k", []byte("b")); ok || err != nil {
		t.Fatalf("second Create = %v, %v: must leave the key", ok, err)
	}
	if v, _, _, _ := s.Get("k"); string(v) != "a" {
		t.Fatalf("value %q", v)
	}
}

func TestLease(t *testing.T) {
	s := newStore()
	a := merge.NewWorker(s, "a", 1, 10, 1000)
	b := merge.NewWorker(s, "b", 1, 10, 1000)
	for _, step := range []struct {
		who    *merge.Worker
		now    int64
		leader bool
	}{
		{a, 0, true}, {b, 10, false}, {a, 500, true}, {b, 1400, false}, // renewed at 500: until 1500
		{b, 1500, true}, {a, 1600, false}, {b, 2000, true},
	} {
		if got, err := step.who.Lead(step.now); err != nil || got != step.leader {
			t.Fatalf("%s at %d: Lead = %v, %v; want %v", step.who.ID, step.now, got, err, step.leader)
		}
	}
	if err := b.Release(); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Lead(2001); !got {
		t.Fatal("a could not take a released lease")
	}
}

func TestClaimWake(t *testing.T) {
	s := newStore()
	for _, step := range []struct {
		key  string
		now  int64
		want bool
	}{
		{"web.shop", 0, true}, {"web.shop", 100, false}, {"api.shop", 100, true}, {"web.shop", 999, false}, {"web.shop", 1000, true},
	} {
		if got, err := merge.ClaimWake(s, step.key, step.now, 1000, 10); err != nil || got != step.want {
			t.Fatalf("%s at %d: ClaimWake = %v, %v; want %v", step.key, step.now, got, err, step.want)
		}
	}
}

// TestMergeExact runs several workers and a changing lease holder over one store
// with a seeded random schedule: counts added, outboxes published, the holder
// collecting, sending and settling calls (some failed), workers that die (stop
// publishing) and new ones that start, and the lease moving on. In the end
// every count is delivered exactly once per key, and no part is sent while
// another call carries it.
func TestMergeExact(t *testing.T) {
	for seed := int64(1); seed <= 60; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runMerge(t, seed) })
	}
}

func runMerge(t *testing.T, seed int64) {
	rng := rand.New(rand.NewSource(seed))
	s := newStore()
	const leaseMs, deadMs, holdMs, shards = 50, 200, 150, 3
	const timeoutMs = 60 // Envoy answers every call within its timeout (< holdMs/2)
	type call struct {
		id     uint64
		key    string
		n      uint64
		owner  int // index of the worker that leads
		sentAt int64
	}
	var (
		now                int64
		workers            []*merge.Worker
		alive              []bool
		leaders            = map[int]*merge.Leader{}
		calls              []call
		nextID             uint64 = 1
		added                     = map[string]uint64{}
		got                       = map[string]uint64{}
		inFlight                  = map[[2]string]bool{} // (holder, key): each holder knows only its own calls
		addedW, deliveredW        = map[string]uint64{}, map[string]uint64{}
	)
	start := func() {
		w := merge.NewWorker(s, fmt.Sprintf("w%02d", len(workers)), shards, 8, leaseMs)
		workers, alive = append(workers, w), append(alive, true)
	}
	for i := 0; i < 3; i++ {
		start()
	}
	keys := []string{"a.ns", "b.ns", "c.ns", "d.ns", "e.ns"}
	lead := func(i, slice int) {
		w := workers[i]
		ok, err := w.Lead(now)
		if err != nil {
			t.Fatal(err)
		}
		l := leaders[i]
		if l == nil {
			l = merge.NewLeader(s, w.ID)
			leaders[i] = l
		}
		if !ok {
			return // a holder that lost the lease still settles its calls
		}
		avail, err := l.Collect(slice, shards, now, deadMs, holdMs)
		if err != nil {
			t.Fatal(err)
		}
		ks := make([]string, 0, len(avail))
		for k := range avail {
			ks = append(ks, k)
		}
		sort.Strings(ks) // map order must not change the run
		for _, k := range ks {
			parts := avail[k]
			if inFlight[[2]string{w.ID, k}] {
				continue // one call per key at a time
			}
			var n uint64
			for _, p := range parts {
				n += p.N
			}
			id := nextID
			nextID++
			l.Sent(id, parts)
			calls = append(calls, call{id, k, n, i, now})
			inFlight[[2]string{w.ID, k}] = true
		}
	}
	settle := func(c call, delivered bool) {
		inFlight[[2]string{workers[c.owner].ID, c.key}] = false
		l, ok := leaders[c.owner]
		if !ok || !alive[c.owner] {
			return // its VM is gone: nobody sees the answer
		}
		if delivered {
			got[c.key] += c.n
			for _, p := range l.CallParts(c.id) {
				if p.Key == c.key {
					deliveredW[p.Worker+" "+p.Key] += p.N
				}
			}
		}
		l.Settled(c.id, c.key, delivered)
		if err := l.WriteAcks(); err != nil {
			t.Fatal(err)
		}
	}
	for step := 0; step < 3000; step++ {
		now += int64(rng.Intn(10))
		for j := 0; j < len(calls); j++ {
			if now-calls[j].sentAt >= timeoutMs {
				c := calls[j]
				calls = append(calls[:j], calls[j+1:]...)
				j--
				settle(c, false) // Envoy's 504
			}
		}
		i := rng.Intn(len(workers))
		switch r := rng.Intn(100); {
		case r < 40:
			if alive[i] {
				k := keys[rng.Intn(len(keys))]
				n := uint64(1 + rng.Intn(3))
				if workers[i].Add(k, n) {
					added[k] += n
					addedW[workers[i].ID+" "+k] += n
				}
			}
		case r < 60:
			if alive[i] {
				if err := workers[i].Publish(rng.Intn(shards), now, 20); err != nil {
					t.Fatal(err)
				}
			}
		case r < 75:
			if alive[i] {
				lead(i, rng.Intn(shards))
			}
		case r < 95:
			// Answers come within the reservation (Envoy's timeout is shorter).
			if len(calls) == 0 {
				break
			}
			j := rng.Intn(len(calls))
			c := calls[j]
			calls = append(calls[:j], calls[j+1:]...)
			settle(c, rng.Intn(4) != 0)
		case r < 97:
			// A worker dies: its published outbox stays, unpublished counts die with it.
			live := 0
			for _, a := range alive {
				if a {
					live++
				}
			}
			if alive[i] && live > 1 {
				alive[i] = false
				if l := leaders[i]; l != nil {
					// A dead holder's calls in flight: only those already answered count.
					for j := 0; j < len(calls); j++ {
						if calls[j].owner == i {
							calls = append(calls[:j], calls[j+1:]...)
							j--
						}
					}
					delete(leaders, i)
				}
				// What it added but never published is lost with the VM, as in Envoy.
				if und, _ := workers[i].Undelivered(); und >= 0 {
					unpublished := unpublishedOf(t, s, workers[i])
					for k, n := range unpublished {
						added[k] -= n
						addedW[workers[i].ID+" "+k] -= n
					}
				}
			}
		default:
			start()
		}
	}
	// Quiesce: everyone alive publishes; the holder delivers everything.
	for round := 0; round < 200; round++ {
		for _, c := range calls {
			settle(c, true)
		}
		calls = nil
		now += leaseMs
		for i, w := range workers {
			if alive[i] {
				if err := w.PublishAll(now, 20); err != nil {
					t.Fatal(err)
				}
			}
		}
		for i := range workers {
			if alive[i] {
				for slice := 0; slice < shards; slice++ {
					lead(i, slice)
				}
			}
		}
		for _, c := range calls {
			settle(c, true)
		}
		calls = nil
		if reflect.DeepEqual(nonZero(got), nonZero(added)) {
			break
		}
	}
	for k, n := range deliveredW {
		if n != addedW[k] {
			t.Errorf("%s: delivered %d, added %d", k, n, addedW[k])
		}
	}
	if !reflect.DeepEqual(nonZero(got), nonZero(added)) {
		t.Fatalf("delivered %v, added %v", got, added)
	}
	t.Logf("%d workers (%d alive), delivered %v in %d shared-data sets", len(workers), countTrue(alive), got, s.Sets)
}

// unpublishedOf returns what worker w added that its published outbox does not
// hold yet.
func unpublishedOf(t *testing.T, s *store, w *merge.Worker) map[string]uint64 {
	t.Helper()
	mine := w.Snapshot()
	pub := merge.Outbox{Entries: map[string]merge.Cum{}}
	last := w.Published() // what a holder delivered before emptying a shard
	for j := 0; j < w.Shards(); j++ {
		v, _, ok, _ := s.Get(merge.OutboxKey(w.ID, j))
		if !ok || len(v) == 0 {
			for k, c := range last {
				if merge.ShardOf(k, w.Shards()) == j {
					pub.Entries[k] = c
				}
			}
			continue
		}
		o, err := merge.ParseOutbox(v)
		if err != nil {
			t.Fatal(err)
		}
		for k, c := range o.Entries {
			pub.Entries[k] = c
		}
	}
	out := map[string]uint64{}
	for k, c := range mine.Entries {
		p := pub.Entries[k]
		if p.Gen != c.Gen {
			p.N = 0
		}
		out[k] = c.N - p.N
	}
	return out
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// staleStore returns, once, an old value for one key: a read that raced with
// the worker's newer write.
type staleStore struct {
	*store
	key   string
	value []byte
}

func (s *staleStore) Get(k string) ([]byte, uint32, bool, error) {
	if k == s.key && s.value != nil {
		v := s.value
		s.value = nil
		return v, 1, true, nil
	}
	return s.store.Get(k)
}

// TestCollectStaleOutbox: a holder that read a worker's outbox before the
// worker wrote a newer one must not drop, or reset, acks that cover the newer
// entries: that would send delivered counts again.
func TestCollectStaleOutbox(t *testing.T) {
	s := newStore()
	w := merge.NewWorker(s, "w", 1, 10, 1000)
	w.Add("j.ns", 1)
	if err := w.Publish(0, 0, 1); err != nil { // j.ns in generation 1
		t.Fatal(err)
	}
	old, _, _, _ := s.Get(merge.OutboxKey("w", 0))
	w.Add("k.ns", 5) // generation 2
	if err := w.Publish(0, 1, 1); err != nil {
		t.Fatal(err)
	}
	a := merge.NewLeader(s, "a")
	avail, err := a.Collect(0, 1, 1, 1000, 100)
	if err != nil || len(avail["k.ns"]) != 1 || len(avail["j.ns"]) != 1 {
		t.Fatalf("Collect = %v, %v", avail, err)
	}
	a.Sent(1, avail["k.ns"])
	a.Settled(1, "k.ns", true)
	a.Sent(2, avail["j.ns"])
	a.Settled(2, "j.ns", true)
	if err := a.WriteAcks(); err != nil {
		t.Fatal(err)
	}
	// Another holder reads the old outbox, then the acks.
	b := merge.NewLeader(&staleStore{store: s, key: merge.OutboxKey("w", 0), value: old}, "b")
	if _, err := b.Collect(0, 1, 500, 1000, 100); err != nil {
		t.Fatal(err)
	}
	avail, err = b.Collect(0, 1, 600, 1000, 100) // now with the real outbox
	if err != nil {
		t.Fatal(err)
	}
	if len(avail) != 0 {
		t.Fatalf("delivered counts handed out again: %v", avail)
	}
}

// hookStore runs hook once, right after the first Get of one of keys: a
// worker or another holder acting between two reads of a collect.
type hookStore struct {
	*store
	keys map[string]bool
	hook func()
}

func (s *hookStore) Get(k string) ([]byte, uint32, bool, error) {
	v, cas, ok, err := s.store.Get(k)

	if s.hook != nil && s.keys[k] {
		h := s.hook
		s.hook = nil
		h()
	}
	return v, cas, ok, err
}

// TestCollectTrimBetweenReads: between a holder's reads of a worker's outbox
// shard and its acks, the worker trims an entry its acks show delivered, and
// another holder then drops that ack line (the outbox no longer holds the
// key). The first holder must hand nothing out: reading the outbox first, it
// took the entry for undelivered and sent the worker's whole count again.
func TestCollectTrimBetweenReads(t *testing.T) {
	s := newStore()
	w := merge.NewWorker(s, "w", 1, 10, 1000)
	w.Add("k.ns", 5)
	if err := w.Publish(0, 10_000, 1); err != nil {
		t.Fatal(err)
	}
	a := merge.NewLeader(s, "a")
	avail, err := a.Collect(0, 1, 10_001, 1000, 100)
	if err != nil || len(avail["k.ns"]) != 1 {
		t.Fatalf("Collect = %v, %v", avail, err)
	}
	a.Sent(1, avail["k.ns"])
	a.Settled(1, "k.ns", true)
	if err := a.WriteAcks(); err != nil {
		t.Fatal(err)
	}
	hs := &hookStore{store: s, keys: map[string]bool{merge.OutboxKey("w", 0): true, merge.AckKey("w", 0): true}}
	hs.hook = func() {
		if err := w.Publish(0, 10_002, 1); err != nil { // trims k.ns: delivered
			t.Fatal(err)
		}
		b := merge.NewLeader(s, "b")
		if _, err := b.Collect(0, 1, 10_003, 1000, 100); err != nil { // drops k.ns's ack line
			t.Fatal(err)
		}
	}
	a2 := merge.NewLeader(hs, "a")
	avail, err = a2.Collect(0, 1, 10_004, 1000, 100)
	if err != nil {
		t.Fatal(err)
	}
	if hs.hook != nil {
		t.Fatal("the hook did not run")
	}
	if len(avail) != 0 {
		t.Fatalf("delivered counts handed out again: %v", avail)
	}
}

// TestOutboxTrimmedUnderSteadyTraffic: a key with requests in every interval,
// each interval's report delivered, keeps no more in its outbox entry than
// what is not yet delivered, not the worker's whole history for the key.
func TestOutboxTrimmedUnderSteadyTraffic(t *testing.T) {
	s := newStore()
	w := merge.NewWorker(s, "w", 1, 10, 1000)
	l := merge.NewLeader(s, "w")
	now := int64(10_000)
	var id uint64
	for round := 1; round <= 20; round++ {
		now += 1000
		w.Add("k.ns", 7) // the interval's requests, taken at the key's tick
		if err := w.Publish(0, now, 500); err != nil {
			t.Fatal(err)
		}
		avail, err := l.Collect(0, 1, now, 100_000, 10_000)
		if err != nil {
			t.Fatal(err)
		}
		id++
		l.Sent(id, avail["k.ns"])
		l.Settled(id, "k.ns", true)
		if err := l.WriteAcks(); err != nil { // the holder's next tick
			t.Fatal(err)
		}
		v, _, _, _ := s.Get(merge.OutboxKey("w", 0))
		o, err := merge.ParseOutbox(v)
		if err != nil {
			t.Fatal(err)
		}
		if got := o.Entries["k.ns"].N; got > 7 {
			t.Fatalf("round %d: the outbox entry holds %d requests, want at most one interval's (7)", round, got)
		}
	}
}

// TestWorkerIDsUnique: VMs whose random sources give the same bytes (a host
// with a fixed seed), starting at the same time, get distinct worker ids.
func TestWorkerIDsUnique(t *testing.T) {
	s := newStore()
	const vms = 64
	ids := make(chan string, vms)
	errs := make(chan error, vms)
	var wg sync.WaitGroup
	for range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := merge.NewWorkerID(s, 0x5eed5eed5eed5eed)
			if err != nil {
				errs <- err
				return
			}
			ids <- id
		}()
	}
	wg.Wait()
	close(ids)
	close(errs)
	for err := range errs {
		// Contention beyond the CAS retries is an error, never a duplicate.
		if !errors.Is(err, merge.ErrCasMismatch) {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for id := range ids {
		if seen[id] {
			t.Fatalf("two VMs got id %s", id)
		}
		if len(id) != 16 {
			t.Errorf("id %q: want 16 hex digits", id)
		}
		seen[id] = true
	}
	if len(seen) == 0 {
		t.Fatal("no id at all")
	}
}

// TestTakenOver: what a holder hands out from another holder's reservation
// that ran out (its VM died with the call in flight) is counted; a live
// reservation is left alone, and a holder's own renewals are not counted.
func TestTakenOver(t *testing.T) {
	s := newStore()
	w := merge.NewWorker(s, "w", 1, 10, 1000)
	w.Add("k.ns", 4)
	if err := w.Publish(0, 10_000, 1); err != nil {
		t.Fatal(err)
	}
	const holdMs = 100
	a := merge.NewLeader(s, "a")
	avail, err := a.Collect(0, 1, 10_000, 100_000, holdMs)
	if err != nil || len(avail["k.ns"]) != 1 {
		t.Fatalf("Collect = %v, %v", avail, err)
	}
	a.Sent(1, avail["k.ns"]) // a's VM dies with the call in flight
	if _, err := a.Collect(0, 1, 10_060, 100_000, holdMs); err != nil || a.TakenOver() != 0 {
		t.Fatalf("a's own renewal: TakenOver %d, %v; want 0", a.TakenOver(), err)
	}
	b := merge.NewLeader(s, "b")
	if avail, err := b.Collect(0, 1, 10_100, 100_000, holdMs); err != nil || len(avail) != 0 || b.TakenOver() != 0 {
		t.Fatalf("while a's reservation runs: %v, TakenOver %d, %v; want nothing", avail, b.TakenOver(), err)
	}
	avail, err = b.Collect(0, 1, 10_200, 100_000, holdMs) // a's renewed reservation ran out at 10_160
	if err != nil || len(avail["k.ns"]) != 1 || avail["k.ns"][0].N != 4 {
		t.Fatalf("after a's reservation: %v, %v; want the 4 requests", avail, err)
	}
	if got := b.TakenOver(); got != 4 {
		t.Fatalf("TakenOver = %d, want 4", got)
	}
}

// TestPublishRacesEmptying: while a worker publishes, a holder writes the
// acks of everything the worker had published and another holder, taking the
// worker for dead (an old heartbeat), empties its outbox. The worker's write
// must fail its compare-and-swap and drop what was delivered: written over
// the emptied shard, the delivered counts would be handed out again.
func TestPublishRacesEmptying(t *testing.T) {
	s := newStore()
	const deadMs = 1000
	hs := &hookStore{store: s, keys: map[string]bool{merge.OutboxKey("w", 0): true}}
	w := merge.NewWorker(hs, "w", 1, 10, 1000)
	w.Add("k.ns", 5)
	if err := w.Publish(0, 10_000, 100_000); err != nil { // the heartbeat of 10 000 stays
		t.Fatal(err)
	}
	hs.hook = nil // the first publish's reads pass
	a := merge.NewLeader(s, "a")
	avail, err := a.Collect(0, 1, 10_001, deadMs, 100)
	if err != nil || len(avail["k.ns"]) != 1 {
		t.Fatalf("Collect = %v, %v", avail, err)
	}
	a.Sent(1, avail["k.ns"])
	a.Settled(1, "k.ns", true) // its ack is written in the middle of the next publish
	w.Add("k.ns", 3)
	hs.hook = func() {
		if err := a.WriteAcks(); err != nil {
			t.Fatal(err)
		}
		b := merge.NewLeader(s, "b")
		if _, err := b.Collect(0, 1, 10_000+2*deadMs, deadMs, 100); err != nil { // w looks dead: emptied
			t.Fatal(err)
		}
		if v, _, _, _ := s.Get(merge.OutboxKey("w", 0)); len(v) != 0 {
			t.Fatalf("the holder did not empty the outbox: %q", v)
		}
	}
	if err := w.Publish(0, 10_002, 100_000); err != nil {
		t.Fatal(err)
	}
	if hs.hook != nil {
		t.Fatal("the hook did not run")
	}
	c := merge.NewLeader(s, "c")
	avail, err = c.Collect(0, 1, 10_000+2*deadMs+1, 100*deadMs, 100)
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, p := range avail["k.ns"] {
		n += p.N
	}
	if n != 3 {
		t.Fatalf("handed out %d after the race, want the 3 not yet delivered", n)
	}
}

// TestUnreserve: a holder that lets the lease go gives up its reservations of
// what it has not in flight: the next holder sends those at once, not after
// the reservations run out, and counts nothing as taken over; what it has in
// flight stays reserved.
func TestUnreserve(t *testing.T) {
	s := newStore()
	w := merge.NewWorker(s, "w", 1, 10, 1000)
	w.Add("k.ns", 4)
	w.Add("m.ns", 6)
	if err := w.Publish(0, 10_000, 1); err != nil {
		t.Fatal(err)
	}
	const holdMs = 10_000
	a := merge.NewLeader(s, "a")
	avail, err := a.Collect(0, 1, 10_000, 100_000, holdMs)
	if err != nil || len(avail) != 2 {
		t.Fatalf("Collect = %v, %v", avail, err)
	}
	a.Sent(1, avail["k.ns"]) // in flight; m.ns was handed out but not sent
	if err := a.Unreserve(); err != nil {
		t.Fatal(err)
	}
	b := merge.NewLeader(s, "b")
	avail, err = b.Collect(0, 1, 10_001, 100_000, holdMs) // well within a's reservations
	if err != nil {
		t.Fatal(err)
	}
	if len(avail["m.ns"]) != 1 || avail["m.ns"][0].N != 6 || len(avail["k.ns"]) != 0 {
		t.Fatalf("after Unreserve: %v; want m.ns's 6 and not k.ns (in flight)", avail)
	}
	if b.TakenOver() != 0 {
		t.Fatalf("TakenOver = %d, want 0: nothing was taken from a live reservation", b.TakenOver())
	}
}

// TestKeyString: a part's key is the string Leader.KeyString holds for it,
// when it holds one equal to the key; one it does not hold, or a wrong one
// (a caller's bug), gives a new string, never another key's: a part is
// always handed out under its own key, whatever the caller's lookup says.
func TestKeyString(t *testing.T) {
	held := strings.Clone("a.shop")
	for _, tc := range []struct {
		name string
		// lookup is KeyString's answer for each key read.
		lookup func(k []byte) (string, bool)
		// same: the part of a.shop carries held itself.
		same bool
	}{
		{"none", nil, false},
		{"held", func(k []byte) (string, bool) { return held, string(k) == held }, true},
		{"not held", func([]byte) (string, bool) { return "", false }, false},
		{"a wrong string is not used", func([]byte) (string, bool) { return "b.shop", true }, false},
		{"an empty string is not used", func([]byte) (string, bool) { return "", true }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mergetest.New()
			w := merge.NewWorker(s, "w1", 1, 100, 1000)
			w.Add("a.shop", 3)
			w.Add("c.shop", 4)
			if err := w.Publish(0, 1000, 1); err != nil {
				t.Fatal(err)
			}
			l := merge.NewLeader(s, "w1")
			l.KeyString = tc.lookup
			parts, err := l.CollectParts(nil, 0, 1, 1000, 60000, 10000)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]uint64{}
			for _, p := range parts {
				got[p.Key] += p.N
				if p.Key == "a.shop" && (unsafe.StringData(p.Key) == unsafe.StringData(held)) != tc.same {
					t.Errorf("a.shop's part carries the held string: %v, want %v", !tc.same, tc.same)
				}
			}
			if want := map[string]uint64{"a.shop": 3, "c.shop": 4}; !reflect.DeepEqual(got, want) {
				t.Errorf("parts %v, want %v", got, want)
			}
		})
	}
}
