package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// Issue 15's measurements of the hold (config hold): how soon a held
// request goes on once its service can serve, what a held request costs the
// guest, and a burst of held requests let go at once.
const (
	holdProbeInterval = 100 * time.Millisecond
	holdLatencyRuns   = 60
	holdBurst         = 1000
	holdMemRequests   = 10000 // held at once for the memory figure (a page is 64 KiB)
	// targetHoldBytes bounds the guest's linear memory per held request.
	targetHoldBytes = 256
)

type holdBench struct {
	// latency: from the service's cluster having a healthy host to the held
	// request resumed, per run (real time, the plugin's real timer).
	latency []time.Duration
	// bytesPerHeld is the linear memory growth per held request with
	// holdMemRequests held (above the VM with none), and heapPerHeld the
	// Go heap's (reqcount.vm.heap_bytes) growth per held request.
	bytesPerHeld, heapPerHeld float64
	// startWith and startWithout are the VM's linear memory at start with
	// hold (room for holdMemRequests made up front) and without it.
	startWith, startWithout uint32
	// burst: holdBurst held at once on one worker, then all let go.
	burstHeld, burstResumed int
	burstTook               time.Duration
	problem                 string
}

const holdBenchCluster = "outbound|80||cold.bench.svc.cluster.local"

func holdHost(ctx context.Context, mod *wasmhost.Module, manual bool, max int) (*wasmhost.Host, error) {
	conf := fmt.Sprintf(`{"cluster":"operator","flush_interval":"1s","aggregate":"worker","wake_after":"30s",`+
		`"hold":["*.bench"],"hold_probe_interval":%q,"hold_timeout":"60s","hold_max":%d}`, holdProbeInterval, max)
	return wasmhost.New(ctx, mod, wasmhost.Config{
		PluginConfig:      []byte(conf),
		Clusters:          map[string]string{cluster: "", holdBenchCluster: ""},
		UnhealthyClusters: []string{holdBenchCluster},
		ManualTicks:       manual,
		Dispatch: func(_ wasmhost.Callout, reply func(wasmhost.Response)) {
			reply(wasmhost.Response{Status: 200})
		},
	})
}

func holdRequest(key string) wasmhost.Request {
	return wasmhost.Request{Headers: [][2]string{{":authority", key}, {":path", "/"}, {":method", "GET"}}, Cluster: holdBenchCluster}
}

func runHold(ctx context.Context, o options, mod *wasmhost.Module) (*holdBench, error) {
	b := &holdBench{}
	runs := holdLatencyRuns
	if o.quick {
		runs = 5
	}
	if err := b.measureLatency(ctx, mod, runs); err != nil {
		return nil, err
	}
	if err := b.measureMemory(ctx, mod); err != nil {
		return nil, err
	}
	if err := b.measureBurst(ctx, mod); err != nil {
		return nil, err
	}
	return b, nil
}

// measureLatency: a cold key held on the plugin's real timer; the cluster
// gets a healthy host at a random point of the check cycle; the time to the
// request resumed. A new key (and a new host) per run, so each starts cold.
func (b *holdBench) measureLatency(ctx context.Context, mod *wasmhost.Module, runs int) error {
	for i := range runs {
		h, err := holdHost(ctx, mod, false, 10)
		if err != nil {
			return err
		}
		st, err := h.Worker(0).Open(ctx, holdRequest(fmt.Sprintf("svc-%d.bench", i)))
		if err != nil {
			h.Close(ctx)
			return err
		}
		if !st.Paused() {
			h.Close(ctx)
			b.problem = "a cold request was not held"
			return nil
		}
		// Up at a point of the cycle that varies run by run.
		time.Sleep(holdProbeInterval + time.Duration(i%10)*holdProbeInterval/10)
		up := time.Now()
		h.SetClusterHealthy(holdBenchCluster, true)
		wait, cancel := context.WithTimeout(ctx, 10*time.Second)
		<-st.Done()
		cancel()
		_ = wait
		b.latency = append(b.latency, time.Since(up))
		h.Close(ctx)
	}
	return nil
}

// measureMemory: holdMemRequests held at once on one worker, the guest's
// linear memory and Go heap against the same VM before.
func (b *holdBench) measureMemory(ctx context.Context, mod *wasmhost.Module) error {
	plain, err := wasmhost.New(ctx, mod, wasmhost.Config{PluginConfig: []byte(`{"cluster":"operator","flush_interval":"1s","aggregate":"worker"}`),
		Clusters: map[string]string{cluster: ""}, ManualTicks: true})
	if err != nil {
		return err
	}
	b.startWithout = plain.Worker(0).MemorySize()
	plain.Close(ctx)
	h, err := holdHost(ctx, mod, true, holdMemRequests)
	if err != nil {
		return err
	}
	defer h.Close(ctx)
	w := h.Worker(0)
	b.startWith = w.MemorySize()
	// Warm: the key and its cluster known, one request held and let go.
	if _, err := w.Open(ctx, holdRequest("web.bench")); err != nil {
		return err
	}
	if err := w.Tick(ctx); err != nil {
		return err
	}
	mem0, heap0 := w.MemorySize(), h.Gauge("reqcount.vm.heap_bytes")
	for range holdMemRequests - 1 {
		if _, err := w.Open(ctx, holdRequest("web.bench")); err != nil {
			return err
		}
	}
	if err := w.Tick(ctx); err != nil { // the gauges are set at ticks
		return err
	}
	mem1, heap1 := w.MemorySize(), h.Gauge("reqcount.vm.heap_bytes")
	if got := h.Gauge("reqcount.hold.held_now"); got != holdMemRequests {
		b.problem = fmt.Sprintf("%d held, want %d", got, holdMemRequests)
	}
	b.bytesPerHeld = float64(int64(mem1)-int64(mem0)) / float64(holdMemRequests-1)
	b.heapPerHeld = float64(heap1-heap0) / float64(holdMemRequests-1)
	return nil
}

// measureBurst: holdBurst requests held at once on one worker, then the
// service up: every one resumed.
func (b *holdBench) measureBurst(ctx context.Context, mod *wasmhost.Module) error {
	h, err := holdHost(ctx, mod, true, holdBurst)
	if err != nil {
		return err
	}
	defer h.Close(ctx)
	w := h.Worker(0)
	streams := make([]*wasmhost.Stream, 0, holdBurst)
	for range holdBurst {
		st, err := w.Open(ctx, holdRequest("web.bench"))
		if err != nil {
			return err
		}
		if st.Paused() {
			b.burstHeld++
		}
		streams = append(streams, st)
	}
	h.SetClusterHealthy(holdBenchCluster, true)
	began := time.Now()
	for i := 0; i < 10 && b.burstResumed < b.burstHeld; i++ {
		if err := w.Tick(ctx); err != nil {
			return err
		}
		b.burstResumed = 0
		for _, st := range streams {
			select {
			case <-st.Done():
				b.burstResumed++
			default:
			}
		}
	}
	b.burstTook = time.Since(began)
	for _, st := range streams {
		if res, err := st.Wait(ctx); err != nil || res.Status != 200 {
			if err == nil {
				err = errors.New(fmt.Sprint("status ", res.Status))
			}
			b.problem = fmt.Sprintf("a burst request ended with %v", err)
			break
		}
	}
	return nil
}

func (b *holdBench) percentile(p float64) time.Duration {
	if len(b.latency) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), b.latency...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(int(p*float64(len(s))), len(s)-1)]
}

func (b *holdBench) tableRows(row func(...string)) {
	if b == nil {
		return
	}
	row("hold: routable → resumed", fmt.Sprintf("hold_probe_interval %v, %d runs", holdProbeInterval, len(b.latency)),
		fmt.Sprintf("p50 %s, p99 %s", ms(b.percentile(0.5)), ms(b.percentile(0.99))),
		"a cold key's request held on the plugin's real timer; the cluster gets a healthy host at a varying point of the check cycle; time until the request went on")
	row("hold: linear memory per held request", fmt.Sprintf("%s held on one worker", count(holdMemRequests)),
		fmt.Sprintf("%.0f B", b.bytesPerHeld), fmt.Sprintf("Go heap %.0f B per held request (reqcount.vm.heap_bytes); room for hold_max (%s, up to 16k) is made at start: VM start %s with it, %s without hold; Envoy's own buffers for the request are not the guest's",
			b.heapPerHeld, count(holdMemRequests), mib(uint64(b.startWith)), mib(uint64(b.startWithout))))
	row("hold: a burst", fmt.Sprintf("%s held at once on one worker", count(holdBurst)),
		fmt.Sprintf("%d held, %d resumed", b.burstHeld, b.burstResumed), fmt.Sprintf("all let go by the first ready check: %s of wall time", ms(b.burstTook)))
}

func (b *holdBench) targets(target func(bool, string, ...any)) {
	if b == nil {
		return
	}
	bound := holdProbeInterval + 20*time.Millisecond // one interval and a round trip on loopback
	target(b.problem == "" && b.percentile(0.99) <= bound, "hold: a held request goes on at most one hold_probe_interval and a round trip after its service is routable: p99 %s ≤ %s%s",
		ms(b.percentile(0.99)), ms(bound), problemSuffix(b.problem))
	target(b.problem == "" && b.bytesPerHeld <= targetHoldBytes, "hold: linear memory per held request ≤ %d B: %.0f B%s", targetHoldBytes, b.bytesPerHeld, problemSuffix(b.problem))
	target(b.problem == "" && b.burstHeld == holdBurst && b.burstResumed == holdBurst, "hold: %s held at once on one worker, all resumed: %d held, %d resumed%s",
		count(holdBurst), b.burstHeld, b.burstResumed, problemSuffix(b.problem))
}
