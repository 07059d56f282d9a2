package table

import "strings"

// Memo remembers which entry a raw request value (an :authority exactly as sent)
// was counted under, so that a value seen before is counted with one map lookup:
// no parsing, no key. A Memo holds at most max values; when full it starts over,
// so its memory stays bounded whatever the traffic. Entries removed from the Table
// since are detected by their Ref (Table.AddRef returns false).
type Memo struct {
	m   map[string]Ref
	max int
}

// NewMemo returns a Memo that holds at most max values.
func NewMemo(max int) *Memo {
	return &Memo{m: make(map[string]Ref, sizeHint(max)), max: max}
}

// Get returns the Ref remembered for raw. It allocates nothing.
func (m *Memo) Get(raw string) (Ref, bool) {
	r, ok := m.m[raw]
	return r, ok
}

// Put remembers r for raw, copying raw (which may alias memory the host reuses).
func (m *Memo) Put(raw string, r Ref) {
	if _, ok := m.m[raw]; !ok && len(m.m) >= m.max {
		clear(m.m) // keeps the map's buckets: memory stays bounded
	}
	m.m[strings.Clone(raw)] = r
}

// Len returns the number of values remembered.
func (m *Memo) Len() int { return len(m.m) }
