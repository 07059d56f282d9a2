package main

import (
	"runtime"
	rtmetrics "runtime/metrics"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
)

// vmStatSpecs are the gauges that say what the worker VMs cost, each read from
// the Go runtime's own metrics inside the VM. Envoy runs one VM per worker and
// every VM adds its own value to the same gauge, so each is a total over the
// VMs running the filter: divide by reqcount.vm.instances for one VM's figure.
//
// runtime/metrics rather than runtime.ReadMemStats: ReadMemStats stops the
// world, and starting it again makes the runtime take another 256 KiB of linear
// memory in a wasip1 VM (measured: the first push at start grew the VM from 4.00
// to 4.25 MiB).
var vmStatSpecs = [numVMStats]struct {
	name   string
	metric string // a runtime/metrics name of kind KindUint64; "" for one the filter keeps
}{
	// instances is 1 per VM: the divisor for the others.
	vmInstances: {"reqcount.vm.instances", ""},
	// gc_cycles counts the GC cycles the VMs have run (a garbage-free hot path
	// keeps it still under load).
	vmGCCycles: {"reqcount.vm.gc_cycles", "/gc/cycles/total:gc-cycles"},
	// gc_collected counts the cycles the filter's GC pacer started itself
	// (gcpace.go): a part of gc_cycles.
	vmGCCollected: {"reqcount.vm.gc_collected", ""},
	// heap_bytes is what live and not yet swept heap objects occupy.
	vmHeapBytes: {"reqcount.vm.heap_bytes", "/memory/classes/heap/objects:bytes"},
	// memory_bytes is all the memory the Go runtime has mapped: the VM's linear
	// memory less the module's static data.
	vmMemoryBytes: {"reqcount.vm.memory_bytes", "/memory/classes/total:bytes"},
}

// Indexes into vmStatSpecs.
const (
	vmInstances = iota
	vmGCCycles
	vmGCCollected
	vmHeapBytes
	vmMemoryBytes
	numVMStats
)

// vmStats are the reqcount.vm.* gauges, and the GC pacer they feed. Each push
// reads the runtime's metrics into samples allocated once, in define, so a tick
// allocates nothing for them.
type vmStats struct {
	samples []rtmetrics.Sample // one per vmStatSpecs entry; unused for the filter's own
	gauges  [numVMStats]proxywasm.MetricGauge
	pushed  [numVMStats]int64 // the value each gauge holds from this VM
	pacer   gcPacer
}

// define registers the gauges with Envoy. The SDK panics when the host refuses a
// metric: the caller (metrics.define) turns that into an error.
func (v *vmStats) define() error {
	v.samples = make([]rtmetrics.Sample, numVMStats)
	for i, s := range vmStatSpecs {
		v.samples[i].Name = s.metric
		v.gauges[i] = proxywasm.DefineGaugeMetric(s.name)
	}
	return nil
}

// value is sample i as a gauge value; ok is false when this Go version does not
// have the metric.
func (v *vmStats) value(i int) (n uint64, ok bool) {
	if s := v.samples[i].Value; s.Kind() == rtmetrics.KindUint64 {
		return s.Uint64(), true
	}
	return 0, false
}

// push reads the runtime's metrics, lets the GC pacer collect if a cycle is due,
// and brings this VM's share of each gauge up to date. final takes it back out
// (to 0): a VM that shuts down (reconfiguration, drain) must not leave its
// figures in a process-wide gauge that outlives it.
func (v *vmStats) push(final bool) {
	if v.samples == nil {
		return // not defined: the plugin did not start
	}
	if !final {
		rtmetrics.Read(v.samples) // a sample with an empty name reads as KindBad
		cycles, ok1 := v.value(vmGCCycles)
		heap, ok2 := v.value(vmHeapBytes)
		if ok1 && ok2 && v.pacer.due(cycles, heap) {
			runtime.GC() // a full cycle, swept: the heap in use is the live heap
			rtmetrics.Read(v.samples)
			cycles, _ = v.value(vmGCCycles)
			heap, _ = v.value(vmHeapBytes)
			v.pacer.record(cycles, heap)
		}
	}
	for i, s := range vmStatSpecs {
		var now int64
		switch {
		case final:
		case i == vmInstances:
			now = 1
		case i == vmGCCollected:
			now = int64(v.pacer.collected)
		case s.metric != "":
			n, ok := v.value(i)
			if !ok {
				continue // not supported by this Go version: leave the gauge as it is
			}
			now = int64(n)
		}
		if now != v.pushed[i] {
			v.gauges[i].Add(now - v.pushed[i])
			v.pushed[i] = now
		}
	}
}
