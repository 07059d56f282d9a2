package main

import (
	"encoding/binary"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/filter/hold"
	"github.com/reqcount/reqcount/filter/key"
	"github.com/reqcount/reqcount/filter/streamhook"
	"github.com/reqcount/reqcount/filter/table"
)

// Holding a cold service's requests (config hold). A key of hold is in one of
// three states on each worker: not held (not a hold key), not known ready, or
// ready. While it is not known ready (its first request after wake_after of
// silence, or a response of it without a healthy host) its requests are held
// (paused at request headers), under the cluster Envoy routes them to, and the
// cluster is checked (HEAD hold_probe_path) at most every hold_probe_interval;
// an answer from the service makes the key ready and lets every request held
// for the cluster go, oldest first. Package hold keeps the rules; this file
// speaks to the host. A key known ready takes the hot path as any other
// (Entry.Slow is false): the hold costs it nothing.
const (
	holdNone     uint8 = iota // not a key of hold
	holdNotReady              // its destination is not known to be ready: hold
	holdReady                 // known ready: pass
)

// Envoy's response flags (StreamInfo::CoreResponseFlag, as the bits of the
// property response.flags): no healthy upstream host, and upstream connection
// failure. A response of a hold key with either makes the key not ready.
const (
	flagNoHealthyUpstream         = 0x2
	flagUpstreamConnectionFailure = 0x20
)

// Property paths the hold reads: the request's routed cluster, and a
// response's flags.
var (
	xdsClusterName = []string{"xds", "cluster_name"}
	responseFlags  = []string{"response", "flags"}
)

// setHold sets e's hold state, and Slow, which follows from it and Excluded.
func setHold(e *table.Entry, state uint8) {
	e.Hold = state
	e.Slow = e.Excluded || state == holdNotReady
}

// holdState is the hold state a new key starts in.
func (p *pluginContext) holdState(k []byte, excluded bool) uint8 {
	if p.hold == nil || excluded {
		return holdNone
	}
	svc, ns := key.Split(string(k))
	if !p.cfg.Holds(svc, ns) {
		return holdNone
	}
	return holdNotReady
}

// holdSubticks is how many ticks of the plugin's timer make one flush tick
// when hold is set: the timer runs at a divisor of the flush tick no longer
// than hold_probe_interval, so that checks and timeouts keep their time.
func holdSubticks(cfg config.Config) int {
	if len(cfg.Hold) == 0 {
		return 1
	}
	t := cfg.TickPeriod().Milliseconds()
	for k := int64(1); k <= t; k++ {
		if t%k == 0 && time.Duration(t/k)*time.Millisecond <= cfg.HoldProbeInterval {
			return int(k)
		}
	}
	return int(t)
}

// holdMetrics are the hold's Envoy metrics.
type holdMetrics struct {
	held, resumed, timedOut, abandoned, overBound, released counter
	now                                                     proxywasm.MetricGauge
	time                                                    proxywasm.MetricHistogram
}

func (m *holdMetrics) define() {
	m.held.id = proxywasm.DefineCounterMetric("reqcount.hold.held")
	m.resumed.id = proxywasm.DefineCounterMetric("reqcount.hold.resumed")
	m.timedOut.id = proxywasm.DefineCounterMetric("reqcount.hold.timed_out")
	m.abandoned.id = proxywasm.DefineCounterMetric("reqcount.hold.abandoned")
	m.overBound.id = proxywasm.DefineCounterMetric("reqcount.hold.over_bound")
	m.released.id = proxywasm.DefineCounterMetric("reqcount.hold.released")
	m.now = proxywasm.DefineGaugeMetric("reqcount.hold.held_now")
	m.time = proxywasm.DefineHistogramMetric("reqcount.hold.time_ms")
}

// holdSide is a worker's hold: built at start when hold is set.
type holdSide struct {
	held    *hold.Holder // the held requests and the checks' rules
	m       holdMetrics
	probes  []string // reused: DueProbes' result
	calls   calls
	probing map[uint64]string // probe call id → cluster
	nextID  uint64
	// auth is each cluster's probe :authority: the key of its first request
	// held ("svc.ns", which the mesh routes by).
	auth map[string]string
	// sub counts the timer's ticks within a flush tick (holdSubticks).
	sub, subticks int
	// hdrs are a probe's headers, reused: the :authority changes with the
	// cluster checked.
	hdrs callHeaders
	// lastNow is the held_now gauge's last value from this worker.
	lastNow int64
	// ticks counts the timer's ticks, periodMs is their period: the hold's
	// clock (holdNow), in ticks as the rest of the filter's, with no clock
	// read per request; a check's interval and the timeout keep their time
	// within a tick.
	ticks, periodMs int64
}

// startHold builds the hold side when the configuration has hold.
func (p *pluginContext) startHold(cfg config.Config) {
	if len(cfg.Hold) == 0 {
		return
	}
	h := &holdSide{probing: map[uint64]string{}, auth: map[string]string{},
		held:     hold.New(hold.Options{Max: cfg.HoldMax, TimeoutMs: cfg.HoldTimeout.Milliseconds(), ProbeEveryMs: cfg.HoldProbeInterval.Milliseconds()}),
		subticks: holdSubticks(cfg), periodMs: max(tickPeriod(cfg).Milliseconds(), 1)}
	h.calls.settle = p.onProbe
	h.m.define()
	h.hdrs.set([][2]string{{":method", "HEAD"}, {":path", cfg.HoldProbePath}, {":authority", ""}})
	p.hold = h
	streamhook.Done = p.streamEnded
	streamhook.Watched.Reserve(min(cfg.HoldMax, hold.PresizeMax)) // as the holder: no tables outgrown in a burst
}

// holdNow is the hold's clock: the timer's ticks so far, in milliseconds.
func (p *pluginContext) holdNow() int64 { return p.hold.ticks * p.hold.periodMs }

// tickPeriod is the period of the plugin's timer.
func tickPeriod(cfg config.Config) time.Duration {
	return cfg.TickPeriod() / time.Duration(holdSubticks(cfg))
}

// holdOrWatch runs for a request of a hold key that takes the slow path: it
// holds the request when the key is not known ready (a wake-up makes it so),
// and watches the stream's end either way (a response without a healthy host
// makes the key not ready).
func (p *pluginContext) holdOrWatch(ref table.Ref, e *table.Entry, wake bool) {
	if wake && e.Hold == holdReady {
		setHold(e, holdNotReady) // a wake-up: the service may be at zero
	}
	id := streamhook.Current
	if id == 0 {
		return
	}
	h := p.hold
	if _, watched := streamhook.Watched.Get(id); !watched {
		// The entry's slot (+1), which streamEnded checks is still a ready
		// hold key: a slot reused meanwhile by a key not of hold is left
		// alone, and one of hold is at worst checked once more.
		slot, _ := ref.Parts()
		streamhook.Watch(id, uint32(slot)+1)
	}
	if e.Hold != holdNotReady || p.draining {
		return
	}
	// The route's cluster (for weighted clusters the one picked for this
	// request; for cluster_header the header's). Envoy 1.33 removed the old
	// top-level "cluster_name" attribute: it is "xds.cluster_name" there
	// (changelogs/1.33.0, PR #36619). NotFound: no route, or a direct
	// response; nothing to wait for.
	cluster, err := proxywasm.GetProperty(xdsClusterName)
	if err != nil || len(cluster) == 0 {
		return
	}
	now := p.holdNow()
	if !p.hold.held.Hold(id, packRef(ref), cluster, now) {
		return // hold_max held: it passes
	}
	if _, ok := h.auth[string(cluster)]; !ok {
		h.auth[string(cluster)] = e.Key
	}
	p.pause = true
	p.probeDue(now)
}

// packRef and unpackRef carry a table.Ref in a hold.Request's Tag.
func packRef(r table.Ref) uint64 {
	s, g := r.Parts()
	return uint64(uint32(s))<<32 | uint64(g)
}

func unpackRef(v uint64) table.Ref { return table.RefOf(table.Slot(int32(v>>32)), uint32(v)) }

// probeDue sends the checks due now.
func (p *pluginContext) probeDue(now int64) {
	h := p.hold
	h.probes = p.hold.held.DueProbes(h.probes[:0], now)
	if len(h.probes) > 0 {
		// The checks are the root context's calls (Envoy binds every
		// proxy_http_call to it; the SDK registers the answer with the
		// effective context), also when a request callback sends one.
		_ = proxywasm.SetEffectiveContext(p.rootID)
	}
	for _, c := range h.probes {
		h.nextID++
		id := h.nextID
		h.hdrs.pairs[2][1] = h.auth[c]
		h.hdrs.set(h.hdrs.pairs)
		ans := h.calls.get(id)
		p.hold.held.ProbeSent(c, now)
		if err := httpCall(c, &h.hdrs, nil, uint32(p.cfg.Timeout.Milliseconds()), ans.fn); err != nil {
			// Envoy refuses a call to a cluster with no healthy host at once
			// (InternalFailure, no answer ever comes): not yet; checked again
			// after the interval.
			h.calls.put(ans)
			p.hold.held.ProbeDone(c, false, now)
			continue
		}
		h.probing[id] = c
	}
}

// onProbe settles a check: Envoy's own answers (a reset, or a 503 or 504 it
// made: no healthy host, connect failure, timeout) mean not yet; any other
// answer is the service's: its cluster's held requests go.
func (p *pluginContext) onProbe(id uint64, numHeaders int) {
	h := p.hold
	c, ok := h.probing[id]
	if !ok {
		return
	}
	delete(h.probing, id)
	ready := false
	if numHeaders > 0 {
		if st, err := callStatus(); err == nil {
			ready = st != 0 && st != 503 && st != 504
		}
	}
	p.letGo(p.hold.held.ProbeDone(c, ready, p.holdNow()), true)
}

// letGo resumes held requests, oldest first; ready marks their keys ready.
func (p *pluginContext) letGo(reqs []hold.Request, ready bool) {
	for _, r := range reqs {
		if ready {
			if e := p.table.Get(unpackRef(r.Tag)); e != nil && e.Hold == holdNotReady {
				setHold(e, holdReady)
			}
		}
		p.hold.m.time.Record(uint64(max(r.HeldMs, 0)))
		if err := proxywasm.SetEffectiveContext(r.ID); err != nil {
			continue // the stream is gone (Envoy refuses an id it does not know)
		}
		_ = proxywasm.ResumeHttpRequest()
	}
	if len(reqs) > 0 {
		_ = proxywasm.SetEffectiveContext(p.rootID)
	}
}

// holdTick is the hold's part of every timer tick: requests held for
// hold_timeout go, then the checks due are sent.
func (p *pluginContext) holdTick() {
	p.hold.ticks++
	now := p.holdNow()
	p.letGo(p.hold.held.Expired(now), false)
	p.probeDue(now)
	p.pushHoldMetrics()
}

// streamEnded is streamhook's Done: a watched stream ended. A stream still
// held had its client go away; one that passed tells, by its response flags,
// whether Envoy found no healthy host for it.
func (p *pluginContext) streamEnded(id, slot uint32) {
	if p.hold.held.Forget(id) || slot == 0 {
		return
	}
	v, err := proxywasm.GetProperty(responseFlags)
	if err != nil || len(v) < 8 {
		return
	}
	if flags := binary.LittleEndian.Uint64(v); flags&(flagNoHealthyUpstream|flagUpstreamConnectionFailure) != 0 {
		if e := p.table.AtSlot(table.Slot(slot - 1)); e != nil && e.Hold == holdReady {
			setHold(e, holdNotReady)
		}
	}
}

// releaseHeld lets every held request go (shutdown).
func (p *pluginContext) releaseHeld() {
	if p.hold != nil {
		p.letGo(p.hold.held.ReleaseAll(p.holdNow()), false)
		p.pushHoldMetrics()
	}
}

// pushHoldMetrics brings the hold's metrics up to date.
func (p *pluginContext) pushHoldMetrics() {
	s, m := p.hold.held.Stats(), &p.hold.m
	m.held.push(s.Held)
	m.resumed.push(s.Resumed)
	m.timedOut.push(s.TimedOut)
	m.abandoned.push(s.Abandoned)
	m.overBound.push(s.OverBound)
	m.released.push(s.Released)
	if n := int64(s.Now); n != p.hold.lastNow {
		m.now.Add(n - p.hold.lastNow)
		p.hold.lastNow = n
	}
}
