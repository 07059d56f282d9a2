package table

import (
	"math/rand"
	"strconv"
	"testing"
)

// TestTableAgainstMap drives a Table through long random runs of adds and
// removes (keys arriving and going idle, slots reused) and checks every key's
// slot and count against a Go map, so the index's probes and backward shifts
// never lose or confuse a key.
func TestTableAgainstMap(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keys, max int
		ops       int
	}{
		{"few keys", 8, 8, 5000},
		{"bound reached often", 300, 100, 50000},
		{"many keys", 5000, 4000, 100000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(tc.keys)))
			tb := New(tc.max)
			want := map[string]uint64{}
			for op := 0; op < tc.ops; op++ {
				k := "svc-" + strconv.Itoa(rng.Intn(tc.keys)) + ".ns"
				if rng.Intn(3) == 0 {
					s, ok := tb.Lookup(k)
					_, held := want[k]
					if ok != held {
						t.Fatalf("op %d: Lookup(%s) %v, held %v", op, k, ok, held)
					}
					if ok {
						if got := tb.Remove(s); got != want[k] {
							t.Fatalf("op %d: Remove(%s) = %d, want %d", op, k, got, want[k])
						}
						delete(want, k)
					}
					continue
				}
				_, held := want[k]
				if ok := tb.Add([]byte(k), 1); ok != (held || len(want) < tc.max) {
					t.Fatalf("op %d: Add(%s) = %v with %d held of %d", op, k, ok, len(want), tc.max)
				} else if ok {
					want[k]++
				}
			}
			if tb.Len() != len(want) {
				t.Fatalf("Len %d, want %d", tb.Len(), len(want))
			}
			for k, n := range want {
				s, ok := tb.Lookup(k)
				if !ok || tb.At(s).Key != k || tb.At(s).Pending != n {
					t.Fatalf("%s: found %v, pending %d, want %d", k, ok, tb.At(s).Pending, n)
				}
			}
		})
	}
}

// TestKeyIndexCollisions checks the index when every key has the same hash:
// each lookup must still compare keys, and a removal must keep the run whole.
func TestKeyIndexCollisions(t *testing.T) {
	var x keyIndex
	keys := []string{"a", "b", "c", "d", "e"}
	for i := range keys {
		x.insert(7, Slot(i))
	}
	find := func(k string) (Slot, bool) {
		mask := uint32(len(x.slots) - 1)
		for i := x.home(7); ; i = (i + 1) & mask {
			e := x.slots[i]
			if e.slot == 0 {
				return 0, false
			}
			if keys[e.slot-1] == k {
				return Slot(e.slot - 1), true
			}
		}
	}
	x.remove(7, 1) // "b", from the middle of the run
	for i, k := range keys {
		s, ok := find(k)
		if ok != (i != 1) || (ok && s != Slot(i)) {
			t.Fatalf("%s: slot %d found %v after removing b", k, s, ok)
		}
	}
	if x.n != 4 {
		t.Fatalf("n = %d, want 4", x.n)
	}
}

// TestMemoAgainstMap checks the memo against a Go map with the same bound
// and start-over rule, over values that share prefixes.
func TestMemoAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	const max = 100
	m := NewMemo(max)
	want := map[string]Ref{}
	for op := 0; op < 20000; op++ {
		v := "svc-" + strconv.Itoa(rng.Intn(300)) + ".shop.svc.cluster.local:8080"
		if r, ok := m.Get(v); ok {
			if w, held := want[v]; !held || w != r {
				t.Fatalf("op %d: Get(%s) = %v, want %v (held %v)", op, v, r, w, held)
			}
			continue
		} else if _, held := want[v]; held {
			t.Fatalf("op %d: Get(%s) missed a held value", op, v)
		}
		r := Ref{slot: Slot(op), gen: 1}
		if len(want) >= max {
			clear(want)
		}
		m.Put(v, r)
		want[v] = r
		if m.Len() != len(want) {
			t.Fatalf("op %d: Len %d, want %d", op, m.Len(), len(want))
		}
	}
	long := string(make([]byte, maxMemoValue+1))
	m.Put(long, Ref{slot: 1, gen: 1})
	if _, ok := m.Get(long); ok {
		t.Fatal("a value longer than maxMemoValue was remembered")
	}
	m0 := NewMemo(0)
	if m0.Put("a", Ref{1, 1}); m0.Len() != 0 {
		t.Fatal("a memo of size 0 remembered a value")
	}
}

// TestHashKeySpread checks that keys differing in one byte anywhere, as a
// gateway's generated service names do, spread over the index's positions.
func TestHashKeySpread(t *testing.T) {
	x := keyIndex{shift: 32 - 14} // 16384 positions
	seen := map[uint32]int{}
	for i := 0; i < 10000; i++ {
		h := hashKey("key-" + strconv.Itoa(100000+i) + ".shop")
		if h == 0 {
			t.Fatal("hash 0")
		}
		seen[x.home(h)]++
	}
	// 10 000 keys thrown at random into 16 384 positions land in about 7 600
	// distinct ones; a poor hash clusters them into far fewer.
	if len(seen) < 7000 {
		t.Fatalf("10000 keys reach only %d of 16384 home positions", len(seen))
	}
	if hashKey("ab") == hashKey([]byte("ab")) && hashKey("ab") == hashKey("ba") {
		t.Fatal("hash ignores byte order")
	}
	if hashKey("ab") != hashKey([]byte("ab")) {
		t.Fatal("a key hashes differently as a string and as bytes")
	}
}
