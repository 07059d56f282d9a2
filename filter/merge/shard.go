package merge

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strconv"
)

// shard is one outbox shard as its worker holds it: the entries of the keys of
// the shard in a hash table of its own, with no pointer in it. The Go GC marks
// such memory without scanning it, and a GC cycle runs inside a tick (the
// guest's mark workers run only when a callback yields): at 10 000 keys the
// outbox as maps of strings was 0.6 MiB for each cycle to scan, 10 000 key
// pointers among them. An entry whose counts were all delivered keeps its key,
// so that the key's next count reuses it, until the dropped entries are more
// than a quarter of the held ones (compact); and the keys' order, kept for the
// encoding, is sorted again only when a key is new (the maps were sorted on
// every write).
//
// Keys turn over (a gateway's destinations come and go), so the shard is
// compacted in place: its arrays keep their room for the next keys, and a
// worker whose keys come and go at a steady rate makes no garbage here. Each
// one costs the GC a cycle sooner, and in a VM whose memory never shrinks the
// heap a cycle starts at is paid for the VM's life.
type shard struct {
	nextGen uint32
	dirty   bool
	// written is set once the shard was written: from then on each entry's pub
	// is what the lease holder may have delivered. A holder empties the shards
	// of a worker it takes for dead only once all of them were delivered, so a
	// worker that finds a shard emptied drops exactly that much
	// (forgetPublished).
	written bool
	live    int        // entries with counts
	ents    []outEntry // entries; n 0: dropped, the key kept
	keys    []byte     // the entries' keys, back to back, each after its length (a uvarint)
	slots   []int32    // by key hash, open addressing: entry+1, 0 empty; at most half full
	order   []int32    // entries by key; sorted false once a key was added
	sorted  bool
}

// outEntry is one key's count (its generation, and what the worker last wrote:
// pub) and where its key is in shard.keys: 24 bytes.
type outEntry struct {
	off    uint32 // of the key's length in shard.keys
	gen    uint32
	n, pub uint64
}

// key returns entry i's key, aliasing the shard's.
func (sh *shard) key(i int) []byte {
	b := sh.keys[sh.ents[i].off:]
	n, w := binary.Uvarint(b)
	return b[w : w+int(n)]
}

// find returns the entry of key (h is its keyHash), held or dropped, or -1.
func (sh *shard) find(key string, h uint32) int {
	if len(sh.slots) == 0 {
		return -1
	}
	mask := uint32(len(sh.slots) - 1)
	for j := h & mask; sh.slots[j] != 0; j = (j + 1) & mask {
		if i := int(sh.slots[j] - 1); string(sh.key(i)) == key {
			return i
		}
	}
	return -1
}

// holds reports whether entry i (find's) holds counts.
func (sh *shard) holds(i int) bool { return i >= 0 && sh.ents[i].n > 0 }

// add moves n (> 0) requests for key into entry i (find's: -1 for none): a key
// without counts gets the next generation.
func (sh *shard) add(key string, i int, n uint64) {
	if i < 0 {
		i = len(sh.ents)
		sh.ents = append(sh.ents, outEntry{off: uint32(len(sh.keys))})
		sh.keys = binary.AppendUvarint(sh.keys, uint64(len(key)))
		sh.keys = append(sh.keys, key...)
		if 2*len(sh.ents) > len(sh.slots) {
			sh.rehash(2 * len(sh.ents))
		} else {
			sh.insert(i)
		}
		sh.order = append(sh.order, int32(i))
		sh.sorted = false
	}
	e := &sh.ents[i]
	if e.n == 0 {
		sh.nextGen++
		e.gen, e.pub = sh.nextGen, 0
		sh.live++
	}
	e.n += n
	sh.dirty = true
}

// drop drops entry i's counts (the key stays for its next count).
func (sh *shard) drop(i int) {
	sh.ents[i].n, sh.ents[i].pub = 0, 0
	sh.live--
	sh.dirty = true
}

// compact forgets the keys of dropped entries once they are more than a
// quarter of the held ones (and a few), in place: what the shard holds stays in
// proportion to its counts, and a compaction's cost to the drops since the
// last. The arrays keep their room unless the shard shrank to under a quarter
// of a large one, when they are made again at twice its size.
func (sh *shard) compact() {
	if len(sh.ents)-sh.live <= sh.live/4+8 {
		return
	}
	ents, keys := sh.ents[:0], sh.keys[:0]
	if c := cap(sh.ents); c > shardShrinkFrom && 4*sh.live < c {
		n := max(2*sh.live, shardShrinkFrom/4)
		ents, keys = make([]outEntry, 0, n), make([]byte, 0, n*len(sh.keys)/len(sh.ents))
		sh.slots = nil
	}
	for i := range sh.ents {
		e := sh.ents[i]
		if e.n == 0 {
			continue
		}
		// In place, keys moves toward its start: each entry's bytes are
		// read (at e.off) before anything is written over them.
		k := sh.keys[e.off:]
		kn, w := binary.Uvarint(k)
		e.off = uint32(len(keys))
		keys = append(keys, k[:w+int(kn)]...)
		ents = append(ents, e)
	}
	sh.ents, sh.keys = ents, keys
	sh.order, sh.sorted = sh.order[:0], false
	for i := range sh.ents {
		sh.order = append(sh.order, int32(i))
	}
	sh.rehash(2 * len(sh.ents))
}

// shardShrinkFrom is the room (entries) below which a shard never gives its
// arrays back: a shard of a few keys that all go idle and come back keeps
// them, rather than growing them again every interval.
const shardShrinkFrom = 64

// rehash makes the hash table of at least n slots, in the table's own array
// while that is large enough (compact lets it go when the shard shrinks).
func (sh *shard) rehash(n int) {
	size := 8
	for size < n {
		size *= 2
	}
	if size <= len(sh.slots) {
		clear(sh.slots)
	} else {
		sh.slots = make([]int32, size)
	}
	for i := range sh.ents {
		sh.insert(i)
	}
}

func (sh *shard) insert(i int) {
	mask := uint32(len(sh.slots) - 1)
	j := keyHash(sh.key(i)) & mask
	for sh.slots[j] != 0 {
		j = (j + 1) & mask
	}
	sh.slots[j] = int32(i + 1)
}

// trim starts over the entries whose acks say all they published was
// delivered, and reports how many it dropped (those with nothing new since).
// An entry with counts added since its last write keeps them, alone, in a new
// generation: without that, under steady traffic an entry is never fully
// delivered at its publish (new counts are in it by then), its cumulative
// count grows for ever, and a resend (the next holder's, after one's VM died)
// repeats the worker's whole history for the key instead of an interval's
// (TestOutboxTrimmedUnderSteadyTraffic). Safe because a holder hands out only
// what was published (pub) and acks only what was delivered: acks covering
// pub mean nothing of this generation is in flight anywhere.
func (sh *shard) trim(acks []ackLine) int {
	n := 0
	for k := range acks {
		a := &acks[k]
		i := sh.find(string(a.key()), keyHash(a.key()))
		if i < 0 {
			continue
		}
		e := &sh.ents[i]
		if e.n == 0 || e.pub == 0 || a.gen != e.gen || a.delivered < e.pub {
			continue
		}
		if e.n <= e.pub {
			sh.drop(i)
			n++
			continue
		}
		sh.nextGen++
		e.n, e.gen, e.pub = e.n-e.pub, sh.nextGen, 0
		sh.dirty = true
	}
	return n
}

// appendTo writes the shard's outbox encoding (AppendOutbox's), keys sorted.
func (sh *shard) appendTo(dst []byte, heartbeatMs int64) []byte {
	if !sh.sorted {
		slices.SortFunc(sh.order, func(a, b int32) int { return bytes.Compare(sh.key(int(a)), sh.key(int(b))) })
		sh.sorted = true
	}
	dst = append(dst, "v1 "...)
	dst = strconv.AppendInt(dst, heartbeatMs, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(sh.nextGen), 10)
	dst = append(dst, '\n')
	for _, i := range sh.order {
		e := &sh.ents[i]
		if e.n == 0 {
			continue
		}
		dst = append(dst, sh.key(int(i))...)
		dst = append(dst, ' ')
		dst = strconv.AppendUint(dst, uint64(e.gen), 10)
		dst = append(dst, ' ')
		dst = strconv.AppendUint(dst, e.n, 10)
		dst = append(dst, '\n')
	}
	return dst
}
