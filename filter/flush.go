package main

import (
	"strconv"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/callhook"
	"github.com/reqcount/reqcount/filter/flush"
	"github.com/reqcount/reqcount/filter/table"
)

// OnTick is the flush path: push the metrics, then send the counts (with
// aggregate: envoy, first move them into shared data, and send the Envoy's as the
// lease holder).
func (p *pluginContext) OnTick() {
	if !p.started {
		return
	}
	if p.hold != nil {
		// With hold the timer runs faster than the flush (holdSubticks):
		// the hold's part on every tick, the flush on every subticks-th.
		p.holdTick()
		if p.hold.sub++; p.hold.sub < p.hold.subticks {
			return
		}
		p.hold.sub = 0
	}
	if p.draining {
		if p.finished {
			return
		}
		if p.agg != nil {
			p.agg.drainTick()
		}
		p.flusher.Tick()
		p.now = p.flusher.Now() + 1
		if p.agg == nil && p.flusher.Now() < p.drainBy {
			// What a failed call put back goes out again until the deadline.
			p.flusher.SendAll()
		}
		p.finishIfDone()
		return
	}
	p.logFailedCalls()
	before := p.logged // the stats logFailedCalls just read
	if p.agg != nil {
		p.agg.tick()
	}
	p.flusher.Tick()
	p.now = p.flusher.Now() + 1
	after := p.flushStats()
	if n := after.DispatchErrors - before.DispatchErrors; n > 0 {
		proxywasm.LogWarnf("reqcount: could not start a call to cluster %q: %v (counts kept for the next tick)",
			p.cfg.Cluster, after.LastDispatchError)
	}
	if n := after.CallsAbandoned - before.CallsAbandoned; n > 0 {
		proxywasm.LogWarnf("reqcount: %d calls to cluster %q had no answer after %d ticks; their counts go out again",
			n, p.cfg.Cluster, abandonAfter(p.cfg))
	}
	if p.agg != nil && p.agg.lastErr != nil {
		proxywasm.LogWarnf("reqcount: shared data: %v (retried on the next tick)", p.agg.lastErr)
		p.agg.lastErr = nil
	}
	p.pushMetrics()
}

// flushStats returns the flush totals of this worker: its own flusher's, plus,
// with aggregate: envoy, those of the reports it sent as the lease holder.
func (p *pluginContext) flushStats() flush.Stats {
	s := p.flusher.Stats()
	if p.agg == nil {
		return s
	}
	s.AddCalls(p.agg.mflush.Stats())
	return s
}

// wake sends a key's counts at once, from the request callback that found the
// key silent for longer than wake_after. The call is made as the root context's:
// Envoy binds every proxy_http_call to the root context and answers it there,
// often after the stream is gone, and the SDK drops an answer registered under a
// stream that no longer exists (see filter/_sdkabi: SetEffectiveContext moves the
// SDK's active context too). It is the last host call of the request callback.
// If the call cannot be made, the counts go out with the key's next report.
func (p *pluginContext) wake(ref table.Ref) {
	if p.draining {
		return
	}
	if p.agg != nil && !p.agg.claimWake(p.table.Get(ref).Key) {
		return // another worker of this Envoy woke the key: the counts go with the reports
	}
	if err := proxywasm.SetEffectiveContext(p.rootID); err != nil {
		p.tallies.wakeFailures++
		return
	}
	before := p.flusher.Stats().DispatchErrors
	p.flusher.Wake(ref.Slot())
	if p.flusher.Stats().DispatchErrors != before {
		p.tallies.wakeFailures++
	}
}

// dispatch sends one flush body; the answer comes to onResponse.
func (p *pluginContext) dispatch(body []byte, id uint64) error {
	return p.callCluster(&p.calls, body, id)
}

// callCluster sends body to the collector cluster as call id; its answer goes to
// c.settle.
func (p *pluginContext) callCluster(c *calls, body []byte, id uint64) error {
	ans := c.get(id)
	err := httpCall(p.cfg.Cluster, &p.callHdrs, body, uint32(p.cfg.Timeout.Milliseconds()), ans.fn)
	if err != nil {
		c.put(ans) // never called
	}
	return err
}

// callHeaders are the request headers of the filter's calls: as pairs for the
// SDK's DispatchHttpCall, and in the ABI's pairs encoding for the build's
// callhook.Dispatch, serialised when the headers change rather than on every
// call.
type callHeaders struct {
	pairs [][2]string
	wire  []byte
}

// set makes hs the headers (callHeaders keeps hs, and reuses its encoding's
// storage).
func (h *callHeaders) set(hs [][2]string) {
	h.pairs = hs
	h.wire = callhook.AppendPairs(h.wire[:0], hs)
}

// httpCall dispatches one call to cluster, answered to cb. The filter's build
// of the SDK (filter/_sdkabi) makes it with the headers serialised once
// (callhook.Dispatch); elsewhere (the SDK's native test host) it is the SDK's
// DispatchHttpCall with the same headers, body, no trailers and timeout.
func httpCall(cluster string, h *callHeaders, body []byte, timeoutMs uint32, cb func(numHeaders, bodySize, numTrailers int)) error {
	if callhook.Dispatch != nil {
		_, err := callhook.Dispatch(cluster, h.wire, body, timeoutMs, cb)
		return err
	}
	_, err := proxywasm.DispatchHttpCall(cluster, h.pairs, body, nil, timeoutMs, cb)
	return err
}

// calls pools the answer callbacks of one flusher's calls: the SDK keeps a
// callback until its answer, and a closure per call would be garbage on every
// call.
type calls struct {
	free []*answer
	// settle takes call id's answer (its response header count).
	settle func(id uint64, numHeaders int)
}

// answer is the callback of one call's answer, made once and reused.
type answer struct {
	pool *calls
	id   uint64
	fn   func(numHeaders, bodySize, numTrailers int) // done, bound once
}

// maxAnswers bounds the callbacks a pool keeps for reuse.
const maxAnswers = 1024

// get returns a callback for call id.
func (c *calls) get(id uint64) *answer {
	var ans *answer
	if n := len(c.free); n > 0 {
		ans, c.free = c.free[n-1], c.free[:n-1]
	} else {
		ans = &answer{pool: c}
		ans.fn = ans.done
	}
	ans.id = id
	return ans
}

// put takes back a callback that will not be called (again).
func (c *calls) put(ans *answer) {
	if len(c.free) < maxAnswers {
		c.free = append(c.free, ans)
	}
}

// done hands the answer to the pool's settle, the callback going back first.
func (ans *answer) done(numHeaders, _, _ int) {
	c, id := ans.pool, ans.id
	c.put(ans)
	c.settle(id, numHeaders)
}

// onResponse settles a call: only a 2xx :status means delivered. Envoy reports a
// reset or failed call with zero headers, and a timeout or connect failure as a
// 504 or 503 of its own.
func (p *pluginContext) onResponse(id uint64, numHeaders int) {
	outcome, status := responseOutcome(numHeaders)
	p.flusher.Done(id, outcome, status)
	p.finishIfDone()
}

// responseOutcome reads the answer of the call being answered.
func responseOutcome(numHeaders int) (flush.Outcome, int) {
	if numHeaders == 0 {
		return flush.Reset, 0
	}
	status, err := callStatus()
	if err != nil {
		return flush.Rejected, 0
	}
	if status >= 200 && status < 300 {
		return flush.Delivered, status
	}
	return flush.Rejected, status
}

// finishIfDone ends a shutdown that OnPluginDone deferred, once nothing is left
// to wait for.
func (p *pluginContext) finishIfDone() {
	if !p.draining || p.finished || !p.canFinish() {
		return
	}
	p.finished = true
	p.reportShutdown()
	proxywasm.PluginDone()
}

// canFinish reports whether a draining worker has nothing left to wait for:
// no call in flight, and nothing left to send (with aggregate: envoy, its
// outbox delivered) or its deadline passed.
func (p *pluginContext) canFinish() bool {
	if p.flusher.InFlight() > 0 {
		return false
	}
	if p.flusher.Pending() > 0 && p.flusher.Now() < p.drainBy {
		// Counts still in the worker's table (with aggregate: envoy, a
		// wake-up's that failed meanwhile): sent, or published, at the next
		// drain tick.
		return false
	}
	return p.agg == nil || p.agg.done()
}

// logFailedCalls logs, once per tick, the calls that failed since the last one:
// a collector outage with thousands of keys is one warning per flush interval,
// not one per call.
func (p *pluginContext) logFailedCalls() {
	s := p.flushStats()
	rejected, reset := s.CallsRejected-p.logged.CallsRejected, s.CallsReset-p.logged.CallsReset
	if rejected > 0 {
		proxywasm.LogWarnf("reqcount: cluster %q refused %d calls (last :status %d); their counts go out again",
			p.cfg.Cluster, rejected, s.LastStatus)
	}
	if reset > 0 {
		proxywasm.LogWarnf("reqcount: %d calls to cluster %q were reset; their counts go out again", reset, p.cfg.Cluster)
	}
	p.logged = s
}

// callStatus returns the :status of the call being answered, 0 if it has none
// that parses; an error if the host could not give the response's headers.
// The filter's build of the SDK reads the one header (callhook.ResponseHeader:
// no header list per answer); elsewhere it is read from the SDK's
// GetHttpCallResponseHeaders. Both give the first :status (Envoy's
// getHeaderMapValue answers the first value of a key), and a missing one is 0.
func callStatus() (int, error) {
	if callhook.ResponseHeader != nil {
		v, err := callhook.ResponseHeader(":status")
		switch {
		case err == types.ErrorStatusNotFound:
			return 0, nil
		case err != nil:
			return 0, err
		}
		return statusValue(v), nil
	}
	hs, err := proxywasm.GetHttpCallResponseHeaders()
	if err != nil {
		return 0, err
	}
	return statusOf(hs), nil
}

// statusOf returns the :status of a response, or 0 if it has none that parses.
func statusOf(headers [][2]string) int {
	for _, h := range headers {
		if h[0] == ":status" {
			return statusValue(h[1])
		}
	}
	return 0
}

// statusValue is a :status value as a number, or 0 if it does not parse.
func statusValue(v string) int {
	if n, err := strconv.Atoi(v); err == nil {
		return n
	}
	return 0
}

// OnPluginDone is called when Envoy removes the plugin (reconfiguration, drain).
// It sends the counts and, while calls are in flight or failed ones are to be
// sent again, asks Envoy to wait (returns false): answers and ticks still
// arrive, failed reports go out again at the ticks until drainTicks, and the
// end tells Envoy to go on (proxy_done).
func (p *pluginContext) OnPluginDone() bool {
	if !p.started || p.draining {
		return true
	}
	p.draining = true
	p.releaseHeld() // held requests go first: Envoy routes them as it would have
	p.drainBy = p.flusher.Now() + drainTicks(p.cfg)
	p.flusher.MeterAll()
	p.pushMetrics()
	p.flusher.Drain()
	if p.agg != nil {
		p.agg.drain()
	}
	if !p.canFinish() {
		return false
	}
	p.finished = true
	p.reportShutdown()
	return true
}

// reportShutdown pushes the metrics a last time and logs what could not be delivered.
func (p *pluginContext) reportShutdown() {
	p.logFailedCalls()
	p.pushMetrics()
	lost := p.flusher.Pending()
	if p.agg != nil {
		lost += p.agg.undelivered()
	}
	if lost > 0 {
		proxywasm.LogWarnf("reqcount: shutting down with %d counted requests not delivered to cluster %q", lost, p.cfg.Cluster)
	}
}
