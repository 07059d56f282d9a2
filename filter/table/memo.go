package table

import "github.com/reqcount/reqcount/filter/sizeof"

// Memo remembers which entry a raw request value (an :authority exactly as sent)
// was counted under, so that a value seen before is counted without parsing and
// without a key. A Memo holds at most max values; when full it starts over, so its
// memory stays bounded whatever the traffic. Entries removed from the Table since
// are detected by their Ref (Table.Get returns nil).
//
// It holds no pointers: the values are copied back to back into one byte slice,
// each has its place in those bytes and its Ref in vals, and the table's own
// index (keyIndex) finds them by hash. A map[string] of the same values held two
// string headers, a string allocation and a map slot per value (about 500 bytes
// a value in a wasm VM, measured by the bench's per-key rows); this holds 24
// bytes and the value's own. A lookup is one hash over the value, usually one
// probe and one compare of the bytes.
type Memo struct {
	index keyIndex  // value hash → position in vals
	vals  []memoVal // by position
	bytes []byte    // the values, back to back
	max   int
}

// memoVal is one value: where its bytes are, and its entry.
type memoVal struct {
	off, len uint32
	ref      Ref
}

// maxMemoValue is the longest value remembered: a key's authority is far
// shorter (DNS labels of a service and a namespace, the cluster domain, a port).
const maxMemoValue = 512

// NewMemo returns a Memo that holds at most max values. Its memory grows with
// the values it holds, not with max.
func NewMemo(max int) *Memo { return &Memo{max: max} }

// find returns raw's position in vals, or -1.
func (m *Memo) find(raw string, h uint32) int {
	x := &m.index
	if x.n == 0 {
		return -1
	}
	mask := uint32(len(x.slots) - 1)
	for i := x.home(h); ; i = (i + 1) & mask {
		e := x.slots[i]
		if e.slot == 0 {
			return -1
		}
		if v := &m.vals[e.slot-1]; e.hash == h && string(m.bytes[v.off:v.off+v.len]) == raw { // no allocation
			return int(e.slot - 1)
		}
	}
}

// Get returns the Ref remembered for raw. It allocates nothing.
func (m *Memo) Get(raw string) (Ref, bool) {
	if i := m.find(raw, hashKey(raw)); i >= 0 {
		return m.vals[i].ref, true
	}
	return Ref{}, false
}

// Put remembers r for raw, copying raw (which may alias memory the host reuses).
// A value longer than any key's authority is not remembered.
func (m *Memo) Put(raw string, r Ref) {
	if m.max <= 0 || len(raw) > maxMemoValue {
		return
	}
	h := hashKey(raw)
	if i := m.find(raw, h); i >= 0 {
		m.vals[i].ref = r
		return
	}
	if len(m.vals) >= m.max {
		// Start over, keeping the memory: it stays bounded by max values.
		m.index.reset()
		m.vals, m.bytes = m.vals[:0], m.bytes[:0]
	}
	m.vals = append(m.vals, memoVal{off: uint32(len(m.bytes)), len: uint32(len(raw)), ref: r})
	m.bytes = append(m.bytes, raw...)
	m.index.insert(h, Slot(len(m.vals)-1))
}

// Len returns the number of values remembered.
func (m *Memo) Len() int { return len(m.vals) }

// Bytes is the memory the memo holds, from its arrays' capacities: what the
// filter's reqcount.vm.bytes.memo gauge reports.
func (m *Memo) Bytes() uint64 {
	return m.index.bytes() + sizeof.Slice(m.vals) + sizeof.Slice(m.bytes)
}
