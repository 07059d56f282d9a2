package merge

import "unsafe"

// Memory accounting: what a Worker's outbox and a Leader's buffers hold, from
// their arrays' capacities (the filter's reqcount.vm.bytes.* gauges).

// capBytes is the memory of s's array.
func capBytes[E any](s []E) uint64 {
	var e E
	return uint64(cap(s)) * uint64(unsafe.Sizeof(e))
}

// bytes is the memory the shard holds: entries, key bytes, hash slots, order.
func (sh *shard) bytes() uint64 {
	return capBytes(sh.ents) + capBytes(sh.keys) + capBytes(sh.slots) + capBytes(sh.order)
}

// Bytes is the memory the worker's outbox holds: its shards, and the buffers
// its writes reuse.
func (w *Worker) Bytes() uint64 {
	n := capBytes(w.shards) + capBytes(w.buf) + capBytes(w.acks)
	for _, sh := range w.shards {
		if sh != nil {
			n += uint64(unsafe.Sizeof(*sh)) + sh.bytes()
		}
	}
	return n
}

// Bytes is the memory the Leader's reused buffers hold (the values it parses
// and writes, the parts it collects, the deliveries it acks). Its maps of calls
// in flight are not counted: they hold the calls of a few ticks.
func (l *Leader) Bytes() uint64 {
	n := capBytes(l.parts) + capBytes(l.outs) + capBytes(l.acks) + capBytes(l.buf) +
		capBytes(l.deltas) + capBytes(l.group) + capBytes(l.failed) + capBytes(l.sums) + capBytes(l.extra) +
		capBytes(l.spare) + capBytes(l.idb)
	for _, s := range l.spare {
		n += capBytes(s)
	}
	return n
}
