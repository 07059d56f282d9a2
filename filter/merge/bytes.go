package merge

import (
	"unsafe"

	"github.com/reqcount/reqcount/filter/sizeof"
)

// Memory accounting: what a Worker's outbox and a Leader's buffers hold, from
// their arrays' capacities (the filter's reqcount.vm.bytes.* gauges).

// bytes is the memory the shard holds: entries, key bytes, hash slots, order.
func (sh *shard) bytes() uint64 {
	return sizeof.Slice(sh.ents) + sizeof.Slice(sh.keys) + sizeof.Slice(sh.slots) + sizeof.Slice(sh.order)
}

// Bytes is the memory the worker's outbox holds: its shards, and the buffers
// its writes reuse.
func (w *Worker) Bytes() uint64 {
	n := sizeof.Slice(w.shards) + sizeof.Slice(w.buf) + sizeof.Slice(w.acks)
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
	n := sizeof.Slice(l.parts) + sizeof.Slice(l.outs) + sizeof.Slice(l.acks) + sizeof.Slice(l.buf) +
		sizeof.Slice(l.deltas) + sizeof.Slice(l.group) + sizeof.Slice(l.failed) + sizeof.Slice(l.sums) + sizeof.Slice(l.extra) +
		sizeof.Slice(l.spare) + sizeof.Slice(l.idb)
	for _, s := range l.spare {
		n += sizeof.Slice(s)
	}
	return n
}
