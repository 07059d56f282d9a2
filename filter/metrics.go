package main

import (
	"fmt"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/reqcount/reqcount/filter/flush"
	"github.com/reqcount/reqcount/filter/key"
)

// Metric names. Envoy files wasm-defined metrics under its "wasmcustom" stat
// namespace and strips it in /stats/prometheus, with no "envoy_" prefix:
// reqcount.keys is exposed as reqcount_keys (dots become underscores). Every
// worker defines the same names, so each is a process total.
const (
	metricUncounted = "reqcount.requests_uncounted." // + key.Reason, e.g. ip_literal
	metricKeys      = "reqcount.keys"
)

// counterSpecs are the filter's counters: each name and the running total it
// reports, read from the hot path's tallies or the flusher's stats.
var counterSpecs = []struct {
	name  string
	total func(t *tallies, s *flush.Stats) uint64
}{
	{"reqcount.requests_counted", func(t *tallies, _ *flush.Stats) uint64 { return t.counted }},
	{"reqcount.requests_overflow", func(t *tallies, _ *flush.Stats) uint64 { return t.overflow }},
	{"reqcount.requests_uncounted.excluded", func(t *tallies, _ *flush.Stats) uint64 { return t.excluded }},
	{"reqcount.requests_ignored", func(t *tallies, _ *flush.Stats) uint64 { return t.ignored }},
	{"reqcount.series_overflow", func(t *tallies, _ *flush.Stats) uint64 { return t.seriesOverflow }},
	{"reqcount.series_failed", func(t *tallies, _ *flush.Stats) uint64 { return t.seriesFailed }},
	{"reqcount.flush.wakeups_sent", func(_ *tallies, s *flush.Stats) uint64 { return s.Wakeups }},
	{"reqcount.aggregate.shared_data_errors", func(t *tallies, _ *flush.Stats) uint64 { return t.sharedErrors }},
	// Requests this worker, as lease holder, took over from a holder whose
	// reservation ran out (its VM died with reports in flight): an upper
	// bound of what is delivered twice, the one at-least-once case.
	{"reqcount.aggregate.counts_taken_over", func(t *tallies, _ *flush.Stats) uint64 { return t.takenOver }},
	{"reqcount.flush.wakeups_failed", func(t *tallies, _ *flush.Stats) uint64 { return t.wakeFailures }},
	{"reqcount.flush.calls_sent", func(_ *tallies, s *flush.Stats) uint64 { return s.CallsSent }},
	{"reqcount.flush.calls_delivered", func(_ *tallies, s *flush.Stats) uint64 { return s.CallsDelivered }},
	{"reqcount.flush.calls_rejected", func(_ *tallies, s *flush.Stats) uint64 { return s.CallsRejected }},
	{"reqcount.flush.calls_reset", func(_ *tallies, s *flush.Stats) uint64 { return s.CallsReset }},
	{"reqcount.flush.calls_abandoned", func(_ *tallies, s *flush.Stats) uint64 { return s.CallsAbandoned }},
	{"reqcount.flush.dispatch_errors", func(_ *tallies, s *flush.Stats) uint64 { return s.DispatchErrors }},
	{"reqcount.flush.counts_sent", func(_ *tallies, s *flush.Stats) uint64 { return s.CountsSent }},
	{"reqcount.flush.counts_delivered", func(_ *tallies, s *flush.Stats) uint64 { return s.CountsDelivered }},
	// Requeued: put back for a later call after a failed one, by a worker's
	// flusher, or by the lease holder's (handed back to shared data, sent at
	// the key's next collect).
	{"reqcount.flush.counts_requeued", func(_ *tallies, s *flush.Stats) uint64 { return s.CountsRequeued + s.CountsReturned }},
	{"reqcount.keys_evicted", func(_ *tallies, s *flush.Stats) uint64 { return s.KeysEvicted }},
}

// counter is an Envoy counter and the part of a running total already pushed to it.
type counter struct {
	id     proxywasm.MetricCounter
	pushed uint64
}

// push adds what total gained since the last push.
func (c *counter) push(total uint64) {
	if total > c.pushed {
		c.id.Increment(total - c.pushed)
		c.pushed = total
	}
}

// metrics are the filter's Envoy metrics, updated once per tick.
type metrics struct {
	counters   []counter // one per counterSpecs entry
	uncounted  [key.NumReasons]counter
	keys       proxywasm.MetricGauge
	keysPushed int64
	vm         vmStats  // reqcount.vm.*: see vmstats.go
	bytes      memBytes // reqcount.vm.bytes.*: see membytes.go
	// stats holds the flusher's stats during a push: a field, not a local,
	// because counterSpecs' functions take its address, which would move a
	// local to the heap on every tick.
	stats flush.Stats
}

// define registers every metric with Envoy. The SDK panics when the host refuses a
// metric; that becomes an error here, so a refusal fails the start instead of
// crashing the VM. slices is the ticks of a flush interval: the
// reqcount.vm.bytes.* gauges are measured once per interval.
func (m *metrics) define(slices int) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	m.counters = make([]counter, len(counterSpecs))
	for i, c := range counterSpecs {
		m.counters[i].id = proxywasm.DefineCounterMetric(c.name)
	}
	for r := key.Reason(1); r < key.NumReasons; r++ {
		m.uncounted[r].id = proxywasm.DefineCounterMetric(metricUncounted + r.String())
	}
	m.keys = proxywasm.DefineGaugeMetric(metricKeys)
	m.bytes.define(slices) // measured once per flush interval
	return m.vm.define()
}

// pushMetrics brings Envoy's counters up to date with the worker's totals. A host
// error is logged, never a crash.
func (p *pluginContext) pushMetrics() {
	defer func() {
		if r := recover(); r != nil {
			proxywasm.LogWarnf("reqcount: cannot update metrics: %v", r)
		}
	}()
	m := &p.metrics
	m.stats = p.flushStats()
	for i, c := range counterSpecs {
		m.counters[i].push(c.total(&p.tallies, &m.stats))
	}
	for r := key.Reason(1); r < key.NumReasons; r++ {
		m.uncounted[r].push(p.tallies.uncounted[r])
	}
	if n := int64(p.table.Len()); n != m.keysPushed {
		m.keys.Add(n - m.keysPushed)
		m.keysPushed = n
	}
	m.vm.push(p.draining) // the last push, at shutdown, takes the VM's share back out
	m.bytes.push(p, p.draining)
}
