package merge

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"
)

// TestShardAsOutbox holds a shard (its own hash table, keys kept when dropped,
// compacted) to an Outbox map under random adds, trims, the holder emptying it
// and publishes: same entries, same encoding.
func TestShardAsOutbox(t *testing.T) {
	for _, keys := range []int{3, 40, 300} {
		t.Run(fmt.Sprint(keys, " keys"), func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(keys)))
			var sh shard
			model := Outbox{Entries: map[string]Cum{}}
			key := func() string { return fmt.Sprintf("svc-%d.ns", rng.Intn(keys)) }
			for step := range 20000 {
				switch r := rng.Intn(10); {
				case r < 5:
					k, n := key(), uint64(1+rng.Intn(3))
					i := sh.find(k, keyHash(k))
					if sh.holds(i) != (model.Entries[k].N > 0) {
						t.Fatalf("step %d: holds(%s) = %v", step, k, sh.holds(i))
					}
					sh.add(k, i, n)
					model.Add(k, n)
				case r < 8:
					// Acks for some entries, some of them covering what was
					// published (or more, or less).
					acks := Acks{}
					for k, c := range model.Entries {
						if rng.Intn(2) == 0 {
							d := c.Pub + uint64(rng.Intn(2))
							if rng.Intn(3) == 0 {
								d = c.N - uint64(rng.Intn(2))
							}
							acks[k] = Ack{Gen: c.Gen - uint32(rng.Intn(2)), Delivered: d - min(d, uint64(rng.Intn(2)))}
						}
					}
					lines, err := parseAckLines(nil, AppendAcks(nil, acks))
					if err != nil {
						t.Fatal(err)
					}
					if got, want := sh.trim(lines), model.Trim(acks); got != want {
						t.Fatalf("step %d: trim dropped %d, want %d", step, got, want)
					}
				case r < 9:
					// Published, then (now and then) emptied by a holder.
					for i := range sh.ents {
						sh.ents[i].pub = sh.ents[i].n
					}
					for k, c := range model.Entries {
						c.Pub = c.N
						model.Entries[k] = c
					}
					if rng.Intn(3) == 0 {
						for k, c := range model.Entries {
							if c.Pub == 0 {
								continue
							}
							if c.N -= min(c.Pub, c.N); c.N == 0 {
								delete(model.Entries, k)
								continue
							}
							model.NextGen++
							model.Entries[k] = Cum{Gen: model.NextGen, N: c.N}
						}
						w := &Worker{}
						w.keys = sh.live
						w.forgetPublished(&sh)
					}
				default:
					sh.compact()
				}
				model.HeartbeatMs = int64(step)
				got, want := sh.appendTo(nil, int64(step)), AppendOutbox(nil, &model)
				if !bytes.Equal(got, want) {
					t.Fatalf("step %d: encoding\n%q\nwant\n%q", step, got, want)
				}
				if sh.live != len(model.Entries) {
					t.Fatalf("step %d: %d entries, want %d", step, sh.live, len(model.Entries))
				}
			}
		})
	}
}

// TestShardTurnoverAllocs: keys going idle and new ones arriving at a steady
// rate (a gateway's destinations) cost a shard no allocation once its arrays
// have grown: the dropped entries are compacted in place, and the order is
// sorted without one. The compaction that made new arrays left about 60 KB of
// garbage per flush interval at 10 000 keys turning over 10 % an interval.
func TestShardTurnoverAllocs(t *testing.T) {
	for _, tc := range []struct{ active, step int }{
		{200, 20},  // a tenth new every round
		{200, 100}, // half
		{12, 12},   // a few keys, all new every round: under the shrink floor
	} {
		t.Run(fmt.Sprintf("%d keys, %d new a round", tc.active, tc.step), func(t *testing.T) {
			const warm, rounds = 50, 100
			keys := make([]string, tc.active+tc.step*(warm+rounds+2))
			for i := range keys {
				keys[i] = fmt.Sprintf("svc-%06d.ns", i)
			}
			var sh shard
			acks := make([]ackLine, 0, 4*tc.active)
			buf := make([]byte, 0, 64*tc.active)
			next := tc.active
			round := func() {
				for _, k := range keys[next-tc.active : next] {
					sh.add(k, sh.find(k, keyHash(k)), 1)
				}
				next += tc.step
				// The acks say all that was published was delivered.
				acks = acks[:0]
				for i := range sh.ents {
					if e := &sh.ents[i]; e.n > 0 && e.pub > 0 {
						k := sh.key(i)
						acks = append(acks, ackLine{raw: k, kEnd: int32(len(k)), gen: e.gen, delivered: e.pub})
					}
				}
				sh.trim(acks)
				sh.compact()
				buf = sh.appendTo(buf[:0], 1)
				for i := range sh.ents {
					sh.ents[i].pub = sh.ents[i].n
				}
			}
			for range warm {
				round()
			}
			if allocs := testing.AllocsPerRun(rounds, round); allocs != 0 {
				t.Errorf("%.1f allocations per round, want 0", allocs)
			}
			if sh.live != tc.active {
				t.Errorf("%d entries held, want %d", sh.live, tc.active)
			}
			if max := tc.active + tc.active/4 + 8 + tc.step; len(sh.ents) > max {
				t.Errorf("%d entries kept for %d held, want at most %d", len(sh.ents), sh.live, max)
			}
		})
	}
}
