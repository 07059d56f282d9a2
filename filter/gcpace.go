package main

// The GC pacer: why a worker VM collects its own heap.
//
// Go starts a GC cycle when the heap reaches max(2 × live, 4 MiB) (GOGC=100): a
// heap whose live part is 150 KiB still grows to 4 MiB before anything is
// collected. A worker VM's live heap is that small with a few keys, and its ticks
// and calls leave some garbage, so over hours of ticks linear memory grows to that
// floor plus the runtime's own: 8.4 MiB per worker with aggregate: envoy, 6.5 MiB
// and still growing with aggregate: worker, measured after 20 000 ticks (2.8
// hours) before the pacer, against 4 MiB at start. Every worker of every Envoy
// pays it, and WebAssembly memory never shrinks: the peak is what the VM costs
// for the rest of its life.
//
// So while the live heap is small, the filter collects at a tick once the heap
// reaches gcTarget(live), with runtime.GC: a full cycle, swept, after which the
// heap in use is the live heap exactly. Over a small heap a cycle costs a fraction
// of a millisecond. Once the target reaches Go's own floor, the runtime's pacing
// takes over (it then starts cycles at twice the live heap, as the pacer would),
// and the pacer only keeps its estimate: the heap in use at the first tick after
// the runtime's cycle, an overestimate (garbage allocated since, objects not yet
// swept), which errs on the side of fewer cycles.

// gcRuntimeFloor is the heap at which the runtime starts its first cycle at
// GOGC=100 (runtime.defaultHeapMinimum).
const gcRuntimeFloor = 4 << 20

// gcMinHeadroom is the least the heap may grow past the live heap between two
// cycles: small, because a VM's garbage comes from ticks and calls, a few hundred
// bytes each.
const gcMinHeadroom = 128 << 10

// gcTarget is the heap at which a cycle is due for a live heap of live bytes:
// twice the live heap, as GOGC=100 does, but at least gcMinHeadroom above it.
func gcTarget(live uint64) uint64 {
	return live + max(live, gcMinHeadroom)
}

// gcPacer decides when a tick collects the heap (see the comment above).
type gcPacer struct {
	// known is set once live holds an estimate.
	known bool
	// live is the live heap: exact after the pacer's own cycle, an estimate
	// after the runtime's.
	live uint64
	// cycles is the GC cycle count when live was taken.
	cycles uint64
	// collected counts the cycles the pacer started.
	collected uint64
}

// due reports whether the tick should collect, given the runtime's cycle count
// and the heap in use now. The first observation and the first after a cycle the
// runtime ran itself take the heap in use as the live estimate.
func (g *gcPacer) due(cycles, heapInUse uint64) bool {
	if !g.known || cycles != g.cycles {
		g.known, g.live, g.cycles = true, heapInUse, cycles
		return false
	}
	target := gcTarget(g.live)
	return target < gcRuntimeFloor && heapInUse >= target
}

// record records the pacer's own cycle: cycles and live heap right after it.
func (g *gcPacer) record(cycles, live uint64) {
	g.known, g.live, g.cycles = true, live, cycles
	g.collected++
}
