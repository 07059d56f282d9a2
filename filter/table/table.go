// Package table holds one worker's request counts: a bounded map from key to the
// counts not yet sent (Pending) and the counts sent but not yet answered (InFlight).
//
// Envoy runs one VM per worker thread and calls it from that thread only, so a Table
// is not safe for concurrent use and needs no locks.
package table

import (
	"github.com/reqcount/reqcount/filter/key"
	"github.com/reqcount/reqcount/filter/sizeof"
)

// Entry is one key's counts.
type Entry struct {
	// Key is "svc.ns", as written by package key.
	Key string
	// Pending is the number of requests counted and not yet sent.
	Pending uint64
	// InFlight is the number of requests sent in a call that has not been answered
	// yet. While it is above zero the key is not sent again.
	InFlight uint64
	// Unmetered is the number of requests counted since the key's per-service
	// metric was last brought up to date (package main's series).
	Unmetered uint64
	// Last is 1 + the tick count at the key's last request, 0 if it has had none:
	// the flush path measures a key's silence with it (wake-ups, eviction) without
	// a clock read per request.
	Last uint32
	// Group is the caller's: a number it assigns a key when the key is added
	// (package main: its outbox shard with aggregate: envoy), so that a pass over
	// the table can pick a group without hashing every key.
	Group int32
	// Series is the caller's: the id of the key's per-service counter, valid
	// when SeriesDefined (package main's series).
	Series uint32
	// Excluded marks a key the configuration does not count (include/exclude): it
	// is held so that the decision is made once per key, and is never sent.
	Excluded bool
	// SeriesDefined marks Series as set.
	SeriesDefined bool
	// Hold is the caller's hold state of the key (package main: none, not
	// known ready, ready), and Slow marks an entry whose requests must take
	// the caller's slow path (Excluded, or held): one flag for the hot path.
	Hold uint8
	Slow bool
}

// Service returns the service part of the key.
func (e *Entry) Service() string { s, _ := key.Split(e.Key); return s }

// Namespace returns the namespace part of the key.
func (e *Entry) Namespace() string { _, ns := key.Split(e.Key); return ns }

// Slot names an entry for as long as it is in the table.
type Slot int32

// Ref names the entry in a slot at one point of the slot's life: once that
// entry is removed, the Ref no longer matches, even if the slot is reused. The
// zero Ref matches no entry.
type Ref struct {
	slot Slot
	gen  uint32
}

// Parts returns r's slot and generation, to carry r in a number.
func (r Ref) Parts() (Slot, uint32) { return r.slot, r.gen }

// RefOf is the Ref of Parts.
func RefOf(slot Slot, gen uint32) Ref { return Ref{slot: slot, gen: gen} }

// Table is a bounded set of entries. The zero value is not useful: use New.
type Table struct {
	index   keyIndex // key hash → slot, with no pointers (index.go)
	entries []Entry
	gens    []uint32 // bumped when a slot's entry is removed
	free    []Slot
	max     int
}

// New returns a Table that holds at most max keys.
func New(max int) *Table {
	return &Table{max: max}
}

// Add counts n requests for k, which must not be empty (package key never writes
// an empty key). It returns false, counting nothing, when k is not in the table
// and the table is full. For a key already held it allocates nothing.
func (t *Table) Add(k []byte, n uint64) bool {
	_, ok := t.AddKey(k, n)
	return ok
}

// AddKey is Add that also returns a Ref to the entry counted, for Get.
func (t *Table) AddKey(k []byte, n uint64) (Ref, bool) {
	r, e, _, ok := t.Ensure(k)
	if ok {
		e.Pending += n
	}
	return r, ok
}

// AddRef counts n requests for the entry r names and returns true, or returns
// false, counting nothing, when that entry has been removed since r was taken.
func (t *Table) AddRef(r Ref, n uint64) bool {
	e := t.Get(r)
	if e == nil {
		return false
	}
	e.Pending += n
	return true
}

// Get returns the entry r names, or nil if it has been removed since r was taken:
// the cheapest way to reach an entry, no hashing, no key. The pointer is valid
// until the entry is removed.
func (t *Table) Get(r Ref) *Entry {
	// A removed entry's slot has a newer generation, whether it is free or reused.
	if int(r.slot) >= len(t.entries) || t.gens[r.slot] != r.gen {
		return nil
	}
	return &t.entries[r.slot]
}

// Ensure returns the entry for k, adding an empty one if k is not held (added is
// then true). It returns ok false, adding nothing, when k is not held and the
// table is full. For a key already held it allocates nothing.
func (t *Table) Ensure(k []byte) (r Ref, e *Entry, added, ok bool) { return ensure(t, k) }

// EnsureString is Ensure of a key held as a string: an entry it adds keeps k
// itself, no copy (a caller that holds the key's string already allocates
// nothing for it).
func (t *Table) EnsureString(k string) (r Ref, e *Entry, added, ok bool) { return ensure(t, k) }

// ensure is Ensure for a key in bytes or as a string: string(k) copies bytes
// and is k itself for a string.
func ensure[S ~string | ~[]byte](t *Table, k S) (r Ref, e *Entry, added, ok bool) {
	h := hashKey(k)
	if s, ok := find(t, k, h); ok {
		return Ref{s, t.gens[s]}, &t.entries[s], false, true
	}
	if t.index.n >= t.max {
		return Ref{}, nil, false, false // before the key's copy: a full table allocates nothing
	}
	return t.add(string(k), h)
}

// add adds an empty entry for k (hash h), which the table does not hold and
// has room for.
func (t *Table) add(k string, h uint32) (r Ref, e *Entry, added, ok bool) {
	var s Slot
	if last := len(t.free) - 1; last >= 0 {
		s = t.free[last]
		t.free = t.free[:last]
	} else {
		s = Slot(len(t.entries))
		t.entries = append(t.entries, Entry{})
		t.gens = append(t.gens, 1) // from 1: the zero Ref matches no entry
	}
	t.entries[s] = Entry{Key: k}
	t.index.insert(h, s)
	return Ref{s, t.gens[s]}, &t.entries[s], true, true
}

// Slot returns the slot r names (valid while the entry is held).
func (r Ref) Slot() Slot { return r.slot }

// Slots returns the number of slots, held or free: Each and At cover [0, Slots).
func (t *Table) Slots() int { return len(t.entries) }

// Held reports whether slot s holds an entry.
func (t *Table) Held(s Slot) bool { return int(s) < len(t.entries) && t.entries[s].Key != "" }

// Len returns the number of keys held.
func (t *Table) Len() int { return t.index.n }

// Max returns the most keys the table holds.
func (t *Table) Max() int { return t.max }

// At returns the entry in slot s. The pointer is valid until the entry is removed.
func (t *Table) At(s Slot) *Entry { return &t.entries[s] }

// AtSlot returns the entry in slot s if one is held there, or nil.
func (t *Table) AtSlot(s Slot) *Entry {
	if s < 0 || !t.Held(s) {
		return nil
	}
	return &t.entries[s]
}

// Each calls fn for every entry held, in slot order.
func (t *Table) Each(fn func(Slot, *Entry)) {
	for i := range t.entries {
		if t.entries[i].Key != "" { // a free slot's key is empty
			fn(Slot(i), &t.entries[i])
		}
	}
}

// Lookup returns the slot of k, if held.
func (t *Table) Lookup(k string) (Slot, bool) { return find(t, k, hashKey(k)) }

// HeldKey returns the key held equal to k, if any: a string the table
// already holds, for a caller that needs k as a string without allocating
// one. It allocates nothing.
func (t *Table) HeldKey(k []byte) (string, bool) {
	s, ok := find(t, k, hashKey(k))
	if !ok {
		return "", false
	}
	return t.entries[s].Key, true
}

// find is Lookup of a key as a string or in bytes (Ensure's), without
// allocating: the index gives the slots whose keys share k's hash.
func find[S ~string | ~[]byte](t *Table, k S, h uint32) (Slot, bool) {
	x := &t.index
	if x.n == 0 {
		return 0, false
	}
	mask := uint32(len(x.slots) - 1)
	for i := x.home(h); ; i = (i + 1) & mask {
		switch e := x.slots[i]; {
		case e.slot == 0:
			return 0, false
		case e.hash == h && t.entries[e.slot-1].Key == string(k):
			return Slot(e.slot - 1), true
		}
	}
}

// Remove drops the entry in slot s and returns how many requests it still held
// (Pending plus InFlight), so that a caller never drops counts unknowingly.
func (t *Table) Remove(s Slot) uint64 {
	if int(s) >= len(t.entries) || t.entries[s].Key == "" {
		return 0
	}
	e := &t.entries[s]
	held := e.Pending + e.InFlight
	t.index.remove(hashKey(e.Key), s)
	*e = Entry{}
	t.gens[s]++
	t.free = append(t.free, s)
	return held
}

// Bytes is the memory the table holds: its arrays by capacity (entries, slot
// generations, the free list, the index) and the bytes of the keys it holds.
// It visits every slot: the flush path calls it once per interval, not per
// tick.
func (t *Table) Bytes() uint64 {
	n := sizeof.Slice(t.entries) + sizeof.Slice(t.gens) + sizeof.Slice(t.free) + t.index.bytes()
	for i := range t.entries {
		n += uint64(len(t.entries[i].Key))
	}
	return n
}
