package e2e_test

import (
	"fmt"
	"testing"

	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// TestMemoryOverHoursOfTicks is a worker's long life: 20 000 ticks (2.8 hours of
// the default 500ms ticks), ten requests before each, over 200 keys in turn (so
// keys go idle, leave the table and come back, and most ticks send calls), every
// call answered 200. Keys and calls leave garbage; Go would let a heap whose live
// part is a few hundred KiB grow to its 4 MiB floor before collecting, and
// WebAssembly memory never shrinks. Without the filter's GC pacer
// (filter/gcpace.go) the VM ended at 8.3 MiB (aggregate: envoy) and 8.5 MiB
// (aggregate: worker) from 4 MiB at start; with it at 5.2 and 5.4 MiB. The bound
// is the start plus 2 MiB, and the heap in use at most 1 MiB.
func TestMemoryOverHoursOfTicks(t *testing.T) {
	if testing.Short() {
		t.Skip("20 000 ticks")
	}
	const ticks, requests, keys = 20000, 10, 200
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
			reqs := make([]wasmhost.Request, keys)
			for i := range reqs {
				reqs[i] = wasmhost.Request{Headers: [][2]string{{":authority", fmt.Sprintf("svc-%d.shop", i)}, {":path", "/"}}}
			}
			for tick := range ticks {
				// The next requests keys in turn: RequestsCycle starts at the slice's first.
				at := tick * requests % keys
				if err := w.RequestsCycle(ctx, requests, reqs[at:at+requests]); err != nil {
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
			if end > start+2<<20 {
				t.Errorf("linear memory grew from %d to %d bytes over %d ticks: more than 2 MiB", start, end, ticks)
			}
			if heap > 1<<20 {
				t.Errorf("heap in use %d bytes after %d ticks: more than 1 MiB", heap, ticks)
			}
		})
	}
}
