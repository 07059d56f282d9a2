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
	filled  []table.Ref // merged entries refill gave a Pending
	leading bool
	// slices is the number of outbox shards, one per tick of a flush interval;
	// phase shifts which one this worker publishes (and, leading, collects) first.
	slices, phase int

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
		// A reservation covers a call sent at a collect for more than holdMs/2,
		// well after its timeout (merge.Leader.Collect).
		holdMs:      2 * (cfg.Timeout.Milliseconds() + 3*tick + 1000),
		heartbeatMs: max(cfg.FlushInterval.Milliseconds()/2, 1000),
		avail:       map[string][]merge.Part{},
	}
	a.deadMs = 4*a.heartbeatMs + a.leaseMs
	id := newWorkerID()
	a.slices, a.phase = cfg.Slices(), randomPhase(cfg.Slices())
	a.worker = merge.NewWorker(sharedStore{}, id, a.slices, cfg.MaxKeys, a.leaseMs)
	a.leader = merge.NewLeader(sharedStore{}, id)
	a.merged = table.New(cfg.MaxKeys)
	// One slice: the merged table holds only what this tick collected (one
	// outbox shard of every worker), and all of it goes out now.
	a.mflush = flush.New(a.merged, flush.Options{
		Batch:        cfg.Mode == config.ModeBatch,
		AbandonAfter: abandonAfter(cfg),
		// A key leaves the merged table once its report is settled: the table
		// holds a tick's share, not every key of the Envoy (a smaller heap for the
		// GC to mark, measured: 4 MiB instead of 7 at 10 000 keys).
		IdleTicks: 1,
		Sent:      a.sent,
		Settled:   a.settled,
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

// slice returns the outbox shard of this tick.
func (a *aggregator) slice() int {
	return (int(a.p.flusher.Now()%uint32(a.slices)) + a.phase) % a.slices
}

// publish moves what the worker counted for the keys of outbox shard i into its
// outbox and writes the shard; all shards when i < 0.
func (a *aggregator) publish(i int, now int64) {
	a.p.table.Each(func(_ table.Slot, e *table.Entry) {
		if e.Pending > 0 && (i < 0 || int(e.Group) == i) && a.worker.Add(e.Key, e.Pending) {
			e.Pending = 0
		}
	})
	if i < 0 {
		a.fail(a.worker.PublishAll(now, a.heartbeatMs))
		return
	}
	a.fail(a.worker.Publish(i, now, a.heartbeatMs))
}

// tick is the aggregate part of OnTick: publish this tick's outbox shard, then,
// as the lease holder, collect that shard of every worker into the merged table
// and send it.
func (a *aggregator) tick() {
	now, i := nowMs(), a.slice()
	a.publish(i, now)
	a.collect([]int{i}, now, false)
	a.mflush.Tick()
}

// collect takes or renews the lease and, holding it, collects the given shards
// of every worker into the merged table. Without the lease it collects nothing,
// or, with own (shutting down), what no holder reserved of this worker's own
// outbox, so that a shutdown does not wait for another worker's ticks.
func (a *aggregator) collect(slices []int, now int64, own bool) {
	leading, err := a.worker.Lead(now)
	a.fail(err)
	a.leading = leading && err == nil
	clear(a.avail)
	add := func(avail map[string][]merge.Part, err error) {
		a.fail(err)
		for k, parts := range avail {
			a.avail[k] = append(a.avail[k], parts...)
		}
	}
	switch {
	case a.leading:
		for _, i := range slices {
			add(a.leader.Collect(i, a.slices, now, a.deadMs, a.holdMs))
		}
	case own:
		add(a.leader.CollectOwn(a.slices, now, a.holdMs))
	}
	a.refill()
}

// refill sets the merged table's Pending to what the last collect made available
// (nothing, when this worker does not hold the lease): the keys set last time are
// zeroed, then this time's are set, so a tick's work follows what it collected,
// not the size of the table.
func (a *aggregator) refill() {
	for _, r := range a.filled {
		if e := a.merged.Get(r); e != nil {
			e.Pending = 0
		}
	}
	a.filled = a.filled[:0]
	for k, parts := range a.avail {
		var n uint64
		for _, p := range parts {
			n += p.N
		}
		r, e, _, ok := a.merged.Ensure([]byte(k))
		if !ok {
			delete(a.avail, k) // full: it waits in shared data for a later tick
			continue
		}
		e.Pending = n
		a.filled = append(a.filled, r)
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
			if p.draining && outcome == flush.Delivered {
				// Shutting down: what waited behind this call goes out now.
				a.mflush.SendAll()
			}
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

// drain starts the shutdown: everything the worker counted goes into its
// outbox, and what can be sent is sent (drainTick); the worker then waits, tick
// by tick, until done or doneBy.
func (a *aggregator) drain() {
	a.drainTick()
	a.doneBy = a.p.flusher.Now() + uint32(2*(a.holdMs+a.leaseMs)/max(a.p.cfg.TickPeriod().Milliseconds(), 1)) + 2
}

// drainTick is a tick while shutting down: publish everything, collect every
// shard (of every worker as the lease holder, else of this one), and send.
func (a *aggregator) drainTick() {
	now := nowMs()
	a.publish(-1, now)
	all := make([]int, a.slices)
	for i := range all {
		all[i] = i
	}
	a.collect(all, now, true)
	a.mflush.SendAll()
}

// done reports whether a draining worker may finish: no call in flight, and
// nothing of its own outbox undelivered but what a live lease holder reserved
// (and will deliver); or it waited long enough.
func (a *aggregator) done() bool {
	if a.mflush.InFlight() > 0 {
		return false
	}
	a.fail(a.leader.WriteAcks())
	left, err := a.worker.Unsettled(nowMs())
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
