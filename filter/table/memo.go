package table

import "strings"

// Memo remembers which entry a raw request value (an :authority exactly as sent)
// was counted under, so that a value seen before is counted without parsing and
// without a key. A Memo holds at most max values; when full it starts over, so its
// memory stays bounded whatever the traffic. Entries removed from the Table since
// are detected by their Ref (Table.Get returns nil).
//
// In front of its map sits a small direct-mapped cache indexed by a cheap hash of
// the value: a worker's handful of busy authorities are found with one hash over
// their bytes and one string compare, cheaper in wasm than Go's map lookup.
type Memo struct {
	m     map[string]memoEntry
	max   int
	front [frontSize]memoEntry
}

// memoEntry is a value, as a string the Memo owns, and its entry.
type memoEntry struct {
	raw string
	ref Ref
}

// frontSize is the number of slots of the front cache (a power of two).
const frontSize = 64

// frontSlot hashes s (FNV-1a) to a front-cache slot.
func frontSlot(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h & (frontSize - 1)
}

// NewMemo returns a Memo that holds at most max values.
func NewMemo(max int) *Memo {
	return &Memo{m: make(map[string]memoEntry, sizeHint(max)), max: max}
}

// Get returns the Ref remembered for raw. It allocates nothing.
func (m *Memo) Get(raw string) (Ref, bool) {
	f := &m.front[frontSlot(raw)]
	if f.raw == raw && f.ref != (Ref{}) {
		return f.ref, true
	}
	e, ok := m.m[raw]
	if ok {
		*f = e // e.raw is the Memo's own copy
	}
	return e.ref, ok
}

// Put remembers r for raw, copying raw (which may alias memory the host reuses).
func (m *Memo) Put(raw string, r Ref) {
	e, ok := m.m[raw]
	if !ok {
		if len(m.m) >= m.max {
			clear(m.m) // keeps the map's buckets: memory stays bounded
			m.front = [frontSize]memoEntry{}
		}
		e.raw = strings.Clone(raw)
	}
	e.ref = r
	m.m[e.raw] = e
	m.front[frontSlot(raw)] = e
}

// Len returns the number of values remembered.
func (m *Memo) Len() int { return len(m.m) }
