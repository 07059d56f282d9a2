// Package idmap is a hash map from non-zero uint32 ids to uint32 values, made for
// proxy-wasm context ids: inserted once, looked up a few times, deleted, while
// the ids only grow. It is what the filter's build of the SDK (filter/_sdkabi)
// uses to remember which plugin a stream belongs to, in place of the SDK's Go
// maps, whose insert and delete on every stream cost about as much as the rest of
// the filter's work per request in a wasm VM.
//
// It is open addressing with linear probing and backward-shift deletion (no
// tombstones, so a long life of inserts and deletes never degrades the probes),
// at most half full, and it holds no pointers for the GC to scan. It has no
// dependency, so it can be imported from the SDK's internal package.
package idmap

// minSlots is the capacity of a new map's table: a power of two.
const minSlots = 64

// Map maps non-zero uint32 keys to uint32 values. The zero Map is empty and
// ready to use; it is not safe for concurrent use.
type Map struct {
	slots []slot // len is 0 or a power of two
	n     int    // keys held
	shift uint   // 32 - log2(len(slots))
}

// slot is one table entry; key 0 marks it free.
type slot struct{ key, value uint32 }

// Len returns the number of keys held.
func (m *Map) Len() int { return m.n }

// home is key's preferred slot: Fibonacci hashing spreads consecutive ids.
func (m *Map) home(key uint32) uint32 { return (key * 0x9E3779B1) >> m.shift }

// Get returns key's value and whether key is held.
func (m *Map) Get(key uint32) (uint32, bool) {
	if m.n == 0 || key == 0 {
		return 0, false
	}
	mask := uint32(len(m.slots) - 1)
	for i := m.home(key); ; i = (i + 1) & mask {
		switch s := m.slots[i]; s.key {
		case key:
			return s.value, true
		case 0:
			return 0, false
		}
	}
}

// Put sets key's value. It panics on key 0, which marks free slots.
func (m *Map) Put(key, value uint32) {
	if key == 0 {
		panic("idmap: key 0")
	}
	if 2*(m.n+1) > len(m.slots) {
		m.grow()
	}
	if m.put(key, value) {
		m.n++
	}
}

// put sets key's value in a table with room, reporting whether key is new.
func (m *Map) put(key, value uint32) bool {
	mask := uint32(len(m.slots) - 1)
	for i := m.home(key); ; i = (i + 1) & mask {
		switch m.slots[i].key {
		case key:
			m.slots[i].value = value
			return false
		case 0:
			m.slots[i] = slot{key, value}
			return true
		}
	}
}

// Reserve makes room for n keys at once, so that holding up to n makes no
// table (and no garbage of tables outgrown) on the way.
func (m *Map) Reserve(n int) {
	for 2*n > len(m.slots) {
		m.grow()
	}
}

// grow doubles the table (or makes the first one) and reinserts every key.
func (m *Map) grow() {
	old := m.slots
	size := max(2*len(old), minSlots)
	m.slots = make([]slot, size)
	m.shift = 32
	for s := size; s > 1; s >>= 1 {
		m.shift--
	}
	for _, s := range old {
		if s.key != 0 {
			m.put(s.key, s.value)
		}
	}
}

// Delete removes key, reporting whether it was held. The keys after it in its
// probe run move back, so lookups never cross a hole they should not.
func (m *Map) Delete(key uint32) bool {
	if m.n == 0 || key == 0 {
		return false
	}
	mask := uint32(len(m.slots) - 1)
	i := m.home(key)
	for m.slots[i].key != key {
		if m.slots[i].key == 0 {
			return false
		}
		i = (i + 1) & mask
	}
	// Backward shift: move each later key of the run into the hole unless its
	// home lies cyclically in (hole, its slot], where it must stay.
	hole := i
	for j := (i + 1) & mask; m.slots[j].key != 0; j = (j + 1) & mask {
		h := m.home(m.slots[j].key)
		if (j-h)&mask >= (j-hole)&mask {
			m.slots[hole] = m.slots[j]
			hole = j
		}
	}
	m.slots[hole] = slot{}
	m.n--
	return true
}
