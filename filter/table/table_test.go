package table_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/reqcount/reqcount/filter/table"
)

// entries returns the table's entries in Each order, as values.
func entries(t *table.Table) []table.Entry {
	var out []table.Entry
	t.Each(func(s table.Slot, e *table.Entry) {
		if got := t.At(s); got != e {
			panic(fmt.Sprintf("Each gave slot %d entry %p, At gives %p", s, e, got))
		}
		out = append(out, *e)
	})
	return out
}

func TestAdd(t *testing.T) {
	for _, tc := range []struct {
		name string
		max  int
		adds []string // each adds 1
		ok   []bool
		want []table.Entry
	}{
		{"new keys", 3, []string{"a.ns", "b.ns"}, []bool{true, true},
			[]table.Entry{{Key: "a.ns", Pending: 1}, {Key: "b.ns", Pending: 1}}},
		{"existing key", 3, []string{"a.ns", "a.ns", "a.ns"}, []bool{true, true, true},
			[]table.Entry{{Key: "a.ns", Pending: 3}}},
		{"full: new key refused", 2, []string{"a.ns", "b.ns", "c.ns"}, []bool{true, true, false},
			[]table.Entry{{Key: "a.ns", Pending: 1}, {Key: "b.ns", Pending: 1}}},
		{"full: existing keys still counted", 2, []string{"a.ns", "b.ns", "c.ns", "a.ns", "d.ns", "b.ns", "b.ns"},
			[]bool{true, true, false, true, false, true, true},
			[]table.Entry{{Key: "a.ns", Pending: 2}, {Key: "b.ns", Pending: 3}}},
		{"max 1", 1, []string{"a.ns", "b.ns", "a.ns"}, []bool{true, false, true},
			[]table.Entry{{Key: "a.ns", Pending: 2}}},
		{"max 0 holds nothing", 0, []string{"a.ns"}, []bool{false}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := table.New(tc.max)
			if tb.Max() != tc.max {
				t.Fatalf("Max() = %d, want %d", tb.Max(), tc.max)
			}
			for i, k := range tc.adds {
				if ok := tb.Add([]byte(k), 1); ok != tc.ok[i] {
					t.Fatalf("Add #%d (%s) = %v, want %v", i, k, ok, tc.ok[i])
				}
			}
			if got := entries(tb); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("entries %+v, want %+v", got, tc.want)
			}
			if tb.Len() != len(tc.want) {
				t.Fatalf("Len() = %d, want %d", tb.Len(), len(tc.want))
			}
		})
	}
}

// TestLargeMax checks a table whose max is beyond the map's size hint still holds
// max keys and no more.
func TestLargeMax(t *testing.T) {
	const max = 3000
	tb := table.New(max)
	for i := 0; i < max; i++ {
		if !tb.Add([]byte(fmt.Sprintf("s%d.ns", i)), 1) {
			t.Fatalf("Add #%d refused below max", i)
		}
	}
	if tb.Add([]byte("one-more.ns"), 1) || tb.Len() != max {
		t.Fatalf("Len %d: table went over max %d", tb.Len(), max)
	}
}

func TestAddN(t *testing.T) {
	tb := table.New(2)
	tb.Add([]byte("a.ns"), 5)
	tb.Add([]byte("a.ns"), 0)
	tb.Add([]byte("a.ns"), 7)
	s, ok := tb.Lookup("a.ns")
	if !ok || tb.At(s).Pending != 12 {
		t.Fatalf("a.ns: %v %+v, want Pending 12", ok, tb.At(s))
	}
}

// TestAddCopiesKey checks the table keeps its own copy of the key: the hot path
// reuses one buffer for every request.
func TestAddCopiesKey(t *testing.T) {
	tb := table.New(4)
	buf := []byte("a.ns")
	tb.Add(buf, 1)
	copy(buf, "b.xx")
	tb.Add(buf, 1)
	want := []table.Entry{{Key: "a.ns", Pending: 1}, {Key: "b.xx", Pending: 1}}
	if got := entries(tb); !reflect.DeepEqual(got, want) {
		t.Fatalf("entries %+v, want %+v", got, want)
	}
}

func TestLookup(t *testing.T) {
	tb := table.New(4)
	tb.Add([]byte("a.ns"), 1)
	tb.Add([]byte("b.ns"), 2)
	for _, tc := range []struct {
		key     string
		ok      bool
		pending uint64
	}{
		{"a.ns", true, 1},
		{"b.ns", true, 2},
		{"c.ns", false, 0},
		{"", false, 0},
		{"a.n", false, 0},
	} {
		s, ok := tb.Lookup(tc.key)
		if ok != tc.ok {
			t.Fatalf("Lookup(%q) ok = %v, want %v", tc.key, ok, tc.ok)
		}
		if ok && (tb.At(s).Key != tc.key || tb.At(s).Pending != tc.pending) {
			t.Fatalf("Lookup(%q) → %+v", tc.key, tb.At(s))
		}
	}
}

func TestRemove(t *testing.T) {
	tb := table.New(2)
	tb.Add([]byte("a.ns"), 3)
	tb.Add([]byte("b.ns"), 1)
	sa, _ := tb.Lookup("a.ns")
	sb, _ := tb.Lookup("b.ns")
	tb.At(sa).InFlight = 4 // as if 4 had been sent and 3 more counted since

	for _, tc := range []struct {
		name string
		slot table.Slot
		want uint64
	}{
		{"returns Pending plus InFlight", sa, 7},
		{"twice: nothing more", sa, 0},
		{"slot out of range", 99, 0},
		{"other key", sb, 1},
	} {
		if got := tb.Remove(tc.slot); got != tc.want {
			t.Fatalf("%s: Remove(%d) = %d, want %d", tc.name, tc.slot, got, tc.want)
		}
	}
	if tb.Len() != 0 {
		t.Fatalf("Len() = %d after removing both", tb.Len())
	}
	if _, ok := tb.Lookup("a.ns"); ok {
		t.Fatal("removed key still found")
	}
	if got := entries(tb); len(got) != 0 {
		t.Fatalf("Each visits removed entries: %+v", got)
	}
}

// TestSlotReuse checks a removed slot is given to the next new key, so that a
// table of churning keys does not grow.
func TestSlotReuse(t *testing.T) {
	tb := table.New(2)
	tb.Add([]byte("a.ns"), 1)
	tb.Add([]byte("b.ns"), 1)
	sa, _ := tb.Lookup("a.ns")
	tb.Remove(sa)
	if !tb.Add([]byte("c.ns"), 2) {
		t.Fatal("Add after Remove refused: the freed room was not given back")
	}
	sc, _ := tb.Lookup("c.ns")
	if sc != sa {
		t.Fatalf("c.ns got slot %d, want the freed slot %d", sc, sa)
	}
	if e := tb.At(sc); *e != (table.Entry{Key: "c.ns", Pending: 2}) {
		t.Fatalf("reused slot holds %+v: old counts leaked into it", *e)
	}
	if tb.Add([]byte("d.ns"), 1) {
		t.Fatal("table over its max after slot reuse")
	}
	// Churn: many keys through a table of 2 never use more than 2 slots.
	for i := 0; i < 100; i++ {
		s, _ := tb.Lookup("c.ns")
		tb.Remove(s)
		k := fmt.Sprintf("k%d.ns", i)
		if !tb.Add([]byte(k), 1) {
			t.Fatalf("Add(%s) refused", k)
		}
		s, _ = tb.Lookup(k)
		if s > 1 {
			t.Fatalf("key %s in slot %d: slots are not reused", k, s)
		}
		tb.Remove(s)
		tb.Add([]byte("c.ns"), 1)
	}
}

// TestEachSkipsRemoved checks Each visits live entries only, in slot order.
func TestEachSkipsRemoved(t *testing.T) {
	tb := table.New(5)
	for _, k := range []string{"a.ns", "b.ns", "c.ns", "d.ns"} {
		tb.Add([]byte(k), 1)
	}
	for _, k := range []string{"b.ns", "d.ns"} {
		s, _ := tb.Lookup(k)
		tb.Remove(s)
	}
	var slots []table.Slot
	var keys []string
	tb.Each(func(s table.Slot, e *table.Entry) { slots, keys = append(slots, s), append(keys, e.Key) })
	if !reflect.DeepEqual(keys, []string{"a.ns", "c.ns"}) || !reflect.DeepEqual(slots, []table.Slot{0, 2}) {
		t.Fatalf("Each visited %v in slots %v", keys, slots)
	}
	// Removing during Each is allowed (flush evicts idle keys that way).
	tb.Each(func(s table.Slot, e *table.Entry) { tb.Remove(s) })
	if tb.Len() != 0 || len(entries(tb)) != 0 {
		t.Fatalf("Remove inside Each left %d keys", tb.Len())
	}
}

func TestEntryServiceNamespace(t *testing.T) {
	for _, tc := range []struct{ key, svc, ns string }{
		{"web.shop", "web", "shop"},
		{"a-1.b-2", "a-1", "b-2"},
		{"web", "web", ""},
	} {
		e := table.Entry{Key: tc.key}
		if e.Service() != tc.svc || e.Namespace() != tc.ns {
			t.Errorf("Entry{%q}: Service %q Namespace %q, want %q %q", tc.key, e.Service(), e.Namespace(), tc.svc, tc.ns)
		}
	}
}

// TestAddExistingDoesNotAllocate checks the hot path: counting a key already held
// allocates nothing.
func TestAddExistingDoesNotAllocate(t *testing.T) {
	tb := table.New(10)
	buf := make([]byte, 0, 64)
	buf = append(buf, "web.shop"...)
	tb.Add(buf, 1)
	if n := testing.AllocsPerRun(1000, func() { tb.Add(buf, 1) }); n != 0 {
		t.Fatalf("Add of an existing key allocates %v times", n)
	}
	// Refusing a new key when full allocates nothing either.
	full := table.New(1)
	full.Add([]byte("a.ns"), 1)
	if n := testing.AllocsPerRun(1000, func() { full.Add(buf, 1) }); n != 0 {
		t.Fatalf("Add refused for a full table allocates %v times", n)
	}
	s, _ := tb.Lookup("web.shop")
	if got := tb.At(s).Pending; got < 1001 {
		t.Fatalf("Pending %d: the measured Adds did not count", got)
	}
}

func BenchmarkAddExisting(b *testing.B) {
	tb := table.New(10000)
	for i := 0; i < 1000; i++ {
		tb.Add([]byte(fmt.Sprintf("svc-%d.ns", i)), 1)
	}
	k := []byte("svc-500.ns")
	b.ReportAllocs()
	for b.Loop() {
		tb.Add(k, 1)
	}
}

// TestEnsureStringHeldKey: EnsureString finds a key however it was added and
// adds one keeping the caller's string; HeldKey gives the string held for a
// key's bytes, nothing for a key not held (never added, removed, or refused
// by a full table).
func TestEnsureStringHeldKey(t *testing.T) {
	for _, tc := range []struct {
		name    string
		max     int
		byBytes []string // added with Ensure first
		byStr   []string // then with EnsureString
		removed []string // then removed
		added   []bool   // EnsureString's added, per byStr
		ok      []bool   // EnsureString's ok, per byStr
		held    []string // HeldKey finds these
		notHeld []string // and not these
	}{
		{name: "new keys keep the caller's string", max: 4, byStr: []string{"a.ns", "b.ns"},
			added: []bool{true, true}, ok: []bool{true, true}, held: []string{"a.ns", "b.ns"}, notHeld: []string{"c.ns", "a.n", "a.nss", ""}},
		{name: "a key added from bytes is found", max: 4, byBytes: []string{"a.ns"}, byStr: []string{"a.ns"},
			added: []bool{false}, ok: []bool{true}, held: []string{"a.ns"}},
		{name: "a full table refuses a new key", max: 1, byBytes: []string{"a.ns"}, byStr: []string{"b.ns", "a.ns"},
			added: []bool{false, false}, ok: []bool{false, true}, held: []string{"a.ns"}, notHeld: []string{"b.ns"}},
		{name: "a removed key is not held, its slot reused", max: 2, byStr: []string{"a.ns", "b.ns"}, removed: []string{"a.ns"},
			added: []bool{true, true}, ok: []bool{true, true}, held: []string{"b.ns"}, notHeld: []string{"a.ns"}},
		{name: "growth keeps every key", max: 1000, byStr: manyKeys(300),
			added: repeat(true, 300), ok: repeat(true, 300), held: manyKeys(300), notHeld: []string{"svc-300.ns"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := table.New(tc.max)
			for _, k := range tc.byBytes {
				tb.Ensure([]byte(k))
			}
			for i, k := range tc.byStr {
				k = strings.Clone(k)
				_, e, added, ok := tb.EnsureString(k)
				if added != tc.added[i] || ok != tc.ok[i] {
					t.Fatalf("EnsureString(%q) added %v ok %v, want %v %v", k, added, ok, tc.added[i], tc.ok[i])
				}
				if added && unsafe.StringData(e.Key) != unsafe.StringData(k) {
					t.Errorf("EnsureString(%q) copied the key", k)
				}
			}
			for _, k := range tc.removed {
				s, _ := tb.Lookup(k)
				tb.Remove(s)
			}
			for _, k := range tc.held {
				if got, ok := tb.HeldKey([]byte(k)); !ok || got != k {
					t.Errorf("HeldKey(%q) = %q, %v", k, got, ok)
				}
			}
			for _, k := range tc.notHeld {
				if got, ok := tb.HeldKey([]byte(k)); ok {
					t.Errorf("HeldKey(%q) = %q, want none", k, got)
				}
			}
		})
	}
	tb := table.New(10)
	tb.EnsureString("web.shop")
	k := []byte("web.shop")
	if n := testing.AllocsPerRun(1000, func() { tb.HeldKey(k); tb.EnsureString("web.shop") }); n != 0 {
		t.Fatalf("HeldKey and EnsureString of a held key allocate %v times", n)
	}
}

func manyKeys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("svc-%d.ns", i)
	}
	return out
}

func repeat(v bool, n int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = v
	}
	return out
}
