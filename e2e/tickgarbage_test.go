package e2e_test

import (
	"fmt"
	"testing"

	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// TestEnvoyTickGarbage runs aggregate: envoy with one active key for thousands
// of ticks (manual, in lockstep) and reads how much the guests' heaps grow per
// tick between GC cycles (reqcount.vm.heap_bytes, pushed at every tick): what a
// tick leaves as garbage. A worker ticking for hours must not fill its heap to
// the GC's 4 MiB minimum (and its linear memory past 8 MiB) with it: the tick's
// shared-data work (publish, lease, collect, acks) allocates nothing in steady
// state, and the key's one report per interval little. The bound leaves room
// for what the tick's metrics push allocates (128 bytes), not for the ~900
// bytes a tick left before.
func TestEnvoyTickGarbage(t *testing.T) {
	const warm, ticks, maxPerTick = 240, 3000, 256
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprint(workers, " workers"), func(t *testing.T) {
			h := startHost(t, wasmhost.Config{
				Workers:      workers,
				PluginConfig: []byte(`{"cluster":"collector","aggregate":"envoy"}`),
				Clusters:     map[string]string{"collector": ""},
				ManualTicks:  true,
				LogLevel:     wasmhost.LevelWarn,
				Dispatch: func(c wasmhost.Callout, reply func(wasmhost.Response)) {
					reply(wasmhost.Response{Status: 200})
				},
			})
			ctx := boundedCtx(t)
			req := wasmhost.Request{Headers: [][2]string{{":authority", "web.shop"}}}
			tick := func() {
				for i := range workers {
					if _, err := h.Worker(i).Request(ctx, req); err != nil {
						t.Fatal(err)
					}
				}
				if err := h.Tick(ctx); err != nil {
					t.Fatal(err)
				}
				for i := range workers {
					syncWorker(h.Worker(i)) // the answers are in
				}
			}
			for range warm {
				tick()
			}
			var grown, counted int64
			heap, cycles := h.Gauge("reqcount.vm.heap_bytes"), h.Gauge("reqcount.vm.gc_cycles")
			for range ticks {
				tick()
				nh, nc := h.Gauge("reqcount.vm.heap_bytes"), h.Gauge("reqcount.vm.gc_cycles")
				if nc == cycles {
					grown += nh - heap
					counted++
				}
				heap, cycles = nh, nc
			}
			if counted < ticks/2 {
				t.Fatalf("a GC cycle in %d of %d ticks: the heap grows too fast to measure", ticks-counted, ticks)
			}
			perTick := float64(grown) / float64(counted) / float64(workers)
			t.Logf("%.0f bytes of heap per tick and worker, over %d ticks without a GC cycle", perTick, counted)
			if perTick > maxPerTick {
				t.Errorf("%.0f bytes of heap per tick and worker: want at most %d", perTick, maxPerTick)
			}
		})
	}
}
