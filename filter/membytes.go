package main

import "github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

// The reqcount.vm.bytes.* gauges: where a worker VM's memory goes, by
// structure, from the structures' own accounting (their arrays' capacities and
// the bytes of the keys they hold). Like the other reqcount.vm.* gauges each is
// a total over the VMs running the filter. They are brought up to date once per
// flush interval (a pass over the tables), and taken back out at shutdown.
var memBytesNames = [numMemBytes]string{
	// table is the worker's table of keys: entries, index, key bytes.
	memTable: "reqcount.vm.bytes.table",
	// memo is the authority memo (key_source authority).
	memMemo: "reqcount.vm.bytes.memo",
	// series is the set of the per-service counter names defined.
	memSeries: "reqcount.vm.bytes.series",
	// outbox is aggregate: envoy's outbox shards and their write buffers.
	memOutbox: "reqcount.vm.bytes.outbox",
	// merged is aggregate: envoy's holder side: the merged table, what a
	// collect made available, and the Leader's parse and write buffers.
	memMerged: "reqcount.vm.bytes.merged",
}

// Indexes into memBytesNames.
const (
	memTable = iota
	memMemo
	memSeries
	memOutbox
	memMerged
	numMemBytes
)

// memBytes are the gauges and what this VM last added to each.
type memBytes struct {
	gauges [numMemBytes]proxywasm.MetricGauge
	pushed [numMemBytes]int64
	// pushes counts the pushes; the structures are measured every every-th.
	pushes, every uint64
}

// define registers the gauges; a refusal panics (metrics.define recovers).
func (b *memBytes) define(every int) {
	for i, name := range memBytesNames {
		b.gauges[i] = proxywasm.DefineGaugeMetric(name)
	}
	b.every = uint64(max(every, 1))
}

// push measures the structures at the first push and every every-th after,
// and sets this VM's share of each gauge; final takes it back out.
func (b *memBytes) push(p *pluginContext, final bool) {
	if b.every == 0 {
		return // not defined
	}
	b.pushes++
	if !final && (b.pushes-1)%b.every != 0 {
		return
	}
	var use [numMemBytes]uint64
	if !final {
		use = p.memUse()
	}
	for i, n := range use {
		if d := int64(n) - b.pushed[i]; d != 0 {
			b.gauges[i].Add(d)
			b.pushed[i] = int64(n)
		}
	}
}

// memUse measures the structures.
func (p *pluginContext) memUse() (use [numMemBytes]uint64) {
	if p.table != nil {
		use[memTable] = p.table.Bytes()
	}
	if p.memo != nil {
		use[memMemo] = p.memo.Bytes()
	}
	use[memSeries] = p.series.defined.bytes()
	if p.agg != nil {
		use[memOutbox], use[memMerged] = p.agg.bytes()
	}
	return use
}
