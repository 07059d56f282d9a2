package e2e_test

import (
	"fmt"
	"testing"

	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// TestMemoryOverHoursOfTicks is a worker's long life: 20 000 ticks (2.8 hours of
// the default 500ms ticks), ten requests before each, every call answered 200.
// Ticks and calls leave a little garbage each; Go would let a heap whose live
// part is ~150 KiB grow to its 4 MiB floor before collecting, and WebAssembly
// memory never shrinks, so without the filter's GC pacer (filter/gcpace.go) the
// VM ended at 8.4 MiB (aggregate: envoy) and 6.5 MiB and growing (aggregate:
// worker), against 4 MiB at start. The bound is the start plus 1 MiB, and the
// heap in use at most 1 MiB.
func TestMemoryOverHoursOfTicks(t *testing.T) {
	if testing.Short() {
		t.Skip("20 000 ticks")
	}
	const ticks, requests = 20000, 10
	for _, aggregate := range []string{"envoy", "worker"} {
		t.Run(aggregate, func(t *testing.T) {
			t.Parallel()
			h := startHost(t, wasmhost.Config{
				PluginConfig: []byte(fmt.Sprintf(`{"cluster":"operator","key_source":"authority","aggregate":%q}`, aggregate)),
				Workers:      1,
				ManualTicks:  true,
				Clusters:     map[string]string{"operator": ""},
				Dispatch: func(_ wasmhost.Callout, reply func(wasmhost.Response)) {
					reply(wasmhost.Response{Status: 200})
				},
			})
			ctx := boundedCtx(t)
			w := h.Worker(0)
			start := w.MemorySize()
			req := wasmhost.Request{Headers: [][2]string{{":authority", "web.shop"}, {":path", "/"}}}
			for range ticks {
				if err := w.Requests(ctx, requests, req); err != nil {
					t.Fatal(err)
				}
				if err := w.Tick(ctx); err != nil {
					t.Fatal(err)
				}
			}
			end := w.MemorySize()
			heap := h.Gauge("reqcount.vm.heap_bytes")
			t.Logf("linear memory %d → %d bytes; heap in use %d bytes; %d GC cycles, %d by the pacer",
				start, end, heap, h.Gauge("reqcount.vm.gc_cycles"), h.Gauge("reqcount.vm.gc_collected"))
			if end > start+1<<20 {
				t.Errorf("linear memory grew from %d to %d bytes over %d ticks: more than 1 MiB", start, end, ticks)
			}
			if heap > 1<<20 {
				t.Errorf("heap in use %d bytes after %d ticks: more than 1 MiB", heap, ticks)
			}
		})
	}
}
