package wasmhost

import (
	"context"
	"testing"
)

// BenchmarkRequests measures one header-only request through the floor
// plugins on one worker, with the Requests fast path; it reports guest
// entries per request alongside the time.
func BenchmarkRequests(b *testing.B) {
	for _, name := range []string{"noop", "authorityfloor"} {
		b.Run(name, func(b *testing.B) {
			h, err := New(context.Background(), module(b, name), Config{ManualTicks: true})
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close(context.Background())
			w := h.Worker(0)
			before := w.Stats().GuestEntries
			b.ReportAllocs()
			b.ResetTimer()
			if err := w.Requests(context.Background(), b.N, getAuthority); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(w.Stats().GuestEntries-before)/float64(b.N), "entries/op")
			b.ReportMetric(float64(w.MemorySize())/(1<<20), "MiB")
		})
	}
}
