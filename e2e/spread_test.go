package e2e_test

import (
	"sync"
	"testing"

	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// TestReportPhaseSpread starts 8 workers together, as thousands of sidecars start
// together, gives each the same single key, and ticks them in lockstep through one
// flush interval (10s in 50 ticks): each worker reports its key once, at the tick
// of the key's slice shifted by the worker's random phase. The workers must not
// all report at the same tick. (All eight picking one of 50 phases alike has a
// chance of 50^-7.) Each worker reports alone here (aggregate: worker); with
// aggregate: envoy the lease holder's reports are spread the same way.
func TestReportPhaseSpread(t *testing.T) {
	const workers, slices = 8, 50
	var mu sync.Mutex
	sentAt := map[int][]int{} // worker → ticks at which it reported
	tick := 0
	h := startHost(t, wasmhost.Config{
		Workers:      workers,
		PluginConfig: []byte(`{"cluster":"collector","aggregate":"worker","flush_interval":"10s","wake_after":"0s"}`),
		Clusters:     map[string]string{"collector": ""},
		ManualTicks:  true,
		Dispatch: func(c wasmhost.Callout, reply func(wasmhost.Response)) {
			mu.Lock()
			sentAt[c.Worker] = append(sentAt[c.Worker], tick)
			mu.Unlock()
			reply(wasmhost.Response{Status: 200})
		},
	})
	ctx := boundedCtx(t)
	for i := 0; i < workers; i++ {
		if _, err := h.Worker(i).Request(ctx, request("web.shop")); err != nil {
			t.Fatal(err)
		}
	}
	for k := 1; k <= slices; k++ {
		mu.Lock()
		tick = k
		mu.Unlock()
		for i := 0; i < workers; i++ {
			if err := h.Worker(i).Tick(ctx); err != nil {
				t.Fatal(err)
			}
			syncWorker(h.Worker(i))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	distinct := map[int]bool{}
	for i := 0; i < workers; i++ {
		if len(sentAt[i]) != 1 {
			t.Fatalf("worker %d reported at ticks %v in one interval, want exactly once", i, sentAt[i])
		}
		distinct[sentAt[i][0]] = true
	}
	if len(distinct) < 2 {
		t.Fatalf("all %d workers reported at the same tick: %v", workers, sentAt)
	}
	t.Logf("report ticks per worker: %v", sentAt)
}
