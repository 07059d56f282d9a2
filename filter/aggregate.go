package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/filter/flush"
	"github.com/reqcount/reqcount/filter/merge"
	"github.com/reqcount/reqcount/filter/table"
)

// aggregate: envoy. The workers of one Envoy speak with one voice: on every tick
// each worker moves what it counted into its outbox in shared data (package
// merge says how, and why nothing is lost or counted twice), and the worker that
// holds the lease reports the sum of every outbox from a table of its own, through
// a flusher of its own, under the same slice, in-flight and add-back rules as a
// worker reporting alone. Wake-ups stay with the worker that sees the request,
// once it has claimed the key's wake-up in shared data.
type aggregator struct {
	p      *pluginContext
	worker *merge.Worker
	leader *merge.Leader
	// merged holds what the lease holder reports, flushed by mflush.
	merged  *table.Table
	mflush  *flush.Flusher
	avail   map[string][]merge.Part
	leading bool

	leaseMs, holdMs, deadMs, heartbeatMs int64
	// doneBy is the tick count by which a draining worker gives up waiting for
	// its outbox to be delivered.
	doneBy uint32
	// lastErr is the last shared-data error (the work is retried on the next
	// tick), logged once per tick; they are counted in tallies.sharedErrors.
	lastErr error
}

// nowMs reads the wall clock: once per tick, and at a wake-up claim.
var nowMs = func() int64 { return time.Now().UnixMilli() }

// newWorkerID returns 16 random hex digits: a new id for every VM start.
var newWorkerID = func() string { return fmt.Sprintf("%016x", rand.Uint64()) }

func newAggregator(p *pluginContext, cfg config.Config) *aggregator {
	tick := cfg.TickPeriod().Milliseconds()
	a := &aggregator{
		p: p,
		// A holder renews the lease every tick; three missed ticks, at least a
		// second, and another worker takes over.
		leaseMs: max(3*tick, 1000),
		// A reservation covers a call sent at the last collect until well after
		// its timeout (merge.Leader.Collect).
		holdMs:      cfg.Timeout.Milliseconds() + 3*tick + 1000,
		heartbeatMs: max(cfg.FlushInterval.Milliseconds()/2, 1000),
		avail:       map[string][]merge.Part{},
	}
	a.deadMs = 4*a.heartbeatMs + a.leaseMs
	id := newWorkerID()
	a.worker = merge.NewWorker(sharedStore{}, id, cfg.MaxKeys, a.leaseMs)
	a.leader = merge.NewLeader(sharedStore{}, id)
	a.merged = table.New(cfg.MaxKeys)
	a.mflush = flush.New(a.merged, flush.Options{
		Batch:        cfg.Mode == config.ModeBatch,
		AbandonAfter: abandonAfter(cfg),
		Slices:       cfg.Slices(),
		Phase:        randomPhase(cfg.Slices()),
		Sent:         a.sent,
		Settled:      a.settled,
	}, a.dispatch)
	return a
}

// sharedStore is proxy-wasm shared data as a merge.Store.
type sharedStore struct{}

func (sharedStore) Get(key string) ([]byte, uint32, bool, error) {
	v, cas, err := proxywasm.GetSharedData(key)
	if errors.Is(err, types.ErrorStatusNotFound) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	return v, cas, true, nil
}

func (sharedStore) Set(key string, value []byte, cas uint32) error {
	err := proxywasm.SetSharedData(key, value, cas)
	if errors.Is(err, types.ErrorStatusCasMismatch) {
		return merge.ErrCasMismatch
	}
	return err
}

func (a *aggregator) fail(err error) {
	if err != nil {
		a.p.tallies.sharedErrors++
		a.lastErr = err
	}
}

// publish moves the worker's counted requests into its outbox and writes it.
func (a *aggregator) publish(now int64) {
	a.p.table.Each(func(_ table.Slot, e *table.Entry) {
		if e.Pending > 0 && a.worker.Add(e.Key, e.Pending) {
			e.Pending = 0
		}
	})
	a.fail(a.worker.Publish(now, a.heartbeatMs))
}

// tick is the aggregate part of OnTick: publish, then, as the lease holder,
// collect every outbox into the merged table and run its flusher.
func (a *aggregator) tick() {
	now := nowMs()
	a.publish(now)
	leading, err := a.worker.Lead(now)
	a.fail(err)
	a.leading = leading && err == nil
	if a.leading {
		avail, err := a.leader.Collect(now, a.deadMs, a.holdMs)
		a.fail(err)
		if err != nil {
			avail = nil
		}
		a.avail = avail
	} else {
		clear(a.avail)
	}
	a.refill()
	a.mflush.Tick()
}

// refill sets the merged table's Pending to what the last collect made available
// (nothing, when this worker does not hold the lease).
func (a *aggregator) refill() {
	a.merged.Each(func(_ table.Slot, e *table.Entry) {
		if _, ok := a.avail[e.Key]; !ok {
			e.Pending = 0
		}
	})
	for k, parts := range a.avail {
		var n uint64
		for _, p := range parts {
			n += p.N
		}
		_, e, _, ok := a.merged.Ensure([]byte(k))
		if !ok {
			delete(a.avail, k) // full: it waits in shared data for a later tick
			continue
		}
		e.Pending = n
	}
}

// sent: the merged flusher dispatched call id carrying e.
func (a *aggregator) sent(id uint64, e *table.Entry) {
	a.leader.Sent(id, a.avail[e.Key])
	delete(a.avail, e.Key)
}

// settled: call id carrying e ended.
func (a *aggregator) settled(id uint64, e *table.Entry, delivered bool) {
	a.leader.Settled(id, e.Key, delivered)
}

// dispatch sends one body of the merged flusher.
func (a *aggregator) dispatch(body []byte, id uint64) error {
	p := a.p
	_, err := proxywasm.DispatchHttpCall(p.cfg.Cluster, p.callHdrs, body, nil,
		uint32(p.cfg.Timeout.Milliseconds()), func(numHeaders, _, _ int) {
			outcome, status := responseOutcome(numHeaders)
			a.mflush.Done(id, outcome, status)
			// The acks are written once per tick (Collect), not per answer: one
			// rewrite of each outbox's acks however many calls were answered.
			p.finishIfDone()
		})
	return err
}

// claimWake reports whether this worker may send key's wake-up: no worker of the
// Envoy sent one within wake_after.
func (a *aggregator) claimWake(key string) bool {
	ok, err := merge.ClaimWake(sharedStore{}, key, nowMs(), a.p.cfg.WakeAfter.Milliseconds(), a.p.cfg.MaxKeys)
	a.fail(err)
	return ok && err == nil
}

// drain starts the shutdown: what the worker counted goes into its outbox, and a
// lease holder reports everything once more. It returns the calls in flight.
func (a *aggregator) drain() int {
	a.tick()
	n := a.mflush.Drain()
	a.doneBy = a.p.flusher.Now() + uint32(2*(a.holdMs+a.leaseMs)/max(a.p.cfg.TickPeriod().Milliseconds(), 1)) + 2
	return n
}

// drainTick is a tick while shutting down: publish, lead if possible, and send
// what can be sent, until the worker's outbox is delivered.
func (a *aggregator) drainTick() {
	now := nowMs()
	a.publish(now)
	leading, err := a.worker.Lead(now)
	a.fail(err)
	if leading && err == nil {
		avail, err := a.leader.Collect(now, a.deadMs, a.holdMs)
		a.fail(err)
		a.avail = avail
		a.refill()
		a.mflush.SendAll()
	}
}

// done reports whether a draining worker may finish: nothing of its own is
// undelivered and no call is in flight, or it waited long enough.
func (a *aggregator) done() bool {
	if a.mflush.InFlight() > 0 {
		return false
	}
	a.fail(a.leader.WriteAcks())
	left, err := a.worker.Undelivered()
	a.fail(err)
	if (err == nil && left == 0) || a.p.flusher.Now() >= a.doneBy {
		a.fail(a.worker.Release())
		return true
	}
	return false
}

// undelivered returns what the worker's outbox still holds (for the shutdown log).
func (a *aggregator) undelivered() uint64 {
	left, _ := a.worker.Undelivered()
	return left
}
