package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reqcount/reqcount/e2e/collector"
	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/messages"
)

// The sizing model (issues 7 and 8): what a mesh sends the operator. One
// sidecar (modelWorkers workers running the compiled filter, sharing shared
// data as Envoy's workers do) is driven through the model's traffic in
// simulated time (manual ticks, each standing for one tick period: ticks are
// counted, not waited for), its messages counted at the e2e collector, and
// the per-sidecar rate scaled to the mesh.
const (
	modelSidecars    = 1000
	modelWorkers     = 2  // per sidecar
	modelKeys        = 20 // active destinations per worker
	modelScaleToZero = 5  // of which scale-to-zero services: the include list
	// modelRPS is each destination's steady traffic on one worker: several
	// requests per tick period, so every report finds a count.
	modelRPS = 5
	// modelIntervals flush intervals are counted, after one of warm-up
	// (where each key's first request may wake it up).
	modelIntervals = 4
	// A sporadic key: about one request every modelSporadicEvery,
	// modelSporadicN times (see sporadicTimes).
	modelSporadicEvery = 45 * time.Second
	modelSporadicN     = 8
)

// modelOldConfig is the configuration that behaves as the filter did before
// issue 7: reports every second, no wake-up. (The defaults then; not a
// default now, so it is spelled out.)
const modelOldConfig = `{"cluster":"operator","flush_interval":"1s","wake_after":"0s","aggregate":"worker"}`

// modelCase is one row of the model.
type modelCase struct {
	name     string
	config   string // plugin configuration
	include  bool   // only the scale-to-zero services are counted
	sporadic bool   // one key, one request per modelSporadicEvery
}

var modelCases = []modelCase{
	{name: "old defaults (flush_interval 1s, no wake-up)", config: modelOldConfig},
	{name: "old defaults, include the 5 scale-to-zero services", config: modelOldConfig, include: true},
	{name: "new defaults", config: `{"cluster":"operator"}`},
	{name: "new defaults, include the 5 scale-to-zero services", config: `{"cluster":"operator"}`, include: true},
	{name: "new defaults but aggregate: worker", config: `{"cluster":"operator","aggregate":"worker"}`},
	{name: "sporadic key, old defaults", config: modelOldConfig, sporadic: true},
	{name: "sporadic key, new defaults", config: `{"cluster":"operator"}`, sporadic: true},
	{name: "sporadic key, new flush_interval, wake-ups off", config: `{"cluster":"operator","wake_after":"0s"}`, sporadic: true},
}

// modelRow is what one case measured.
type modelRow struct {
	modelCase
	flushInterval, wakeAfter, tickPeriod time.Duration
	voices                               int           // reporters per sidecar: its workers, or 1 with aggregate: envoy
	keys                                 int           // keys counted (reported to the operator)
	span                                 time.Duration // simulated time counted
	messages                             int           // accepted by the collector in the span
	wakeups                              int           // of which were sent from a request callback
	startWakeups                         int           // wake-ups in the warm-up interval (first sight of each key)
	// Sporadic: per request, the simulated time from the request to the
	// delivery of its count (0 for a wake-up).
	delays   []time.Duration
	requests int
	counted  int // sporadic: the counts the messages carried (each request's once)
}

// perSidecar is the measured rate of messages at the operator from one
// sidecar: over the counted span for steady traffic; for the sporadic key,
// messages per request at its one request per modelSporadicEvery.
func (r *modelRow) perSidecar() float64 {
	switch {
	case r.sporadic && r.requests > 0:
		return float64(r.messages) / float64(r.requests) / modelSporadicEvery.Seconds()
	case r.span <= 0:
		return 0
	}
	return float64(r.messages) / r.span.Seconds()
}

// detail is the row's explanation: the formula, what was measured, and the
// configuration's intervals.
func (r *modelRow) detail() string {
	wake := "off"
	if r.wakeAfter > 0 {
		wake = r.wakeAfter.String()
	}
	cfg := fmt.Sprintf("flush_interval %v, wake_after %s, tick %v", r.flushInterval, wake, r.tickPeriod)
	if r.sporadic {
		return fmt.Sprintf("%s; one worker, %d requests about %v apart: %d messages carrying %d counts, %d of them wake-ups; request → delivery, simulated: median %v, max %v; %s; the value is the mesh figure if every worker saw such a key",
			r.formula(), r.requests, modelSporadicEvery, r.messages, r.counted, r.wakeups,
			time.Duration(medianDuration(r.delays)), maxDuration(r.delays), cfg)
	}
	return fmt.Sprintf("%s; measured on one sidecar of %d workers: %.2f/s, %d messages (%d wake-ups) over %v simulated (%d ticks, after one flush_interval of warm-up holding %d first-sight wake-ups); %s",
		r.formula(), modelWorkers, r.perSidecar(), r.messages, r.wakeups, r.span, int(r.span/max(r.tickPeriod, 1)), r.startWakeups, cfg)
}

// meshRate scales one sidecar's message rate to the model's mesh.
func meshRate(perSidecar float64) float64 { return modelSidecars * perSidecar }

// expectedPerSidecar is the rule issues 7 and 8 set for steady traffic: each
// key with counts is reported once per flush interval by each voice (every
// worker, or the sidecar's one lease holder with aggregate: envoy), so
// voices × keys/interval messages a second per sidecar (wake-ups only at a
// key's first sight or after wake_after of silence, none in steady traffic).
func expectedPerSidecar(voices, keys int, interval time.Duration) float64 {
	return float64(voices*keys) / interval.Seconds()
}

// formula spells out how the mesh figure follows from the rule.
func (r *modelRow) formula() string {
	if r.sporadic {
		most := ""
		if r.wakeAfter == 0 {
			most = "at most " // a count may wait for the next request's report
		}
		return fmt.Sprintf("%s1 message per request (%s); per worker 1 / %v = %.4f/s", most, r.deliveryKind(), modelSporadicEvery, 1/modelSporadicEvery.Seconds())
	}
	voices := fmt.Sprintf("%d workers", modelWorkers)
	if r.voices == 1 {
		voices = "1 voice (aggregate: envoy)"
	}
	return fmt.Sprintf("%s sidecars × %s × %d keys / %v = %s/s",
		groupf(modelSidecars), voices, r.keys, r.flushInterval, groupf(meshRate(expectedPerSidecar(r.voices, r.keys, r.flushInterval))))
}

func (r *modelRow) deliveryKind() string {
	switch {
	case r.wakeups == r.requests:
		return "each a wake-up"
	case r.wakeups == 0:
		return "each at a later tick"
	}
	return fmt.Sprintf("%d of %d as wake-ups", r.wakeups, r.requests)
}

// exact reports whether the measured rate follows the rule: for steady
// traffic, exactly keys/flush_interval per worker; for the sporadic key,
// every request counted once, and with wake-ups on one message per request
// (each a wake-up). With wake-ups off a count waits for its key's report, up
// to two flush intervals with aggregate: envoy (its shard's tick on its
// worker, then on the lease holder), longer than the key's silences: two
// requests' counts may then go in one message, which is right.
func (r *modelRow) exact() bool {
	if r.sporadic {
		if r.counted != r.requests || r.messages > r.requests {
			return false
		}
		return r.wakeAfter == 0 || r.messages == r.requests
	}
	return r.messages == r.voices*r.keys*modelIntervals
}

// requestsInWindow is how many of a key's requests, at perSecond evenly
// spaced requests a second from time 0, fall in tick window k, the
// simulated time [k·p, (k+1)·p).
func requestsInWindow(k int, p time.Duration, perSecond int) int {
	at := func(k int) int64 { return int64(k) * int64(p) * int64(perSecond) / int64(time.Second) }
	return int(at(k+1) - at(k))
}

// sporadicTimes are the sporadic key's request times: modelSporadicEvery
// apart plus an eighth of the flush interval more each time, so that the
// modelSporadicN requests fall at evenly spread points of the report cycle
// (a delay measured at one point only would say little), starting off a tick.
func sporadicTimes(interval time.Duration) []time.Duration {
	const offset = 10*time.Second + 37*time.Millisecond
	times := make([]time.Duration, modelSporadicN)
	for i := range times {
		times[i] = offset + time.Duration(i)*(modelSporadicEvery+interval/modelSporadicN)
	}
	return times
}

// modelService is the i-th destination of the model; the first
// modelScaleToZero are the scale-to-zero ones.
func modelService(i int) string { return fmt.Sprintf("svc-%02d", i) }

func runModel(ctx context.Context, mod *wasmhost.Module) ([]*modelRow, error) {
	var rows []*modelRow
	for _, c := range modelCases {
		r, err := simulate(ctx, mod, c)
		if err != nil {
			return nil, fmt.Errorf("model %q: %w", c.name, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// delivery is one message the collector accepted, at a simulated time.
type delivery struct {
	at     time.Duration
	wakeup bool // sent from a request callback
	svc    string
	count  int
}

func simulate(ctx context.Context, mod *wasmhost.Module, c modelCase) (*modelRow, error) {
	conf := c.config
	if c.include {
		var pats []string
		for i := range modelScaleToZero {
			pats = append(pats, fmt.Sprintf("%q", modelService(i)+".shop"))
		}
		conf = strings.TrimSuffix(conf, "}") + `,"include":[` + strings.Join(pats, ",") + "]}"
	}
	cfg, err := config.Parse([]byte(conf))
	if err != nil {
		return nil, err
	}
	r := &modelRow{modelCase: c, flushInterval: cfg.FlushInterval, wakeAfter: cfg.WakeAfter, keys: modelKeys, voices: modelWorkers}
	if cfg.Aggregate == config.AggregateEnvoy {
		r.voices = 1
	}
	if c.include {
		r.keys = modelScaleToZero
	}
	if c.sporadic {
		r.keys = 1
	}

	col := collector.New(collector.Options{})
	var now atomic.Int64 // simulated ns
	var inRequest atomic.Bool
	var mu sync.Mutex
	var got []delivery
	epoch := time.Now()
	h, err := wasmhost.New(ctx, mod, wasmhost.Config{
		// The guest's wall clock (the lease, wake-up claims in shared data)
		// follows simulated time too.
		Walltime:     func() time.Time { return epoch.Add(time.Duration(now.Load())) },
		Workers:      modelWorkers,
		PluginConfig: []byte(conf),
		Clusters:     map[string]string{cluster: ""},
		ManualTicks:  true,
		LogLevel:     wasmhost.LevelInfo,
		// The collector's handler, called in-process: the operator's contract
		// without a network, so simulated time is all that passes.
		Dispatch: func(call wasmhost.Callout, reply func(wasmhost.Response)) {
			req := httptest.NewRequest(call.Header(":method"), call.Header(":path"), bytes.NewReader(call.Body))
			rec := httptest.NewRecorder()
			col.ServeHTTP(rec, req)
			if rec.Code == 200 {
				ms, _ := messages.Decode(call.Body)
				mu.Lock()
				for _, m := range ms {
					got = append(got, delivery{at: time.Duration(now.Load()), wakeup: inRequest.Load(), svc: m.Svc, count: m.Count})
				}
				mu.Unlock()
			}
			reply(wasmhost.Response{Status: rec.Code, Body: rec.Body.Bytes()})
		},
	})
	if err != nil {
		return nil, err
	}
	defer h.Close(ctx)
	p := h.Worker(0).TickPeriod()
	r.tickPeriod = p
	n := ticksPerInterval(cfg.FlushInterval, p)

	sent := 0
	request := func(at time.Duration, svc string) error {
		hs := append([][2]string(nil), benchRequest.Headers...)
		hs[0][1] = svc + ".shop.svc.cluster.local:8080"
		now.Store(int64(at))
		inRequest.Store(true)
		// The sidecar's workers take the requests in turn, so that each key's
		// requests reach every worker.
		_, err := h.Worker(sent%modelWorkers).Request(ctx, wasmhost.Request{Headers: hs})
		sent++
		inRequest.Store(false)
		return err
	}
	tick := func(k int) error { // the tick that ends window k, on every worker
		now.Store(int64(k+1) * int64(p))
		for i := range modelWorkers {
			if err := h.Worker(i).Tick(ctx); err != nil {
				return err
			}
		}
		for i := range modelWorkers {
			h.Worker(i).MemorySize() // answers delivered
		}
		return nil
	}

	if c.sporadic {
		times := sporadicTimes(cfg.FlushInterval)
		// Two intervals: with aggregate: envoy a count is published at its
		// shard's tick on its worker and collected at that shard's tick of the
		// lease holder, each once per interval.
		end := times[len(times)-1] + 2*cfg.FlushInterval + 2*p
		next := 0
		for k := 0; time.Duration(k)*p < end; k++ {
			for next < len(times) && times[next] < time.Duration(k+1)*p {
				if err := request(times[next], "lone"); err != nil {
					return nil, err
				}
				next++
			}
			if err := tick(k); err != nil {
				return nil, err
			}
		}
		r.requests, r.span = len(times), end
		// Each request's count goes out in the first message at or after it.
		j := 0
		for _, d := range got {
			r.messages++
			r.counted += d.count
			if d.wakeup {
				r.wakeups++
			}
			for j < len(times) && times[j] <= d.at {
				r.delays = append(r.delays, d.at-times[j])
				j++
			}
		}
		return r, crashed(h)
	}

	warm, counted := n, modelIntervals*n
	perKey := make([]int, modelKeys)
	for k := 0; k < warm+counted; k++ {
		for i := range modelKeys {
			m := requestsInWindow(k, p, modelRPS)
			for j := range m {
				at := time.Duration(k)*p + time.Duration(j)*p/time.Duration(m)
				sent = perKey[i] // a key's requests go to the workers in turn: each sees every key
				perKey[i]++
				if err := request(at, modelService(i)); err != nil {
					return nil, err
				}
			}
		}
		if err := tick(k); err != nil {
			return nil, err
		}
	}
	start := time.Duration(warm) * p
	r.span = time.Duration(counted) * p
	for _, d := range got {
		// The warm-up interval holds the requests before start and the ticks
		// up to the one at start, which ends it.
		if d.at < start || (d.at == start && !d.wakeup) {
			if d.wakeup {
				r.startWakeups++
			}
			continue
		}
		r.messages++
		if d.wakeup {
			r.wakeups++
		}
	}
	return r, crashed(h)
}

// crashed returns the first worker crash of h, or nil.
func crashed(h *wasmhost.Host) error {
	for i := range h.Workers() {
		if err := h.Worker(i).Crashed(); err != nil {
			return err
		}
	}
	return nil
}
