package e2e_test

import (
	"testing"

	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// TestHoldColdStart is a cold start on the compiled module, with the host's
// routing and cluster health: web.shop has no healthy host; its first
// requests are held (not answered 503) while the filter's checks are
// refused (Envoy refuses a call to a cluster without a healthy host); once
// the cluster has one, the next check, within one hold_probe_interval,
// answers and every held request reaches the service. Then a response
// without a healthy host (the service gone again) makes the key not ready:
// the next request is held again.
func TestHoldColdStart(t *testing.T) {
	const web = "outbound|80||web.shop.svc.cluster.local"
	h := startHost(t, wasmhost.Config{
		PluginConfig: []byte(`{"cluster":"operator","flush_interval":"1s","aggregate":"worker","hold":["web.shop"],` +
			`"hold_probe_interval":"200ms","hold_timeout":"10s"}`),
		ManualTicks:       true,
		Clusters:          map[string]string{"operator": "", web: ""},
		UnhealthyClusters: []string{web},
		Dispatch: func(_ wasmhost.Callout, reply func(wasmhost.Response)) {
			reply(wasmhost.Response{Status: 200}) // the collector and, once healthy, the service
		},
	})
	ctx := boundedCtx(t)
	w := h.Worker(0)
	req := func() *wasmhost.Stream {
		t.Helper()
		st, err := w.Open(ctx, wasmhost.Request{Headers: [][2]string{{":authority", "web.shop"}, {":path", "/"}, {":method", "GET"}}, Cluster: web})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	a, b := req(), req()
	for range 5 {
		if err := w.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !a.Paused() || !b.Paused() {
		t.Fatalf("cold: paused %v, %v; want both held, not answered 503", a.Paused(), b.Paused())
	}
	h.SetClusterHealthy(web, true)
	period := w.TickPeriod()
	ticks := 0
	for a.Paused() && ticks < 10 {
		if err := w.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		syncWorker(w)
		ticks++
	}
	// hold_probe_interval is 200ms: a check at most that long after the
	// cluster became healthy, its answer within the same tick here.
	if a.Paused() || b.Paused() || ticks > int(200e6/period.Nanoseconds())+1 {
		t.Fatalf("after the cluster became healthy: paused %v, %v after %d ticks of %v", a.Paused(), b.Paused(), ticks, period)
	}
	for _, st := range []*wasmhost.Stream{a, b} {
		res, err := st.Wait(ctx)
		if err != nil || res.Status != 200 || !res.UpstreamReached {
			t.Fatalf("held request: %+v, %v; want the service's 200", res, err)
		}
	}
	if c := req(); c.Paused() {
		t.Fatal("a request once ready was held")
	}
	// The service goes away: the key's first request of a tick (the one
	// watched: the others take the hot path) passes, gets Envoy's 503 (UH)
	// and makes the key not ready; the next one is held.
	h.SetClusterHealthy(web, false)
	if err := w.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := req().Wait(ctx); err != nil || res.Status != 503 {
		t.Fatalf("without a healthy host: %+v, %v; want Envoy's 503", res, err)
	}
	if d := req(); !d.Paused() {
		t.Fatal("the key still taken for ready after a response without a healthy host")
	}
	if err := w.Tick(ctx); err != nil { // the hold's metrics are pushed at ticks
		t.Fatal(err)
	}
	if got := h.Counter("reqcount.hold.resumed"); got != 2 {
		t.Errorf("reqcount.hold.resumed = %d, want 2", got)
	}
	if g := h.Gauge("reqcount.hold.held_now"); g != 1 {
		t.Errorf("reqcount.hold.held_now = %d, want 1", g)
	}
}
