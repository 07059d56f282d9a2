// Package vmstats reads what the request-count filter's worker VMs cost, on the
// e2e wasm host: linear memory as the host sees it, and the Go runtime's own
// figures from inside the VM, which the filter pushes to its reqcount.vm.*
// gauges on every tick (filter/vmstats.go).
package vmstats

import (
	"context"
	"errors"

	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// The filter's gauges (filter/vmstats.go). Each is a total over the VMs that run
// the filter in one host.
const (
	GaugeInstances   = "reqcount.vm.instances"
	GaugeGCCycles    = "reqcount.vm.gc_cycles"
	GaugeHeapBytes   = "reqcount.vm.heap_bytes"
	GaugeMemoryBytes = "reqcount.vm.memory_bytes"
)

// Stats are one host's VM figures, summed over its workers.
type Stats struct {
	// LinearMemory is the workers' wasm linear memory, in bytes (the host's
	// view; what Envoy's process pays).
	LinearMemory uint64
	// Instances is the number of VMs that reported (0 for a module that is
	// not the filter, or before its first tick: the fields below are then 0).
	Instances int64
	// GCCycles is the GC cycles the VMs have run since they started.
	GCCycles int64
	// HeapBytes is what heap objects (live, or dead and not yet swept) occupy.
	HeapBytes int64
	// MemoryBytes is all the memory the Go runtime has mapped in the VMs.
	MemoryBytes int64
}

// Read ticks every worker of h, so that the filter pushes fresh figures, waits
// for the tick to finish, and returns the figures. A module that sets no tick
// period (a floor plugin) is not ticked: Read then returns its linear memory
// only. Ticking flushes the filter's counts as its timer would: call Read
// between measured segments, never inside one.
func Read(ctx context.Context, h *wasmhost.Host) (Stats, error) {
	var s Stats
	for i := 0; i < h.Workers(); i++ {
		w := h.Worker(i)
		if err := w.Tick(ctx); err != nil && !errors.Is(err, wasmhost.ErrNoTickPeriod) {
			return s, err
		}
		s.LinearMemory += uint64(w.MemorySize()) // runs after the tick: a sync point
	}
	s.Instances = h.Gauge(GaugeInstances)
	s.GCCycles = h.Gauge(GaugeGCCycles)
	s.HeapBytes = h.Gauge(GaugeHeapBytes)
	s.MemoryBytes = h.Gauge(GaugeMemoryBytes)
	return s, nil
}
