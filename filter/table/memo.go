package table

// Memo remembers which entry a raw request value (an :authority exactly as sent)
// was counted under, so that a value seen before is counted without parsing and
// without a key. A Memo holds at most max values; when full it starts over, so its
// memory stays bounded whatever the traffic. Entries removed from the Table since
// are detected by their Ref (Table.Get returns nil).
//
// It holds no pointers: the values are copied back to back into one byte slice,
// and an open-addressing table (at most three quarters full) holds each value's hash, its
// place in those bytes and its Ref. A map[string] of the same values held two
// string headers, a string allocation and a map slot per value (about 500 bytes a
// value in a wasm VM, measured by bench's per-key rows); this holds about 20
// bytes of table and the value's own bytes. A lookup is one FNV-1a hash over the
// value, usually one probe and one compare of the bytes.
type Memo struct {
	slots []memoSlot // len 0 or a power of two
	bytes []byte     // the values, back to back
	n     int        // values held
	max   int
	shift uint // 32 - log2(len(slots))
}

// memoSlot is one position; hash 0 marks it free (hashKey never returns 0).
type memoSlot struct {
	hash, off, len uint32
	ref            Ref
}

// maxMemoValue is the longest value remembered: a key's authority is far
// shorter (DNS labels of a service and a namespace, the cluster domain, a port).
const maxMemoValue = 512

// NewMemo returns a Memo that holds at most max values. Its memory grows with
// the values it holds, not with max.
func NewMemo(max int) *Memo { return &Memo{max: max} }

func (m *Memo) home(hash uint32) uint32 { return (hash * 0x9E3779B1) >> m.shift }

// Get returns the Ref remembered for raw. It allocates nothing.
func (m *Memo) Get(raw string) (Ref, bool) {
	if m.n == 0 {
		return Ref{}, false
	}
	h := hashKey(raw)
	mask := uint32(len(m.slots) - 1)
	for i := m.home(h); ; i = (i + 1) & mask {
		s := &m.slots[i]
		switch {
		case s.hash == 0:
			return Ref{}, false
		case s.hash == h && string(m.bytes[s.off:s.off+s.len]) == raw: // no allocation
			return s.ref, true
		}
	}
}

// Put remembers r for raw, copying raw (which may alias memory the host reuses).
// A value longer than any key's authority is not remembered.
func (m *Memo) Put(raw string, r Ref) {
	if m.max <= 0 || len(raw) > maxMemoValue {
		return
	}
	h := hashKey(raw)
	if m.n > 0 {
		mask := uint32(len(m.slots) - 1)
		for i := m.home(h); m.slots[i].hash != 0; i = (i + 1) & mask {
			if s := &m.slots[i]; s.hash == h && string(m.bytes[s.off:s.off+s.len]) == raw {
				s.ref = r
				return
			}
		}
	}
	if m.n >= m.max {
		// Start over, keeping the memory: it stays bounded by max values.
		clear(m.slots)
		m.bytes = m.bytes[:0]
		m.n = 0
	}
	if 4*(m.n+1) > 3*len(m.slots) {
		m.grow()
	}
	off := uint32(len(m.bytes))
	m.bytes = append(m.bytes, raw...)
	m.place(memoSlot{hash: h, off: off, len: uint32(len(raw)), ref: r})
	m.n++
}

func (m *Memo) place(e memoSlot) {
	mask := uint32(len(m.slots) - 1)
	i := m.home(e.hash)
	for m.slots[i].hash != 0 {
		i = (i + 1) & mask
	}
	m.slots[i] = e
}

func (m *Memo) grow() {
	old := m.slots
	size := max(2*len(old), minIndexSlots)
	m.slots = make([]memoSlot, size)
	m.shift = 32
	for s := size; s > 1; s >>= 1 {
		m.shift--
	}
	for _, e := range old {
		if e.hash != 0 {
			m.place(e)
		}
	}
}

// Len returns the number of values remembered.
func (m *Memo) Len() int { return m.n }
