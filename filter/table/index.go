package table

import "github.com/reqcount/reqcount/filter/sizeof"

// keyIndex finds a table slot (or a memo's value) by its key's hash: open addressing with linear
// probing and backward-shift deletion (no tombstones, so a long life of keys
// arriving and going idle never lengthens the probes), at most three quarters full. It
// holds no pointers: the GC neither scans it nor, unlike a map[string]Slot,
// holds a second string header per key. The caller compares keys: two keys may
// share a hash.
type keyIndex struct {
	slots []indexSlot // len 0 or a power of two
	n     int
	shift uint // 32 - log2(len(slots))
}

// indexSlot is one position: a key's hash and its table slot + 1 (0: free).
type indexSlot struct{ hash, slot uint32 }

// minIndexSlots is the first table's size: room for 32 keys.
const minIndexSlots = 64

// hashKey hashes a key or an authority, never to 0 (0 is no hash). It takes the
// bytes eight at a time (the compiler makes each group one 64-bit load, in wasm
// too), each mixed in by a multiply and a shift: about a third of FNV-1a's work
// on an authority of 30–40 bytes, which the memo hashes on every request whose
// authority differs from the last one's.
func hashKey[S ~string | ~[]byte](k S) uint32 {
	const m = 0x9E3779B97F4A7C15
	h := uint64(len(k)) * m
	i := 0
	for ; i+8 <= len(k); i += 8 {
		w := uint64(k[i]) | uint64(k[i+1])<<8 | uint64(k[i+2])<<16 | uint64(k[i+3])<<24 |
			uint64(k[i+4])<<32 | uint64(k[i+5])<<40 | uint64(k[i+6])<<48 | uint64(k[i+7])<<56
		h = (h ^ w) * m
		h ^= h >> 29
	}
	if i < len(k) {
		var w uint64
		for j := len(k) - 1; j >= i; j-- {
			w = w<<8 | uint64(k[j])
		}
		h = (h ^ w) * m
		h ^= h >> 29
	}
	return uint32(h^h>>32) | 1
}

// home is hash's preferred position: Fibonacci hashing spreads nearby hashes.
func (x *keyIndex) home(hash uint32) uint32 { return (hash * 0x9E3779B1) >> x.shift }

// insert records slot s under hash; the caller made sure the key is not held.
func (x *keyIndex) insert(hash uint32, s Slot) {
	if 4*(x.n+1) > 3*len(x.slots) {
		x.grow()
	}
	x.place(indexSlot{hash, uint32(s) + 1})
	x.n++
}

func (x *keyIndex) place(e indexSlot) {
	mask := uint32(len(x.slots) - 1)
	i := x.home(e.hash)
	for x.slots[i].slot != 0 {
		i = (i + 1) & mask
	}
	x.slots[i] = e
}

func (x *keyIndex) grow() {
	old := x.slots
	size := max(2*len(old), minIndexSlots)
	x.slots = make([]indexSlot, size)
	x.shift = 32
	for s := size; s > 1; s >>= 1 {
		x.shift--
	}
	for _, e := range old {
		if e.slot != 0 {
			x.place(e)
		}
	}
}

// reset forgets every slot, keeping the memory.
func (x *keyIndex) reset() {
	clear(x.slots)
	x.n = 0
}

// remove drops the position that records slot s under hash.
func (x *keyIndex) remove(hash uint32, s Slot) {
	if x.n == 0 {
		return
	}
	mask := uint32(len(x.slots) - 1)
	want := uint32(s) + 1
	i := x.home(hash)
	for x.slots[i].slot != want {
		if x.slots[i].slot == 0 {
			return
		}
		i = (i + 1) & mask
	}
	// Backward shift: move each later position of the run into the hole
	// unless its home lies cyclically in (hole, its position].
	hole := i
	for j := (i + 1) & mask; x.slots[j].slot != 0; j = (j + 1) & mask {
		h := x.home(x.slots[j].hash)
		if (j-h)&mask >= (j-hole)&mask {
			x.slots[hole] = x.slots[j]
			hole = j
		}
	}
	x.slots[hole] = indexSlot{}
	x.n--
}

// bytes is the memory the index holds: its slots, used or not.
func (x *keyIndex) bytes() uint64 { return sizeof.Slice(x.slots) }
