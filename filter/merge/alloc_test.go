package merge_test

import (
	"fmt"
	"sort"
	"testing"

	"github.com/reqcount/reqcount/filter/merge"
)

// arenaStore is shared data as the filter sees it in Envoy: Get returns a copy
// the caller may read until its next call (the SDK's copy into the guest's
// arena, no garbage), modelled by returning the stored bytes; Set copies the
// value into the key's storage, reused.
type arenaStore struct {
	m       map[string]*arenaEntry
	nextCas uint32
	// grown counts the store's own allocations: a value that outgrew its
	// storage (in Envoy the host's memory, not the guest's).
	grown int
}

type arenaEntry struct {
	v   []byte
	cas uint32
}

func newArenaStore() *arenaStore { return &arenaStore{m: map[string]*arenaEntry{}, nextCas: 1} }

func (s *arenaStore) Get(k string) ([]byte, uint32, bool, error) {
	e, ok := s.m[k]
	if !ok {
		return nil, 0, false, nil
	}
	return e.v, e.cas, true, nil
}

func (s *arenaStore) Set(k string, v []byte, cas uint32) error {
	e, ok := s.m[k]
	if ok && cas != 0 && cas != e.cas {
		return merge.ErrCasMismatch
	}
	if !ok {
		e = &arenaEntry{}
		s.m[k] = e
	}
	if len(v) > cap(e.v) {
		s.grown++
	}
	e.v = append(e.v[:0], v...)
	e.cas = s.nextCas
	s.nextCas++
	return nil
}

// sidecar runs workers of one Envoy in lockstep, one tick at a time, as package
// main drives them with aggregate: envoy: each publishes the tick's shard and
// takes or renews the lease; the holder collects that shard of every worker and
// sends each key in a call of its own, answered (delivered) before the next tick.
type sidecar struct {
	t       testing.TB
	store   *arenaStore
	workers []*merge.Worker
	leaders []*merge.Leader
	keys    [][]string // by shard
	shards  int
	tick    int
	nowMs   int64
	parts   []merge.Part
	nextID  uint64
	handed  int // parts handed out
	added   map[string]uint64
	sent    map[string]uint64
}

const (
	tickMs      = 500
	leaseMs     = 1500
	holdMs      = 15000
	deadMs      = 61500
	heartbeatMs = 15000
)

func newSidecar(t testing.TB, workers, keys, shards int) *sidecar {
	s := newArenaStore()
	c := &sidecar{t: t, store: s, shards: shards, nowMs: 1_700_000_000_000, nextID: 1, added: map[string]uint64{}, sent: map[string]uint64{}}
	for i := range workers {
		id := fmt.Sprintf("%016x", i+1)
		c.workers = append(c.workers, merge.NewWorker(s, id, shards, 1<<20, leaseMs))
		c.leaders = append(c.leaders, merge.NewLeader(s, id))
	}
	c.keys = make([][]string, shards)
	for i := range keys {
		k := fmt.Sprintf("svc-%05d.shop", i)
		j := merge.ShardOf(k, shards)
		c.keys[j] = append(c.keys[j], k)
	}
	return c
}

// step runs one tick of every worker; each worker counted one request per key
// of the tick's shard since the key's last tick.
func (c *sidecar) step() {
	slice := c.tick % c.shards
	c.tick++
	c.nowMs += tickMs
	for i, w := range c.workers {
		for _, k := range c.keys[slice] {
			if w.Add(k, 1) && c.added != nil {
				c.added[k]++
			}
		}
		if err := w.Publish(slice, c.nowMs, heartbeatMs); err != nil {
			c.t.Fatal(err)
		}
		leading, err := w.Lead(c.nowMs)
		if err != nil {
			c.t.Fatal(err)
		}
		if !leading {
			continue
		}
		l := c.leaders[i]
		if c.parts, err = l.CollectParts(c.parts[:0], slice, c.shards, c.nowMs, deadMs, holdMs); err != nil {
			c.t.Fatal(err)
		}
		c.handed += len(c.parts)
		for lo := 0; lo < len(c.parts); {
			hi := lo + 1
			for hi < len(c.parts) && c.parts[hi].Key == c.parts[lo].Key {
				hi++
			}
			id := c.nextID
			c.nextID++
			l.Sent(id, c.parts[lo:hi])
			for _, p := range c.parts[lo:hi] {
				if c.sent != nil {
					c.sent[p.Key] += p.N
				}
			}
			l.Settled(id, c.parts[lo].Key, true)
			lo = hi
		}
	}
}

// TestSteadyTickAllocs: in steady state (the same keys every interval, no new
// worker, no shutdown) a tick's merge work allocates nothing but the key of each
// part handed out (Part.Key), so a worker with few keys makes next to no garbage
// on its ticks, and one with many makes little; with a Leader.KeyString that
// holds every key (package main's tables), not even those.
func TestSteadyTickAllocs(t *testing.T) {
	for _, tc := range []struct {
		workers, keys, shards int
		held                  bool // the leaders' KeyString holds every key
	}{
		{1, 1, 60, false},
		{2, 1, 60, false},
		{1, 20, 60, false},
		{4, 300, 60, false},
		{1, 2000, 60, false},
		{1, 20, 60, true},
		{4, 300, 60, true},
		{1, 2000, 60, true},
	} {
		t.Run(fmt.Sprintf("%d workers, %d keys, held %v", tc.workers, tc.keys, tc.held), func(t *testing.T) {
			c := newSidecar(t, tc.workers, tc.keys, tc.shards)
			if tc.held {
				held := map[string]string{}
				for _, ks := range c.keys {
					for _, k := range ks {
						held[k] = k
					}
				}
				for _, l := range c.leaders {
					l.KeyString = func(k []byte) (string, bool) { s, ok := held[string(k)]; return s, ok }
				}
			}
			for range 3 * tc.shards { // every shard written, acked and trimmed
				c.step()
			}
			const intervals = 3
			c.handed, c.store.grown = 0, 0
			allocs := testing.AllocsPerRun(intervals, func() {
				for range tc.shards {
					c.step()
				}
			})
			// AllocsPerRun runs the function once more before measuring.
			perInterval := float64(c.handed) / (intervals + 1)
			if want := float64(tc.workers * tc.keys); perInterval != want {
				t.Fatalf("%.1f parts handed out per interval, want %.0f (one per key and worker)", perInterval, want)
			}
			// The store's own allocations (a value that outgrew its storage,
			// when one of its numbers gains a digit) are the host's memory
			// in Envoy, not the guest's.
			host := float64(c.store.grown) / (intervals + 1)
			allocs -= host
			t.Logf("%.1f allocations per interval of %d ticks (%.1f more by the store), %.1f parts handed out", allocs, tc.shards, host, perInterval)
			switch {
			case tc.held && allocs > 0:
				t.Errorf("%.1f allocations per interval: want none, every key held by KeyString", allocs)
			case allocs > perInterval:
				t.Errorf("%.1f allocations per interval: want at most one per part handed out (%.1f)", allocs, perInterval)
			}
			// Every request counted was delivered, once, but the last of each
			// worker publishing after the holder collected.
			var keys []string
			for k := range c.added {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if c.sent[k] > c.added[k] || c.added[k]-c.sent[k] >= uint64(tc.workers) {
					t.Fatalf("%s: sent %d of %d added", k, c.sent[k], c.added[k])
				}
			}
		})
	}
}

// BenchmarkSteadyTick is one tick of a worker of 10 000 keys that holds the
// lease (its own outbox only, 60 shards): what aggregate: envoy adds to a tick.
func BenchmarkSteadyTick(b *testing.B) {
	c := newSidecar(b, 1, 10000, 60)
	c.added, c.sent = nil, nil // the benchmark keeps no tally
	for range 3 * c.shards {
		c.step()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c.step()
	}
}
