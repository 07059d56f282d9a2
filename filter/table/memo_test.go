package table_test

import (
	"strconv"
	"testing"

	"github.com/reqcount/reqcount/filter/table"
)

func TestAddRef(t *testing.T) {
	tb := table.New(2)
	a, ok := tb.AddKey([]byte("a.ns"), 1)
	if !ok {
		t.Fatal("AddKey refused a new key")
	}
	tests := []struct {
		name    string
		op      func() bool
		wantOK  bool
		wantA   uint64
		present bool
	}{
		{"live ref counts", func() bool { return tb.AddRef(a, 2) }, true, 3, true},
		{"AddKey of a held key returns the same ref", func() bool {
			r, ok := tb.AddKey([]byte("a.ns"), 1)
			return ok && r == a
		}, true, 4, true},
		{"ref of a removed entry counts nothing", func() bool { s, _ := tb.Lookup("a.ns"); tb.Remove(s); return tb.AddRef(a, 1) }, false, 0, false},
		{"ref of a reused slot counts nothing", func() bool { tb.Add([]byte("b.ns"), 1); return tb.AddRef(a, 1) }, false, 0, false},
		{"zero ref of an empty slot counts nothing", func() bool { return table.New(1).AddRef(table.Ref{}, 1) }, false, 0, false},
		{"zero ref of a live first slot counts nothing", func() bool {
			t1 := table.New(1)
			t1.Add([]byte("x.ns"), 1)
			return t1.AddRef(table.Ref{}, 1)
		}, false, 0, false},
	}
	for _, tc := range tests {
		if got := tc.op(); got != tc.wantOK {
			t.Fatalf("%s: got %v, want %v", tc.name, got, tc.wantOK)
		}
		s, ok := tb.Lookup("a.ns")
		if ok != tc.present || (ok && tb.At(s).Pending != tc.wantA) {
			t.Fatalf("%s: a.ns present %v pending %d", tc.name, ok, tb.At(s).Pending)
		}
	}
	if s, _ := tb.Lookup("b.ns"); tb.At(s).Pending != 1 {
		t.Fatalf("b.ns pending %d, want 1: a stale ref counted into it", tb.At(s).Pending)
	}
}

func TestMemo(t *testing.T) {
	tb := table.New(10)
	m := table.NewMemo(3)
	r, _ := tb.AddKey([]byte("web.shop"), 1)
	raw := []byte("web.shop:80")
	m.Put(string(raw), r)
	raw[0] = 'X' // Put must have copied the value
	if got, ok := m.Get("web.shop:80"); !ok || got != r {
		t.Fatalf("Get after Put: %v %v", got, ok)
	}
	if _, ok := m.Get("Xeb.shop:80"); ok {
		t.Fatal("memo kept a reference to the caller's bytes")
	}
	for i := 0; i < 10; i++ {
		m.Put("v"+strconv.Itoa(i), r)
		if m.Len() > 3 {
			t.Fatalf("memo holds %d values, bound 3", m.Len())
		}
	}
	m.Put("v9", r) // already held: no reset
	if _, ok := m.Get("v9"); !ok || m.Len() == 0 {
		t.Fatal("re-putting a held value reset the memo")
	}
}

func TestAddRefDoesNotAllocate(t *testing.T) {
	tb := table.New(1)
	m := table.NewMemo(8)
	r, _ := tb.AddKey([]byte("web.shop"), 1)
	m.Put("web.shop.svc.cluster.local:8080", r)
	if n := testing.AllocsPerRun(1000, func() {
		ref, ok := m.Get("web.shop.svc.cluster.local:8080")
		if !ok || !tb.AddRef(ref, 1) {
			t.Fatal("memo path did not count")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per memo hit", n)
	}
}
