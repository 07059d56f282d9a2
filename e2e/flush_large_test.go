package e2e_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/messages"
)

// TestLargeFlushes drives 10 000 keys per flush through the compiled module,
// answering every call at once, in both modes. It guards two bugs of the wasm
// glue that only show under this much work in one callback: the Go GC starting
// or finishing inside the host's malloc (Envoy, and this host, trapped the
// poll_oneoff it made there, before the module answered its own:
// filter/wasmrewrite), and host out-parameters on a stack that moved
// during that malloc (an answer read as empty: a count lost or sent twice).
// Every flush must deliver exactly one count per key, with no crash. The
// flush_interval of 100ms is one tick, so each tick flushes every key; the
// "wake-ups" case also sends each key's first request from the request callback.
func TestLargeFlushes(t *testing.T) {
	const keys, rounds = 10000, 8
	for _, tc := range []struct{ name, mode, wake string }{
		{"single", "single", "0s"}, {"batch", "batch", "0s"}, {"single, wake-ups", "single", "30s"},
	} {
		mode := tc.mode
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			got := map[string]int{}
			h := startHost(t, wasmhost.Config{
				PluginConfig: []byte(fmt.Sprintf(`{"cluster":"collector","mode":%q,"key_source":"header","max_keys":%d,`+
					`"flush_interval":"100ms","wake_after":%q}`, mode, keys, tc.wake)),
				Clusters:    map[string]string{"collector": ""},
				ManualTicks: true,
				Dispatch: func(c wasmhost.Callout, reply func(wasmhost.Response)) {
					ms, err := messages.Decode(c.Body)
					mu.Lock()
					for _, m := range ms {
						got[m.Svc+"."+m.Namespace] += m.Count
					}
					mu.Unlock()
					status := 200
					if err != nil {
						status = 400
					}
					reply(wasmhost.Response{Status: status, Headers: [][2]string{{"content-type", "application/json"}},
						Body: []byte(`{"message":"Request received successfully!"}`)})
				},
			})
			w := h.Worker(0)
			ctx := boundedCtx(t)
			for round := 0; round < rounds; round++ {
				for i := 0; i < keys; i++ {
					req := wasmhost.Request{Headers: [][2]string{
						{":authority", "web.shop.svc.cluster.local:8080"}, {":path", "/api/v1/items?page=2"},
						{":method", "GET"}, {":scheme", "http"}, {"user-agent", "Mozilla/5.0 (X11; Linux x86_64)"},
						{"accept", "application/json"}, {"x-service", fmt.Sprintf("svc-%05d", i)}, {"x-namespace", "ns"},
						{"x-request-id", "3f2b9c1e-8d4a-4b7e-9a61-2c5d7e8f9a0b"},
					}}
					if _, err := w.Request(ctx, req); err != nil {
						t.Fatalf("round %d request %d: %v", round, i, err)
					}
				}
				if err := w.Tick(ctx); err != nil {
					t.Fatalf("round %d tick: %v", round, err)
				}
				syncWorker(w)
				if err := w.Crashed(); err != nil {
					t.Fatalf("round %d: VM crashed: %v", round, err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != keys {
				t.Fatalf("%d keys delivered, want %d", len(got), keys)
			}
			for k, n := range got {
				if n != rounds {
					t.Fatalf("key %s delivered %d counts, want %d", k, n, rounds)
				}
			}
		})
	}
}
