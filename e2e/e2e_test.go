package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reqcount/reqcount/e2e/collector"
	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/filter/filtertest"
)

// These tests run the compiled filter in the wasm host against a real collector
// on loopback, over real HTTP, with the host's real-time tick timers (but for
// TestMemoryBounded, which says why). They wait for outcomes (collector totals,
// counters) with bounded waits and assert no timings. Exactness is the point:
// every request counted once, none twice.

// liveCluster is the cluster name the filter flushes to; the host maps it to the
// collector's address.
const liveCluster = "collector"

// flushInterval is short so that the tests spend their time on traffic.
const flushInterval = 50 * time.Millisecond

// Metric names the tests read, beyond those filtertest exports.
const (
	metricCountsDelivered = "reqcount.flush.counts_delivered"
	metricCallsSent       = "reqcount.flush.calls_sent"
)

// liveConfig is a filter configuration for these tests: the given timeout plus
// extra JSON fields.
func liveConfig(timeout time.Duration, extra string) []byte {
	cfg := fmt.Sprintf(`{"cluster":%q,"flush_interval":%q,"timeout":%q`, liveCluster, flushInterval, timeout)
	if extra != "" {
		cfg += "," + extra
	}
	return []byte(cfg + "}")
}

// liveHost starts the filter on workers VMs, flushing to coll.
func liveHost(t *testing.T, workers int, coll *collector.Collector, config []byte) *wasmhost.Host {
	t.Helper()
	return startHost(t, wasmhost.Config{
		Workers:      workers,
		PluginConfig: config,
		Clusters:     map[string]string{liveCluster: coll.Addr()},
	})
}

// chunk is n identical requests to one authority, then a tick if asked (for
// hosts with manual ticks).
type chunk struct {
	authority string
	n         int
	tick      bool
}

// request is what a client sends to authority through Envoy.
func request(authority string) wasmhost.Request {
	return wasmhost.Request{Headers: [][2]string{
		{":authority", authority}, {":path", "/"}, {":method", "GET"}, {":scheme", "http"},
	}}
}

// send drives plans[i] through worker i, every worker on a goroutine of its
// own, and returns when all are done.
func send(t *testing.T, ctx context.Context, h *wasmhost.Host, plans [][]chunk) {
	t.Helper()
	errs := make([]error, len(plans))
	var wg sync.WaitGroup
	for i, plan := range plans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := h.Worker(i)
			for _, c := range plan {
				if err := w.Requests(ctx, c.n, request(c.authority)); err != nil {
					errs[i] = fmt.Errorf("worker %d, %d requests to %q: %w", i, c.n, c.authority, err)
					return
				}
				if c.tick {
					if err := w.Tick(ctx); err != nil {
						errs[i] = fmt.Errorf("worker %d: tick: %w", i, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// planTotal returns how many requests plans hold.
func planTotal(plans [][]chunk) int {
	n := 0
	for _, plan := range plans {
		for _, c := range plan {
			n += c.n
		}
	}
	return n
}

// waitTotals waits until the collector's totals are want, failing at once if a
// key goes past its wanted count (counted twice) and when the wait runs out.
func waitTotals(t *testing.T, ctx context.Context, coll *collector.Collector, want map[collector.Key]int) {
	t.Helper()
	err := coll.WaitFor(ctx, func(got map[collector.Key]int, _ collector.Stats) bool {
		return maps.Equal(got, want) || exceeds(got, want)
	})
	if got := coll.Totals(); !maps.Equal(got, want) {
		t.Fatalf("collector totals (wait: %v):\n%s\ncollector stats: %+v", err, totalsDiff(got, want), coll.Stats())
	}
}

// expectTotals checks the collector's totals now.
func expectTotals(t *testing.T, coll *collector.Collector, want map[collector.Key]int, when string) {
	t.Helper()
	if got := coll.Totals(); !maps.Equal(got, want) {
		t.Fatalf("collector totals %s:\n%s\ncollector stats: %+v", when, totalsDiff(got, want), coll.Stats())
	}
}

// exceeds reports whether got has a key want lacks or a count above want's.
func exceeds(got, want map[collector.Key]int) bool {
	for k, n := range got {
		if n > want[k] {
			return true
		}
	}
	return false
}

// totalsDiff lists the keys whose totals differ, sorted.
func totalsDiff(got, want map[collector.Key]int) string {
	keys := slices.Collect(maps.Keys(got))
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b collector.Key) int {
		return strings.Compare(a.Namespace+"/"+a.Svc, b.Namespace+"/"+b.Svc)
	})
	var b strings.Builder
	for _, k := range keys {
		if got[k] != want[k] {
			fmt.Fprintf(&b, "  %s/%s: got %d, want %d\n", k.Namespace, k.Svc, got[k], want[k])
		}
	}
	return b.String()
}

// eventually polls cond until it holds, failing the test when ctx ends first.
// It is for state only a poll can see (the filter's counters, pushed on ticks).
func eventually(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached: %v", what, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// shutDown closes h (the filter flushes and waits for its answers) and checks
// that the collector's totals did not move: nothing was owed, nothing is sent
// twice. After it the filter's counters hold their final values.
func shutDown(t *testing.T, ctx context.Context, h *wasmhost.Host, coll *collector.Collector, want map[collector.Key]int) {
	t.Helper()
	if err := h.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	if s := h.Stats(); len(s.Crashes) > 0 {
		t.Fatalf("crashed: %v", s.Crashes)
	}
	expectTotals(t, coll, want, "after the filter shut down")
	if s := coll.Stats(); s.Trailing != 0 || s.Rejected != 0 {
		t.Fatalf("collector saw %d bodies with trailing data and rejected %d requests: %+v", s.Trailing, s.Rejected, s)
	}
}

// target is a (service, namespace) the traffic is for.
type target struct{ svc, ns string }

func (tg target) key() collector.Key { return collector.Key{Svc: tg.svc, Namespace: tg.ns} }

// authorities are the forms a client may use to reach tg, all counted as tg.
func (tg target) authorities() []string {
	fqdn := tg.svc + "." + tg.ns + ".svc.cluster.local"
	forms := []string{
		tg.svc + "." + tg.ns,
		strings.ToUpper(tg.svc) + "." + tg.ns + ":80",
		tg.svc + "." + tg.ns + ".svc",
		fqdn + ":8080",
		fqdn + ".",
	}
	if tg.ns == "default" {
		forms = append(forms, tg.svc, tg.svc+":8080") // bare: the default namespace
	}
	return forms
}

// spread builds per-worker plans of perWorker requests each over targets,
// cycling through targets and their authority forms in chunks of varied size,
// and returns the totals the collector must end with.
func spread(workers, perWorker int, targets []target) ([][]chunk, map[collector.Key]int) {
	plans := make([][]chunk, workers)
	want := map[collector.Key]int{}
	for w := range plans {
		left := perWorker
		for i := 0; left > 0; i++ {
			tg := targets[(i+7*w)%len(targets)]
			forms := tg.authorities()
			n := min(left, 1+(37*i+11*w)%64)
			plans[w] = append(plans[w], chunk{authority: forms[(i/len(targets)+w)%len(forms)], n: n})
			want[tg.key()] += n
			left -= n
		}
	}
	return plans, want
}

// services returns n targets over the namespaces, round robin.
func services(n int, namespaces ...string) []target {
	out := make([]target, n)
	for i := range out {
		out[i] = target{fmt.Sprintf("svc-%02d", i), namespaces[i%len(namespaces)]}
	}
	return out
}

// TestTotalsExact sends 100 000 requests over 20 services in 3 namespaces on 4
// workers at once, and checks the collector ends with exactly what was sent,
// per key, and keeps it: nothing arrives twice, even at shutdown.
func TestTotalsExact(t *testing.T) {
	const workers, total = 4, 100_000
	ctx := boundedCtx(t)
	coll := startCollector(t, collector.Options{})
	h := liveHost(t, workers, coll, liveConfig(5*time.Second, ""))

	plans, want := spread(workers, total/workers, services(20, "default", "shop", "blog"))
	if n := planTotal(plans); n != total {
		t.Fatalf("plan holds %d requests, want %d", n, total)
	}
	send(t, ctx, h, plans)
	waitTotals(t, ctx, coll, want)

	eventually(t, ctx, "requests_counted pushed on a tick", func() bool {
		return h.Counter(filtertest.MetricCounted) == total
	})
	// Let the timers run a few more flushes: a count sent twice would show now.
	time.Sleep(4 * flushInterval)
	expectTotals(t, coll, want, "a few flushes after they were complete")

	shutDown(t, ctx, h, coll, want)
	for name, value := range map[string]uint64{
		filtertest.MetricCounted:        total,
		metricCountsDelivered:           total,
		filtertest.MetricCallsRejected:  0,
		filtertest.MetricCallsReset:     0,
		filtertest.MetricCountsRequeued: 0,
		filtertest.MetricOverflow:       0,
	} {
		if got := h.Counter(name); got != value {
			t.Errorf("counter %s = %d, want %d", name, got, value)
		}
	}
	// Each worker's first request of each key is a wake-up (wake_after's default),
	// sent from the request callback: they are mixed into the totals above.
	if got := h.Counter(filtertest.MetricWakeups); got == 0 || got > workers*20 {
		t.Errorf("counter %s = %d, want 1 to %d (one per worker and key at most)", filtertest.MetricWakeups, got, workers*20)
	}
	if got, sent := h.Counter(filtertest.MetricCallsDelivered), h.Counter(metricCallsSent); got != sent || got != uint64(coll.Stats().Accepted) {
		t.Errorf("calls delivered %d, sent %d, accepted by the collector %d: want all equal", got, sent, coll.Stats().Accepted)
	}
	if logs := h.Logs(wasmhost.LevelError); len(logs) > 0 {
		t.Errorf("error logs: %q", logs)
	}
	if logs := h.Logs(wasmhost.LevelWarn); len(logs) > 0 {
		t.Errorf("warnings on a healthy run: %q", logs[:min(len(logs), 5)])
	}
}

// TestFaults makes the collector fail in each way the operator can, from
// before the first flush, then heals it: the counts held through the fault
// arrive once, exactly, and nothing is counted twice.
//
// Each fault starts before any traffic on purpose: a fault switched on while a
// call is in flight can lose an answer the collector already counted (Pause
// closes connections mid-response), and the filter then rightly sends again:
// at-least-once, as with Envoy. That race is not what these cases test.
func TestFaults(t *testing.T) {
	// Long enough that a healthy answer never misses it, even under -race: a
	// missed one is counted by the collector and then sent again (at least once).
	const timeout = time.Second
	tests := []struct {
		name string
		// fail breaks the collector; heal mends it.
		fail, heal func(t *testing.T, coll *collector.Collector)
		// failed waits until the filter has met the fault.
		failed func(t *testing.T, ctx context.Context, h *wasmhost.Host, coll *collector.Collector)
		// metric is a filter counter the fault must have raised.
		metric string
	}{
		{
			name: "5xx answers",
			fail: func(_ *testing.T, c *collector.Collector) { c.FailWith(500) },
			heal: func(_ *testing.T, c *collector.Collector) { c.FailWith(0) },
			failed: func(t *testing.T, ctx context.Context, _ *wasmhost.Host, c *collector.Collector) {
				if err := c.WaitFor(ctx, func(_ map[collector.Key]int, s collector.Stats) bool { return s.Injected >= 3 }); err != nil {
					t.Fatalf("no failed calls: %v", err)
				}
			},
			metric: filtertest.MetricCallsRejected,
		},
		{
			name: "connection refused",
			fail: func(_ *testing.T, c *collector.Collector) { c.Pause() },
			heal: func(t *testing.T, c *collector.Collector) {
				if err := c.Resume(); err != nil {
					t.Fatal(err)
				}
			},
			failed: func(t *testing.T, ctx context.Context, h *wasmhost.Host, _ *collector.Collector) {
				// Envoy answers a refused connection with a 503 of its own.
				eventually(t, ctx, "calls rejected while the collector is down", func() bool {
					return h.Counter(filtertest.MetricCallsRejected) >= 3
				})
			},
			metric: filtertest.MetricCallsRejected,
		},
		{
			name: "answers slower than the timeout",
			// The collector holds each request well past the filter's timeout: the
			// filter (Envoy) gives up and resets the call, the collector sees its
			// client go away and counts nothing (Stats.Abandoned).
			fail: func(_ *testing.T, c *collector.Collector) { c.Delay(10 * timeout) },
			heal: func(_ *testing.T, c *collector.Collector) { c.Delay(0) },
			failed: func(t *testing.T, ctx context.Context, _ *wasmhost.Host, c *collector.Collector) {
				if err := c.WaitFor(ctx, func(_ map[collector.Key]int, s collector.Stats) bool { return s.Abandoned >= 3 }); err != nil {
					t.Fatalf("no abandoned calls: %v", err)
				}
			},
			metric: filtertest.MetricCallsRejected, // Envoy's 504
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := boundedCtx(t)
			coll := startCollector(t, collector.Options{})
			tc.fail(t, coll)
			h := liveHost(t, 2, coll, liveConfig(timeout, ""))
			targets := services(4, "shop", "default")

			before, want := spread(2, 1000, targets)
			send(t, ctx, h, before)
			tc.failed(t, ctx, h, coll)
			expectTotals(t, coll, map[collector.Key]int{}, "while failing")
			tc.heal(t, coll)

			after, wantAfter := spread(2, 1000, targets)
			send(t, ctx, h, after)
			for k, n := range wantAfter {
				want[k] += n
			}
			waitTotals(t, ctx, coll, want)
			shutDown(t, ctx, h, coll, want)
			if h.Counter(tc.metric) == 0 || h.Counter(filtertest.MetricCountsRequeued) == 0 {
				t.Errorf("counters %s = %d, %s = %d: want both > 0", tc.metric, h.Counter(tc.metric),
					filtertest.MetricCountsRequeued, h.Counter(filtertest.MetricCountsRequeued))
			}
			if got := h.Counter(filtertest.MetricCounted); got != 4000 {
				t.Errorf("counter %s = %d, want 4000", filtertest.MetricCounted, got)
			}
			// The first requests were wake-ups, sent into the fault and put back.
			if got := h.Counter(filtertest.MetricWakeups); got == 0 {
				t.Errorf("counter %s = 0: no wake-up was mixed in", filtertest.MetricWakeups)
			}
		})
	}
}

// TestTotalsExactSliced is TestTotalsExact with a flush interval split into 5
// ticks (each tick sends a fifth of the keys) and wake-ups of 300ms, so that keys
// also wake again after the pauses between rounds: totals stay exact.
func TestTotalsExactSliced(t *testing.T) {
	const workers, perRound, rounds = 4, 5000, 3
	ctx := boundedCtx(t)
	coll := startCollector(t, collector.Options{})
	h := liveHost(t, workers, coll, []byte(fmt.Sprintf(`{"cluster":%q,"flush_interval":"500ms","wake_after":"300ms","timeout":"5s"}`, liveCluster)))
	if got := h.Worker(0).TickPeriod(); got != 100*time.Millisecond {
		t.Fatalf("tick period %v, want 100ms (500ms in 5 slices)", got)
	}
	want := map[collector.Key]int{}
	for round := 0; round < rounds; round++ {
		plans, w := spread(workers, perRound/workers, services(12, "shop", "blog"))
		send(t, ctx, h, plans)
		for k, n := range w {
			want[k] += n
		}
		waitTotals(t, ctx, coll, want)
		time.Sleep(800 * time.Millisecond) // silence longer than wake_after
	}
	shutDown(t, ctx, h, coll, want)
	// aggregate: envoy (the default): each key wakes once per round, whichever
	// worker sees it first claims it; a claim that loses a compare-and-swap race
	// too often is skipped.
	if got := h.Counter(filtertest.MetricWakeups); got < rounds*12*8/10 || got > rounds*12 {
		t.Errorf("counter %s = %d, want about one wake-up per key and round (%d)", filtertest.MetricWakeups, got, rounds*12)
	}
}

// TestBatchTotalsExact runs the filter's batch mode (one JSON array per flush)
// against a collector that accepts arrays. (How many keys share a flush depends
// on timing here; TestScenarios checks the array itself.)
func TestBatchTotalsExact(t *testing.T) {
	const workers, total = 4, 20_000
	ctx := boundedCtx(t)
	coll := startCollector(t, collector.Options{Batch: true})
	h := liveHost(t, workers, coll, liveConfig(5*time.Second, `"mode":"batch"`))

	plans, want := spread(workers, total/workers, services(20, "default", "shop", "blog"))
	send(t, ctx, h, plans)
	waitTotals(t, ctx, coll, want)
	shutDown(t, ctx, h, coll, want)
	if got := h.Counter(filtertest.MetricCounted); got != total {
		t.Errorf("counter %s = %d, want %d", filtertest.MetricCounted, got, total)
	}
}

// TestAuthorityForms sends every authority form of filtertest.AuthorityCases:
// the accepted ones arrive under their key, the rejected ones never reach the
// collector and are counted in reqcount.requests_uncounted.<reason>.
func TestAuthorityForms(t *testing.T) {
	const workers, each = 2, 3
	ctx := boundedCtx(t)
	coll := startCollector(t, collector.Options{})
	h := liveHost(t, workers, coll, liveConfig(5*time.Second, ""))

	plans := make([][]chunk, workers)
	want := map[collector.Key]int{}
	uncounted := map[string]uint64{}
	var counted uint64
	for i, kc := range filtertest.AuthorityCases {
		plans[i%workers] = append(plans[i%workers], chunk{authority: kc.Authority, n: each})
		if kc.Reason != "" {
			uncounted[kc.Reason] += each
			continue
		}
		want[collector.Key{Svc: kc.Svc, Namespace: kc.Namespace}] += each
		counted += each
	}
	if len(uncounted) == 0 || len(want) == 0 {
		t.Fatal("filtertest.AuthorityCases has no rejected or no accepted form")
	}
	send(t, ctx, h, plans)
	waitTotals(t, ctx, coll, want)
	shutDown(t, ctx, h, coll, want)

	if got := h.Counter(filtertest.MetricCounted); got != counted {
		t.Errorf("counter %s = %d, want %d", filtertest.MetricCounted, got, counted)
	}
	for reason, n := range uncounted {
		if got := h.Counter(filtertest.MetricUncounted + reason); got != n {
			t.Errorf("counter %s%s = %d, want %d", filtertest.MetricUncounted, reason, got, n)
		}
	}
}

// TestBadConfigs starts the module with every configuration the filter must
// refuse: the start fails with an error, not a crash, and the error-level log
// names the field. The compiled module is not poisoned: a good start follows.
func TestBadConfigs(t *testing.T) {
	mod := filterModule(t)
	for _, bc := range filtertest.BadConfigs {
		t.Run(bc.Name, func(t *testing.T) {
			var logs logCapture
			h, err := wasmhost.New(boundedCtx(t), mod, wasmhost.Config{
				Workers:      2,
				PluginConfig: []byte(bc.Config),
				LogOutput:    &logs,
			})
			if err == nil {
				closeHost(t, h)
				t.Fatalf("configuration %q was accepted", bc.Config)
			}
			if errors.Is(err, wasmhost.ErrCrashed) {
				t.Fatalf("the module crashed on configuration %q: %v", bc.Config, err)
			}
			// New stops at the first worker that fails: one line from it.
			errs := logs.messages("error")
			if len(errs) != 1 {
				t.Fatalf("want one error log line, got %q (start error: %v)", errs, err)
			}
			if bc.Field != "" && !strings.Contains(errs[0], fmt.Sprintf("%q", bc.Field)) {
				t.Errorf("error log %q does not name field %q", errs[0], bc.Field)
			}
			if !strings.Contains(err.Error(), errs[0]) {
				t.Errorf("start error %q leaves out the module's error log %q", err, errs[0])
			}
			if crit := logs.messages("critical"); len(crit) > 0 {
				t.Errorf("critical logs: %q", crit)
			}
		})
	}

	t.Run("a good start after them", func(t *testing.T) {
		ctx := boundedCtx(t)
		coll := startCollector(t, collector.Options{})
		h := liveHost(t, 2, coll, liveConfig(5*time.Second, ""))
		want := map[collector.Key]int{{Svc: "web", Namespace: "shop"}: 20}
		send(t, ctx, h, [][]chunk{{{authority: "web.shop", n: 10}}, {{authority: "web.shop", n: 10}}})
		waitTotals(t, ctx, coll, want)
		shutDown(t, ctx, h, coll, want)
	})
}

// TestMemoryBounded churns 5000 distinct keys per worker through a table capped
// at max_keys 1000: the overflow is counted, the worker's linear memory stays
// small, and what was counted is delivered, once.
//
// Ticks are manual here, after every 2500 keys: with the timers, how many keys
// meet in one flush window would depend on the machine's speed, and with it
// whether anything overflows at all.
func TestMemoryBounded(t *testing.T) {
	const (
		workers = 2
		keys    = 5000
		block   = 2500 // keys between ticks: more than max_keys
		rounds  = 5
		per     = 8 // requests per key per round: 200 000 per worker
		bound   = 64 << 20
	)
	ctx := boundedCtx(t)
	coll := startCollector(t, collector.Options{Batch: true})
	// Batch mode: one call per flush however many keys, so the collector keeps up.
	h := startHost(t, wasmhost.Config{
		Workers:      workers,
		PluginConfig: liveConfig(5*time.Second, `"mode":"batch","max_keys":1000`),
		Clusters:     map[string]string{liveCluster: coll.Addr()},
		ManualTicks:  true,
	})

	plans := make([][]chunk, workers)
	for w := range plans {
		for r := 0; r < rounds; r++ {
			for k := 0; k < keys; k++ {
				// Every worker's keys are its own: 10 000 distinct keys in all.
				authority := fmt.Sprintf("k%04d.mem%d", (k*7919+r)%keys, w)
				plans[w] = append(plans[w], chunk{authority: authority, n: per, tick: k%block == block-1})
			}
		}
	}
	start := make([]uint32, workers)
	for w := range start {
		start[w] = h.Worker(w).MemorySize()
	}
	send(t, ctx, h, plans)
	for w := range start {
		size := h.Worker(w).MemorySize()
		t.Logf("worker %d: linear memory %d KiB before, %d KiB after %d requests", w, start[w]>>10, size>>10, rounds*keys*per)
		if size > bound {
			t.Errorf("worker %d: linear memory %d MiB, want below %d MiB", w, size>>20, bound>>20)
		}
	}

	// Every request is counted or overflows; what is counted is delivered. The
	// counters are pushed on ticks, and flushes go out on ticks: tick until done.
	sent := uint64(planTotal(plans))
	tickUntil := func(what string, cond func() bool) {
		eventually(t, ctx, what, func() bool {
			if err := h.Tick(ctx); err != nil {
				t.Fatalf("tick: %v", err)
			}
			return cond()
		})
	}
	tickUntil("counted + overflow = sent", func() bool {
		return h.Counter(filtertest.MetricCounted)+h.Counter(filtertest.MetricOverflow) == sent
	})
	counted, overflow := h.Counter(filtertest.MetricCounted), h.Counter(filtertest.MetricOverflow)
	t.Logf("sent %d: counted %d, overflow %d", sent, counted, overflow)
	if overflow == 0 {
		t.Errorf("counter %s = 0 with %d keys between ticks over max_keys 1000", filtertest.MetricOverflow, block)
	}
	sum := func(totals map[collector.Key]int) uint64 {
		var n uint64
		for _, v := range totals {
			n += uint64(v)
		}
		return n
	}
	tickUntil("counted requests delivered", func() bool { return sum(coll.Totals()) >= counted })
	totals := coll.Totals()
	if got := sum(totals); got != counted {
		t.Fatalf("the collector got %d requests, the filter counted %d", got, counted)
	}
	shutDown(t, ctx, h, coll, totals)
}
