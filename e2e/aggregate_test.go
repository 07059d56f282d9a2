package e2e_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reqcount/reqcount/e2e/collector"
	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/filter/filtertest"
	"github.com/reqcount/reqcount/filter/merge"
	"github.com/reqcount/reqcount/messages"
)

// TestAggregateEnvoy runs aggregate: envoy on 8 workers of one host, the way
// Envoy runs 8 worker VMs sharing one vm_id's shared data, with real-time ticks:
// 200 000 requests over 50 keys. Midway the lease holder is stopped (Envoy
// removes its VM: proxy_on_done, drain) and another worker's VM dies outright
// after it published its counts; then the collector fails (500s) for a while and
// heals, with traffic going on. The collector must end with exactly what was
// sent, per key; the Envoy must have spoken with about one voice (about one
// regular message per key per flush interval, not one per worker), and woken each
// key about once; each key's per-service counter must hold its exact total.
func TestAggregateEnvoy(t *testing.T) {
	const (
		workers  = 8
		keys     = 50
		total    = 200_000
		interval = 500 * time.Millisecond
	)
	ctx := boundedCtx(t)
	coll := startCollector(t, collector.Options{})
	h := liveHost(t, workers, coll, []byte(fmt.Sprintf(
		`{"cluster":%q,"aggregate":"envoy","flush_interval":%q,"wake_after":"1h","timeout":"1s"}`, liveCluster, interval)))
	ids := workerIDs(t, h)
	targets := services(keys, "shop", "blog", "default")
	want := map[collector.Key]int{}
	add := func(w map[collector.Key]int) {
		for k, n := range w {
			want[k] += n
		}
	}

	// 1. Every worker, healthy collector: the first quarter.
	began := time.Now()
	plans, w := spread(workers, total/4/workers, targets)
	send(t, ctx, h, plans)
	add(w)
	waitTotals(t, ctx, coll, want)
	healthy := time.Since(began)
	wakeups := h.Counter(filtertest.MetricWakeups)
	t.Logf("healthy phase: %v (%.1f intervals), %d wake-ups, messages per key: %v",
		healthy.Round(time.Millisecond), healthy.Seconds()/interval.Seconds(), wakeups, messagesPerKey(coll))
	// Each of the 8 workers sees each key's first request; one claims the wake-up.
	// (A claim that loses a compare-and-swap race too often is skipped: fewer.)
	if wakeups < keys*8/10 || wakeups > keys {
		t.Errorf("%d wake-ups for %d keys on %d workers: want about one per key", wakeups, keys, workers)
	}

	// 2. Stop the lease holder; the VM of another worker dies (after publishing).
	holder := leaseHolder(t, h, ids)
	victim := (holder + 1) % workers
	plans, w = spread(workers, total/4/workers, targets)
	send(t, ctx, h, plans)
	add(w)
	// A whole interval and then some: every worker has published every outbox
	// shard (one per tick), so what it counted is merged.
	time.Sleep(2 * interval)
	if err := h.Worker(holder).Stop(ctx); err != nil {
		t.Fatalf("stop worker %d (the lease holder): %v", holder, err)
	}
	h.Worker(victim).Kill()
	gone := map[int]bool{holder: true, victim: true}
	victimSent := 0
	for _, c := range plans[victim] {
		victimSent += c.n
	}
	victimSent += total / 4 / workers // its share of the first quarter
	waitTotals(t, ctx, coll, want)
	lease, _, _ := h.SharedData(merge.KeyLease)
	t.Logf("stopped worker %d (lease holder), killed worker %d: totals exact; lease %q", holder, victim, lease)

	// 3. The collector fails with 500s while traffic goes on, then heals.
	sendOnLiveWorkers := func() { // an eighth of the total over the workers left
		plans, _ := spread(workers, total/8/(workers-len(gone)), targets)
		for i := range gone {
			plans[i] = nil
		}
		send(t, ctx, h, plans)
		add(planTotals(plans, targets))
	}
	coll.FailWith(500)
	sendOnLiveWorkers()
	sendOnLiveWorkers()
	if err := coll.WaitFor(ctx, func(_ map[collector.Key]int, s collector.Stats) bool { return s.Injected >= 3 }); err != nil {
		t.Fatalf("no failed calls: %v", err)
	}
	expectNotBeyond(t, coll, want)
	coll.FailWith(0)
	sendOnLiveWorkers()
	sendOnLiveWorkers()
	waitTotals(t, ctx, coll, want)

	// 4. Shut down: the totals stay exact. The per-service counters never count a
	// request twice; they lack at most what the dead VM had not pushed yet (a VM
	// pushes its metrics on ticks, and a dead one pushes nothing more).
	shutDown(t, ctx, h, coll, want)
	sum, series := 0, 0
	for k, n := range want {
		sum += n
		got := int(h.Counter(filtertest.SeriesName(k.Svc, k.Namespace)))
		series += got
		if got > n {
			t.Errorf("per-service counter of %s.%s = %d, more than the %d requests sent", k.Svc, k.Namespace, got, n)
		}
	}
	if series < sum-victimSent {
		t.Errorf("per-service counters sum to %d: %d requests sent, of which the dead VM sent %d", series, sum, victimSent)
	}
	if got := h.Counter(filtertest.MetricCounted); got != uint64(sum) {
		t.Errorf("counter %s = %d, want %d", filtertest.MetricCounted, got, sum)
	}
	if s := coll.Stats(); s.Injected == 0 || h.Counter(filtertest.MetricCountsRequeued) == 0 {
		t.Errorf("no fault was met: collector %+v, requeued %d", s, h.Counter(filtertest.MetricCountsRequeued))
	}
}

// TestAggregateOneVoice checks the cadence: 8 workers, steady traffic for every
// key on every worker, the workers ticked in lockstep through whole flush
// intervals (manual ticks, so the machine's load cannot stretch an interval):
// with aggregate: envoy each key goes out about once per interval from the whole
// Envoy, with aggregate: worker once per worker; and every request is in its
// service's counter exactly once.
func TestAggregateOneVoice(t *testing.T) {
	const workers, keys, rounds, warm = 8, 10, 6, 2
	for _, tc := range []struct {
		aggregate string
		lo, hi    float64 // messages per key per interval, after the warm-up
	}{
		{"envoy", 0.8, 1.25},
		{"worker", 7.5, 8.5},
	} {
		t.Run(tc.aggregate, func(t *testing.T) {
			var mu sync.Mutex
			round := 0
			perKey := map[string]int{} // messages after the warm-up
			h := startHost(t, wasmhost.Config{
				Workers: workers,
				PluginConfig: []byte(fmt.Sprintf(`{"cluster":"collector","aggregate":%q,"flush_interval":"1s","wake_after":"0s"}`,
					tc.aggregate)),
				Clusters:    map[string]string{"collector": ""},
				ManualTicks: true,
				Dispatch: func(c wasmhost.Callout, reply func(wasmhost.Response)) {
					ms, err := messages.Decode(c.Body)
					mu.Lock()
					for _, m := range ms {
						if round >= warm {
							perKey[m.Svc+"."+m.Namespace]++
						}
					}
					mu.Unlock()
					status := 200
					if err != nil {
						status = 400
					}
					reply(wasmhost.Response{Status: status})
				},
			})
			ctx := boundedCtx(t)
			ticks := int(time.Second / h.Worker(0).TickPeriod())
			targets := services(keys, "shop")
			want := map[collector.Key]int{}
			for r := 0; r < rounds; r++ {
				mu.Lock()
				round = r
				mu.Unlock()
				plans := make([][]chunk, workers)
				for i := range plans {
					for _, tg := range targets {
						plans[i] = append(plans[i], chunk{authority: tg.svc + "." + tg.ns, n: 3})
						want[tg.key()] += 3
					}
				}
				send(t, ctx, h, plans)
				for k := 0; k < ticks; k++ {
					if err := h.Tick(ctx); err != nil {
						t.Fatal(err)
					}
					for i := 0; i < workers; i++ {
						syncWorker(h.Worker(i))
					}
				}
			}
			mu.Lock()
			for _, tg := range targets {
				k := tg.svc + "." + tg.ns
				rate := float64(perKey[k]) / float64(rounds-warm)
				if rate < tc.lo || rate > tc.hi {
					t.Errorf("%s: %d messages in %d intervals: %.2f per interval, want %.2f to %.2f", k, perKey[k], rounds-warm, rate, tc.lo, tc.hi)
				}
			}
			t.Logf("messages per key in %d intervals: %v", rounds-warm, perKey)
			mu.Unlock()
			if err := h.Close(ctx); err != nil {
				t.Fatal(err)
			}
			// Every request in its service's counter exactly once, across workers.
			for k, n := range want {
				if got := h.Counter(filtertest.SeriesName(k.Svc, k.Namespace)); got != uint64(n) {
					t.Errorf("per-service counter of %s.%s = %d, want %d", k.Svc, k.Namespace, got, n)
				}
			}
		})
	}
}

// messagesPerKey counts the messages the collector accepted per key.
func messagesPerKey(coll *collector.Collector) map[string]int {
	out := map[string]int{}
	for _, m := range coll.Received() {
		out[m.Svc+"."+m.Namespace]++
	}
	return out
}

// workerIDs reads each worker's aggregate id from its start log line.
func workerIDs(t *testing.T, h *wasmhost.Host) map[string]int {
	t.Helper()
	ids := map[string]int{}
	for _, l := range h.LogLines() {
		if id, ok := strings.CutPrefix(l.Message, "reqcount: aggregate envoy: worker "); ok {
			ids[id] = l.Worker
		}
	}
	if len(ids) != h.Workers() {
		t.Fatalf("found %d worker ids in the logs, want %d", len(ids), h.Workers())
	}
	return ids
}

// leaseHolder returns the index of the worker holding the lease.
func leaseHolder(t *testing.T, h *wasmhost.Host, ids map[string]int) int {
	t.Helper()
	v, _, ok := h.SharedData(merge.KeyLease)
	if !ok {
		t.Fatal("no lease in shared data")
	}
	l, err := merge.ParseLease(v)
	if err != nil {
		t.Fatal(err)
	}
	i, ok := ids[l.Holder]
	if !ok {
		t.Fatalf("lease held by unknown worker %q", l.Holder)
	}
	return i
}

// planTotals returns what plans send per key.
func planTotals(plans [][]chunk, targets []target) map[collector.Key]int {
	byAuthority := map[string]collector.Key{}
	for _, tg := range targets {
		for _, a := range tg.authorities() {
			byAuthority[a] = tg.key()
		}
	}
	out := map[collector.Key]int{}
	for _, plan := range plans {
		for _, c := range plan {
			out[byAuthority[c.authority]] += c.n
		}
	}
	return out
}

// expectNotBeyond fails if any key's total went past want: counted twice.
func expectNotBeyond(t *testing.T, coll *collector.Collector, want map[collector.Key]int) {
	t.Helper()
	for k, n := range coll.Totals() {
		if n > want[k] {
			t.Fatalf("%v: collector has %d, only %d were sent", k, n, want[k])
		}
	}
}

// TestAggregateHolderStalls: the lease holder sends a report and stalls (its
// VM gets no tick) longer than the lease; another worker takes the lease; the
// report's answer (delivered) then reaches the old holder, which ticks again
// without the lease. Its delivery must reach the acks before its reservation
// runs out, or the new holder sends the same counts again. Simulated time
// (the guests' wall clock and manual ticks), two workers, one key.
func TestAggregateHolderStalls(t *testing.T) {
	var clock atomic.Int64
	clock.Store(1_700_000_000_000)
	var (
		mu       sync.Mutex
		got      int
		holding  = -1 // the worker whose answers are held
		held     []func(wasmhost.Response)
		wantSent = 0
	)
	h := startHost(t, wasmhost.Config{
		Workers:      2,
		PluginConfig: []byte(`{"cluster":"collector","aggregate":"envoy","flush_interval":"1s","wake_after":"0s","timeout":"1s"}`),
		Clusters:     map[string]string{"collector": ""},
		ManualTicks:  true,
		Walltime:     func() time.Time { return time.UnixMilli(clock.Load()) },
		Dispatch: func(c wasmhost.Callout, reply func(wasmhost.Response)) {
			ms, err := messages.Decode(c.Body)
			if err != nil {
				reply(wasmhost.Response{Status: 400})
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, m := range ms {
				got += m.Count // the collector accepts it: counted
			}
			if c.Worker == holding {
				held = append(held, reply)
				return
			}
			reply(wasmhost.Response{Status: 200})
		},
	})
	ctx := boundedCtx(t)
	ids := workerIDs(t, h)
	period := h.Worker(0).TickPeriod()
	tick := func(workers ...int) {
		clock.Add(period.Milliseconds())
		for _, i := range workers {
			if err := h.Worker(i).Tick(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for _, i := range workers {
			syncWorker(h.Worker(i))
		}
	}
	requests := func() {
		for i := range 2 {
			if err := h.Worker(i).Requests(ctx, 5, request("web.shop")); err != nil {
				t.Fatal(err)
			}
		}
		wantSent += 10
	}
	interval := int(time.Second / period)

	requests()
	for range 2 * interval {
		tick(0, 1)
	}
	holder := leaseHolder(t, h, ids)
	other := 1 - holder
	mu.Lock()
	if got != wantSent {
		t.Fatalf("collector got %d, want %d before the stall", got, wantSent)
	}
	holding = holder
	mu.Unlock()

	// The holder reports and its answers wait; then it stalls past the lease.
	requests()
	for range 2 * interval {
		tick(0, 1)
	}
	mu.Lock()
	if len(held) == 0 {
		t.Fatal("the holder sent nothing to hold")
	}
	mu.Unlock()
	for range 3 * interval / 2 {
		tick(other)
	}
	if now := leaseHolder(t, h, ids); now != other {
		t.Fatalf("worker %d holds the lease after worker %d stalled, want %d", now, holder, other)
	}
	mu.Lock()
	for _, reply := range held {
		reply(wasmhost.Response{Status: 200})
	}
	held, holding = nil, -1
	mu.Unlock()
	syncWorker(h.Worker(holder))

	// Both tick on, long past the old holder's reservations.
	for range 10 * interval {
		tick(0, 1)
	}
	mu.Lock()
	defer mu.Unlock()
	if got != wantSent {
		t.Errorf("collector got %d counts, want %d: a stalled holder's delivered report was sent again", got, wantSent)
	}
}
