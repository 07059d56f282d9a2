package main

import (
	rtmetrics "runtime/metrics"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
)

// vmStatSpecs are the gauges that say what the worker VMs cost, each read from
// the Go runtime's own metrics inside the VM. Envoy runs one VM per worker and
// every VM adds its own value to the same gauge, so each is a total over the
// VMs running the filter: divide by reqcount.vm.instances for one VM's figure.
var vmStatSpecs = []struct {
	name   string
	metric string // a runtime/metrics name of kind KindUint64; "" for a constant 1
}{
	// instances is 1 per VM: the divisor for the others.
	{"reqcount.vm.instances", ""},
	// gc_cycles counts the GC cycles the VMs have run (a garbage-free hot path
	// keeps it still under load).
	{"reqcount.vm.gc_cycles", "/gc/cycles/total:gc-cycles"},
	// heap_bytes is what live and not yet swept heap objects occupy.
	{"reqcount.vm.heap_bytes", "/memory/classes/heap/objects:bytes"},
	// memory_bytes is all the memory the Go runtime has mapped: the VM's linear
	// memory less the module's static data (a few hundred KiB).
	{"reqcount.vm.memory_bytes", "/memory/classes/total:bytes"},
}

// vmStats are the reqcount.vm.* gauges. Each push reads the runtime's metrics
// into samples allocated once, in define, so a tick allocates nothing for them.
type vmStats struct {
	samples []rtmetrics.Sample // one per vmStatSpecs entry; unused for a constant
	gauges  []proxywasm.MetricGauge
	pushed  []int64 // the value each gauge holds from this VM
}

// define registers the gauges with Envoy. The SDK panics when the host refuses a
// metric: the caller (metrics.define) turns that into an error.
func (v *vmStats) define() error {
	v.samples = make([]rtmetrics.Sample, len(vmStatSpecs))
	v.gauges = make([]proxywasm.MetricGauge, len(vmStatSpecs))
	v.pushed = make([]int64, len(vmStatSpecs))
	for i, s := range vmStatSpecs {
		v.samples[i].Name = s.metric
		v.gauges[i] = proxywasm.DefineGaugeMetric(s.name)
	}
	return nil
}

// push brings this VM's share of each gauge up to date. final takes it back out
// (to 0): a VM that shuts down (reconfiguration, drain) must not leave its
// figures in a process-wide gauge that outlives it.
func (v *vmStats) push(final bool) {
	if len(v.gauges) == 0 {
		return // not defined: the plugin did not start
	}
	if !final {
		rtmetrics.Read(v.samples) // a sample with an empty name reads as KindBad
	}
	for i, s := range v.samples {
		var now int64
		switch {
		case final:
		case s.Name == "":
			now = 1
		case s.Value.Kind() == rtmetrics.KindUint64:
			now = int64(s.Value.Uint64())
		default:
			continue // not supported by this Go version: leave the gauge as it is
		}
		if now != v.pushed[i] {
			v.gauges[i].Add(now - v.pushed[i])
			v.pushed[i] = now
		}
	}
}
