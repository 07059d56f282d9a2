package main

import (
	"fmt"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/reqcount/reqcount/filter/key"
)

// Metric names. Envoy keeps wasm-defined metrics under its "wasmcustom" stats
// prefix; Prometheus sees them as envoy_wasmcustom_reqcount_… (dots become
// underscores). Every worker defines the same names, so each is a process total.
const (
	metricCounted        = "reqcount.requests_counted"
	metricUncounted      = "reqcount.requests_uncounted." // + key.Reason, e.g. ip_literal
	metricOverflow       = "reqcount.requests_overflow"
	metricKeys           = "reqcount.keys"
	metricCallsSent      = "reqcount.flush.calls_sent"
	metricCallsDelivered = "reqcount.flush.calls_delivered"
	metricCallsRejected  = "reqcount.flush.calls_rejected"
	metricCallsReset     = "reqcount.flush.calls_reset"
	metricCallsAbandoned = "reqcount.flush.calls_abandoned"
	metricDispatchErrors = "reqcount.flush.dispatch_errors"
	metricCountsSent     = "reqcount.flush.counts_sent"
	metricCountsDeliv    = "reqcount.flush.counts_delivered"
	metricCountsRequeued = "reqcount.flush.counts_requeued"
	metricKeysEvicted    = "reqcount.keys_evicted"
)

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
	counted, overflow                          counter
	uncounted                                  [key.NumReasons]counter
	callsSent, callsDelivered, callsRejected   counter
	callsReset, callsAbandoned, dispatchErrors counter
	countsSent, countsDelivered, countsRequeue counter
	keysEvicted                                counter
	keys                                       proxywasm.MetricGauge
	keysPushed                                 int64
}

// define registers every metric with Envoy. The SDK panics when the host refuses a
// metric; that becomes an error here, so a refusal fails the start instead of
// crashing the VM.
func (m *metrics) define() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	for _, c := range []struct {
		c    *counter
		name string
	}{
		{&m.counted, metricCounted}, {&m.overflow, metricOverflow},
		{&m.callsSent, metricCallsSent}, {&m.callsDelivered, metricCallsDelivered},
		{&m.callsRejected, metricCallsRejected}, {&m.callsReset, metricCallsReset},
		{&m.callsAbandoned, metricCallsAbandoned}, {&m.dispatchErrors, metricDispatchErrors},
		{&m.countsSent, metricCountsSent}, {&m.countsDelivered, metricCountsDeliv},
		{&m.countsRequeue, metricCountsRequeued}, {&m.keysEvicted, metricKeysEvicted},
	} {
		c.c.id = proxywasm.DefineCounterMetric(c.name)
	}
	for r := key.Reason(1); r < key.NumReasons; r++ {
		m.uncounted[r].id = proxywasm.DefineCounterMetric(metricUncounted + r.String())
	}
	m.keys = proxywasm.DefineGaugeMetric(metricKeys)
	return nil
}

// pushMetrics brings Envoy's counters up to date with the worker's totals. A host
// error is logged, never a crash.
func (p *pluginContext) pushMetrics() {
	defer func() {
		if r := recover(); r != nil {
			proxywasm.LogWarnf("reqcount: cannot update metrics: %v", r)
		}
	}()
	m, t, s := &p.metrics, &p.tallies, p.flusher.Stats()
	m.counted.push(t.counted)
	m.overflow.push(t.overflow)
	for r := key.Reason(1); r < key.NumReasons; r++ {
		m.uncounted[r].push(t.uncounted[r])
	}
	m.callsSent.push(s.CallsSent)
	m.callsDelivered.push(s.CallsDelivered)
	m.callsRejected.push(s.CallsRejected)
	m.callsReset.push(s.CallsReset)
	m.callsAbandoned.push(s.CallsAbandoned)
	m.dispatchErrors.push(s.DispatchErrors)
	m.countsSent.push(s.CountsSent)
	m.countsDelivered.push(s.CountsDelivered)
	m.countsRequeue.push(s.CountsRequeued)
	m.keysEvicted.push(s.KeysEvicted)
	if n := int64(p.table.Len()); n != m.keysPushed {
		m.keys.Add(n - m.keysPushed)
		m.keysPushed = n
	}
}
