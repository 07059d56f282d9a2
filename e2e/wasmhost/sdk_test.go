package wasmhost

import (
	"context"
	"testing"
)

// TestSDKFloors drives the benchmark floor plugins (SDK modules built by
// filter/_sdkabi/build.sh) the way the benchmarks do.
func TestSDKFloors(t *testing.T) {
	tests := []struct {
		name string
		// extra guest entries per request beyond the callbacks: one
		// proxy_on_memory_allocate per header read.
		allocs     uint64
		headerGets uint64
	}{
		{name: "noop"},
		{name: "authorityfloor", allocs: 1, headerGets: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t, tt.name, Config{Workers: 2, ManualTicks: true})
			m := h.Module()
			if m.ABI() != ABI020 || m.EntriesPerRequest() != 6 || len(m.Unimplemented()) != 0 {
				t.Errorf("module: ABI %s, %d entries per request, unimplemented %v; want 0.2.0, 6, none",
					m.ABI(), m.EntriesPerRequest(), m.Unimplemented())
			}
			const n = 2000
			for i := 0; i < 2; i++ {
				w := h.Worker(i)
				before := w.Stats()
				if err := w.Requests(context.Background(), n, getAuthority); err != nil {
					t.Fatalf("worker %d: Requests: %v", i, err)
				}
				after := w.Stats()
				if got, want := after.GuestEntries-before.GuestEntries, n*(uint64(m.EntriesPerRequest())+tt.allocs); got != want {
					t.Errorf("worker %d: %d guest entries for %d requests, want %d; stats %v", i, got, n, want, after)
				}
				if got := after.HostCalls["proxy_get_header_map_value"] - before.HostCalls["proxy_get_header_map_value"]; got != n*tt.headerGets {
					t.Errorf("worker %d: %d header reads, want %d", i, got, n*tt.headerGets)
				}
				if size := w.MemorySize(); size == 0 || size%65536 != 0 {
					t.Errorf("worker %d: MemorySize() = %d, want whole wasm pages", i, size)
				}
			}
			if err := h.Close(context.Background()); err != nil {
				t.Errorf("Close: %v", err)
			}
			calls := h.Stats().GuestCalls
			// Two roots plus 2n streams were created; each root got
			// proxy_on_done and proxy_on_delete at Close.
			if calls["proxy_on_context_create"] != 2+2*n || calls["proxy_on_done"] != 2+2*n || calls["proxy_on_delete"] != 2+2*n {
				t.Errorf("lifecycle calls %v, want %d creates, dones and deletes", calls, 2+2*n)
			}
		})
	}
}
