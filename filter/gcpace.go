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
// So the filter collects at a tick once the heap reaches gcTarget(live), with
// runtime.GC: a full cycle, swept, after which the heap in use is the live heap
// exactly. The target is 1.5 × the live heap (at least gcMinHeadroom above it),
// below the runtime's 2 ×, so the pacer also governs above Go's 4 MiB floor: at
// 10 000 keys with keys turning over, the runtime's own pacing let a VM's memory
// grow 12.5 % over an hour of ticks, the pacer 0–6 % (bench/RESULTS.md). A cycle
// costs about a millisecond per MiB of live heap, all in the tick that runs it
// (the runtime's own cycles are not bound to one tick), so above gcPacerMaxLive
// the pacer steps aside and leaves the heap to the runtime: a tick stays short
// rather than memory tight. After a cycle the runtime ran
// itself, the pacer's estimate is the heap in use at the first tick after it, an
// overestimate (garbage allocated since, objects not yet swept), which errs on
// the side of fewer cycles.

// gcPacerMaxLive is the largest live heap the pacer collects in a tick: about
// 8 ms of marking and sweeping at the cost measured here, inside the 10 ms a tick
// may take.
const gcPacerMaxLive = 8 << 20

// gcMinHeadroom is the least the heap may grow past the live heap between two
// cycles: small, because a VM's garbage comes from ticks and calls, a few hundred
// bytes each.
const gcMinHeadroom = 128 << 10

// gcTarget is the heap at which a cycle is due for a live heap of live bytes:
// 1.5 × the live heap, but at least gcMinHeadroom above it.
func gcTarget(live uint64) uint64 {
	return live + max(live/2, gcMinHeadroom)
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
// and the heap in use now: never while the live heap is above gcPacerMaxLive.
// The first observation and the first after a cycle the runtime ran itself
// take the heap in use as the live estimate.
func (g *gcPacer) due(cycles, heapInUse uint64) bool {
	if !g.known || cycles != g.cycles {
		g.known, g.live, g.cycles = true, heapInUse, cycles
		return false
	}
	return g.live <= gcPacerMaxLive && heapInUse >= gcTarget(g.live)
}

// record records the pacer's own cycle: cycles and live heap right after it.
func (g *gcPacer) record(cycles, live uint64) {
	g.known, g.live, g.cycles = true, live, cycles
	g.collected++
}
