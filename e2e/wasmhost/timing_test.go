package wasmhost

import (
	"context"
	"runtime"
	"testing"
)

// TestGuestCallbackTimes checks what Config.TimeCallbacks records: per
// export, a total and a longest call, in wall time and (on Linux) in the
// worker thread's CPU time, summed and maxed over workers by Host.Stats;
// nothing without it. It asserts no duration beyond "recorded".
func TestGuestCallbackTimes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		timed bool
	}{
		{"off by default", false},
		{"TimeCallbacks", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, "guest", Config{Workers: 2, ManualTicks: true, PluginConfig: []byte("tick=60000"), TimeCallbacks: tc.timed})
			ctx := context.Background()
			for range 3 {
				if err := h.Tick(ctx); err != nil {
					t.Fatal(err)
				}
			}
			mustRequest(t, h.Worker(1), getAuthority)
			total := h.Stats()
			if !tc.timed {
				if len(total.GuestTime) != 0 || len(total.GuestMax) != 0 || len(total.GuestCPU) != 0 || len(total.GuestCPUMax) != 0 {
					t.Errorf("untimed host recorded times: %v / %v / %v / %v", total.GuestTime, total.GuestMax, total.GuestCPU, total.GuestCPUMax)
				}
				return
			}
			for _, name := range []string{"proxy_on_tick", "proxy_on_request_headers", "proxy_on_configure"} {
				if total.GuestMax[name] <= 0 || total.GuestMax[name] > total.GuestTime[name] {
					t.Errorf("%s: max %v, total %v; want 0 < max ≤ total", name, total.GuestMax[name], total.GuestTime[name])
				}
				if runtime.GOOS != "linux" {
					continue // thread CPU time is measured on Linux only
				}
				if total.GuestCPUMax[name] <= 0 || total.GuestCPUMax[name] > total.GuestCPU[name] {
					t.Errorf("%s: CPU max %v, total %v; want 0 < max ≤ total", name, total.GuestCPUMax[name], total.GuestCPU[name])
				}
			}
			if _, ok := total.GuestTime[h.Module().allocator]; ok {
				t.Errorf("the allocator's entries are timed: %v", total.GuestTime)
			}
			w0, w1 := h.Worker(0).Stats(), h.Worker(1).Stats()
			if _, ok := w0.GuestTime["proxy_on_request_headers"]; ok {
				t.Errorf("worker 0 served no request but has a time for it: %v", w0.GuestTime)
			}
			for _, name := range []string{"proxy_on_tick", "proxy_on_request_headers"} {
				if got, want := total.GuestTime[name], w0.GuestTime[name]+w1.GuestTime[name]; got != want {
					t.Errorf("Host.Stats %s total = %v, want the workers' sum %v", name, got, want)
				}
				if got, want := total.GuestMax[name], max(w0.GuestMax[name], w1.GuestMax[name]); got != want {
					t.Errorf("Host.Stats %s max = %v, want the workers' max %v", name, got, want)
				}
				if got, want := total.GuestCPU[name], w0.GuestCPU[name]+w1.GuestCPU[name]; got != want {
					t.Errorf("Host.Stats %s CPU total = %v, want the workers' sum %v", name, got, want)
				}
			}
		})
	}
}
