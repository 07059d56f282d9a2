package e2e_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/reqcount/reqcount/e2e/collector"
	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/messages"
)

// TestSimHold is the hold under seeded, randomized timing and faults, on the
// compiled module with the host's routing and cluster health: 3 workers
// ticking at their own phases in simulated time (the guests' wall clock),
// requests to a held key (web.shop) and a key that is not (api.shop) on
// random workers, clients resetting held requests at random, the service's
// cluster going healthy, unhealthy again for a while (often longer than
// hold_timeout) and healthy; every call (the checks and the reports)
// answered after a random delay up to its timeout: 2xx, 503, Envoy's 504 at
// the timeout, or a reset. The oracle: no request is held longer than
// hold_timeout (plus a probe interval and a tick); every request ends (none
// is lost held), the ones not reset by their client with an answer (the
// service's, or Envoy's 503 after the hold let go); the hold's counters add
// up (held = resumed + timed out + abandoned, none held at the end); and
// every request is counted exactly once, held or not (the collector's 2xx
// totals equal what was sent). Seeds as TestSimAggregate (-sim.seeds).
func TestSimHold(t *testing.T) {
	for _, seed := range simSeeds(t) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runHoldSim(t, seed) })
	}
}

const (
	holdSimWeb     = "outbound|80||web.shop.svc.cluster.local"
	holdSimAPI     = "outbound|80||api.shop.svc.cluster.local"
	holdSimTimeout = 3 * time.Second
	holdSimProbe   = 200 * time.Millisecond
	holdSimTraffic = 15 * time.Second
)

type holdSimCall struct {
	due    time.Time
	seq    int
	worker int
	resp   wasmhost.Response
	counts map[collector.Key]int // a report's, when resp is a 2xx
	reply  func(wasmhost.Response)
}

type holdSimStream struct {
	st       *wasmhost.Stream
	worker   int
	opened   time.Time
	resetByC bool
}

func runHoldSim(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x401d))
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	begin := now
	var open []*holdSimCall
	seq := 0
	faulty := true
	collected := map[collector.Key]int{}
	badBodies := 0
	// before draws a delay in (0, limit).
	before := func(limit time.Duration) time.Duration {
		return time.Millisecond + time.Duration(rng.Int64N(int64(limit-time.Millisecond)))
	}
	dispatch := func(c wasmhost.Callout, reply func(wasmhost.Response)) {
		mu.Lock()
		defer mu.Unlock()
		timeout := c.Timeout
		if timeout <= 0 {
			timeout = 2 * time.Second
		}
		call := &holdSimCall{worker: c.Worker, reply: reply}
		if c.Cluster == "operator" {
			ms, err := messages.Decode(c.Body)
			if err != nil {
				badBodies++
			}
			call.counts = map[collector.Key]int{}
			for _, m := range ms {
				call.counts[collector.Key{Svc: m.Svc, Namespace: m.Namespace}] += m.Count
			}
		}
		// The service's own answers (a request the hold let go) are quick
		// and 200: the faults are the checks' and the reports'.
		service := c.Cluster != "operator" && c.Header(":method") != "HEAD"
		switch r := rng.IntN(100); {
		case service:
			call.resp, call.due = wasmhost.Response{Status: 200}, now.Add(before(300*time.Millisecond))
		case !faulty || r < 55:
			call.resp, call.due = wasmhost.Response{Status: 200}, now.Add(before(timeout))
		case r < 70:
			call.resp, call.due = wasmhost.ConnectFailure(), now.Add(before(timeout/4))
		case r < 85:
			call.resp, call.due = wasmhost.UpstreamTimeout(), now.Add(timeout)
		default:
			call.resp, call.due = wasmhost.Reset(), now.Add(before(timeout))
		}
		seq++
		call.seq = seq
		open = append(open, call)
	}
	ctx := boundedRunCtx(t, 5*time.Minute)
	const workers = 3
	h, err := wasmhost.New(ctx, filterModule(t), wasmhost.Config{
		Workers: workers,
		PluginConfig: []byte(fmt.Sprintf(`{"cluster":"operator","flush_interval":"1s","timeout":"1s","aggregate":"worker","wake_after":"0s",`+
			`"hold":["web.shop"],"hold_probe_interval":%q,"hold_timeout":%q}`, holdSimProbe, holdSimTimeout)),
		ManualTicks:       true,
		Walltime:          func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		Clusters:          map[string]string{"operator": "", holdSimWeb: "", holdSimAPI: ""},
		UnhealthyClusters: []string{holdSimWeb},
		Dispatch:          dispatch,
		RandomSeed:        seed,
		RandomPerVM:       true,
		LogLevel:          wasmhost.LevelInfo,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeHost(t, h) })

	// The service's cluster: cold, then up, down for a while, up for good.
	up1 := 500*time.Millisecond + time.Duration(rng.Int64N(int64(4*time.Second)))
	down := up1 + time.Second + time.Duration(rng.Int64N(int64(3*time.Second)))
	up2 := down + 500*time.Millisecond + time.Duration(rng.Int64N(int64(5*time.Second)))
	t.Logf("seed %d: web.shop healthy from %v, unhealthy %v-%v", seed, up1, down, up2)
	healthy := false

	next := make([]time.Time, workers)
	period := h.Worker(0).TickPeriod()
	for i := range next {
		next[i] = now.Add(time.Duration(rng.Int64N(int64(period))))
	}
	sent := map[collector.Key]int{}
	var streams []*holdSimStream
	resets := 0
	limit := holdSimTimeout + holdSimProbe + period + 2*simStep

	step := func(traffic bool) {
		mu.Lock()
		now = now.Add(simStep)
		el := now.Sub(begin)
		mu.Unlock()
		if want := el >= up1 && (el < down || el >= up2); want != healthy {
			healthy = want
			h.SetClusterHealthy(holdSimWeb, healthy)
		}
		// Answers due, in due order.
		for {
			mu.Lock()
			var due *holdSimCall
			at := -1
			for i, c := range open {
				if !c.due.After(now) && (due == nil || c.due.Before(due.due) || (c.due.Equal(due.due) && c.seq < due.seq)) {
					due, at = c, i
				}
			}
			if due == nil {
				mu.Unlock()
				break
			}
			open = slices.Delete(open, at, at+1)
			if due.resp.Status/100 == 2 {
				for k, n := range due.counts {
					collected[k] += n
				}
			}
			mu.Unlock()
			due.reply(due.resp)
			if err := h.Worker(due.worker).Sync(ctx); err != nil {
				t.Fatalf("worker %d: %v", due.worker, err)
			}
		}
		// Ticks due, each worker at its own phase, with a little jitter.
		for i := range next {
			if next[i].After(now) {
				continue
			}
			next[i] = next[i].Add(period + simStep*time.Duration(rng.IntN(5)-2))
			if err := h.Worker(i).Tick(ctx); err != nil {
				t.Fatalf("tick worker %d: %v", i, err)
			}
		}
		if traffic && rng.IntN(4) == 0 {
			w := rng.IntN(workers)
			auth, cluster, key := "web.shop", holdSimWeb, collector.Key{Svc: "web", Namespace: "shop"}
			if rng.IntN(3) == 0 {
				auth, cluster, key = "api.shop", holdSimAPI, collector.Key{Svc: "api", Namespace: "shop"}
			}
			st, err := h.Worker(w).Open(ctx, wasmhost.Request{Headers: [][2]string{{":authority", auth}, {":path", "/"}, {":method", "GET"}}, Cluster: cluster})
			if err != nil {
				t.Fatalf("request on worker %d: %v", w, err)
			}
			sent[key]++
			streams = append(streams, &holdSimStream{st: st, worker: w, opened: now})
		}
		for _, s := range streams {
			if !s.st.Paused() {
				continue
			}
			if traffic && rng.IntN(400) == 0 { // the client gives up
				if err := s.st.Reset(ctx); err != nil {
					t.Fatal(err)
				}
				s.resetByC = true
				resets++
				continue
			}
			if held := now.Sub(s.opened); held > limit {
				t.Fatalf("seed %d: a request on worker %d held %v at %v: longer than hold_timeout %v (+ a probe interval and a tick)",
					seed, s.worker, held, now.Sub(begin), holdSimTimeout)
			}
		}
	}
	for now.Sub(begin) < holdSimTraffic {
		step(true)
	}
	mu.Lock()
	faulty = false
	mu.Unlock()
	// Drain: no traffic, every answer 2xx, until every report is in.
	for end := now.Add(simDrainMax); now.Before(end); {
		step(false)
		mu.Lock()
		met := maps2Equal(collected, sent) && len(open) == 0
		mu.Unlock()
		if met {
			break
		}
	}
	for range 100 { // a second more: nothing else may arrive
		step(false)
	}

	reached, letGo503 := 0, 0
	for _, s := range streams {
		select {
		case <-s.st.Done():
		default:
			t.Fatalf("seed %d: a request on worker %d opened at %v never ended (held: %v)", seed, s.worker, s.opened.Sub(begin), s.st.Paused())
		}
		res, err := s.st.Wait(ctx)
		switch {
		case s.resetByC:
		case err != nil:
			t.Errorf("seed %d: a request on worker %d: %v", seed, s.worker, err)
		case res.UpstreamReached && res.Status == 200:
			reached++
		case res.Status == 503 && res.ResponseCodeDetails == "no_healthy_upstream":
			letGo503++
		default:
			t.Errorf("seed %d: a request on worker %d ended %+v", seed, s.worker, res)
		}
	}
	for i := range workers { // the hold's metrics are pushed at ticks
		if err := h.Worker(i).Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	held, resumed, timedOut, abandoned := h.Counter("reqcount.hold.held"), h.Counter("reqcount.hold.resumed"),
		h.Counter("reqcount.hold.timed_out"), h.Counter("reqcount.hold.abandoned")
	t.Logf("seed %d: %d requests: %d reached the service, %d got Envoy's 503, %d reset by their client; hold: held %d, resumed %d, timed out %d, abandoned %d",
		seed, len(streams), reached, letGo503, resets, held, resumed, timedOut, abandoned)
	if held != resumed+timedOut+abandoned || h.Gauge("reqcount.hold.held_now") != 0 {
		t.Errorf("seed %d: held %d != resumed %d + timed out %d + abandoned %d, or held_now %d != 0",
			seed, held, resumed, timedOut, abandoned, h.Gauge("reqcount.hold.held_now"))
	}
	if held == 0 {
		t.Errorf("seed %d: nothing was held: the run proves nothing", seed)
	}
	if badBodies > 0 || !maps2Equal(collected, sent) {
		t.Errorf("seed %d: counted %v (%d bad bodies), sent %v: each request must be counted exactly once", seed, collected, badBodies, sent)
	}
	if err := errors.Join(h.Worker(0).Crashed(), h.Worker(1).Crashed(), h.Worker(2).Crashed()); err != nil {
		t.Fatal(err)
	}
}
