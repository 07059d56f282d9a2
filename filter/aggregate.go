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
	"github.com/reqcount/reqcount/filter/sizeof"
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
	merged *table.Table
	mflush *flush.Flusher
	// parts are what the last collect made available. A merged entry refill
	// set holds the index of its key's first part in Group (noParts once sent,
	// or when it has none); next links each part to its key's next one.
	parts      []merge.Part
	next, last []int32
	sending    []merge.Part // one entry's parts, for the leader
	filled     []table.Ref  // merged entries refill gave a Pending
	leading    bool
	groups     groupIndex
	// calls pools the merged calls' answer callbacks.
	calls calls
	// slices is the number of outbox shards, one per tick of a flush interval;
	// phase shifts which one this worker publishes (and, leading, collects) first.
	slices, phase int

	leaseMs, holdMs, deadMs, heartbeatMs int64
	// lastErr is the last shared-data error (the work is retried on the next
	// tick), logged once per tick; they are counted in tallies.sharedErrors.
	lastErr error
}

// nowMs reads the wall clock: once per tick, and at a wake-up claim.
var nowMs = func() int64 { return time.Now().UnixMilli() }

// newWorkerID returns a new id for every VM start, unique among the Envoy's
// VMs by construction (merge.NewWorkerID: a sequence in shared data, not the
// luck of the random source). If shared data keeps failing it falls back to
// 16 random hex digits, and the failure is counted.
func newWorkerID(fail func(error)) string {
	var err error
	for range 4 {
		var id string
		if id, err = merge.NewWorkerID(sharedDataStore, rand.Uint64()); err == nil {
			return id
		}
	}
	fail(err)
	return fmt.Sprintf("%016x", rand.Uint64())
}

// leaseMs is how long a lease lasts unrenewed: a holder renews it every
// tick; three missed ticks, at least a second, and another worker takes over.
func leaseMs(cfg config.Config) int64 { return max(3*cfg.TickPeriod().Milliseconds(), 1000) }

// reserveMs is how long a holder's reservation lasts: a call sent at a
// collect is covered for more than half of it, well after its timeout
// (merge.Leader.Collect).
func reserveMs(cfg config.Config) int64 {
	return 2 * (cfg.Timeout.Milliseconds() + 3*cfg.TickPeriod().Milliseconds() + 1000)
}

func newAggregator(p *pluginContext, cfg config.Config) *aggregator {
	a := &aggregator{
		p:           p,
		leaseMs:     leaseMs(cfg),
		holdMs:      reserveMs(cfg),
		heartbeatMs: max(cfg.FlushInterval.Milliseconds()/2, 1000),
	}
	a.deadMs = 4*a.heartbeatMs + a.leaseMs
	a.calls.settle = a.onAnswer
	id := newWorkerID(a.fail)
	a.slices, a.phase = cfg.Slices(), randomPhase(cfg.Slices())
	a.worker = merge.NewWorker(sharedDataStore, id, a.slices, cfg.MaxKeys, a.leaseMs)
	a.leader = merge.NewLeader(sharedDataStore, id)
	a.leader.KeyString = a.heldKey
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
		// The one rule of a lease holder's sends: it sends only what a collect
		// handed out to it, tracked by its Leader. So a failed call's counts
		// go back to the Leader (settled), never into the merged Pending, which
		// only refill sets from a collect.
		DropFailed: true,
		Sent:       a.sent,
		Settled:    a.settled,
	}, a.dispatch)
	return a
}

// sharedStore is proxy-wasm shared data as a merge.Store.
type sharedStore struct{}

// sharedDataStore is the store the aggregator uses: Envoy's shared data, or
// in native tests one that follows Envoy's CAS rules (package mergetest; the
// SDK's proxytest does not).
var sharedDataStore merge.Store = sharedStore{}

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
	t := a.p.table
	// A key whose wake-up is in flight keeps its new counts until the
	// wake-up is settled: one call per key at a time, on each worker, as with
	// aggregate: worker (workers of one Envoy may still overlap: a wake-up on
	// one, the holder's report of another's counts). The filtertest row
	// "interval/envoy: a failed wake-up's count goes with the next report,
	// once" fails without it, at some phases.
	take := func(s table.Slot) {
		if e := t.At(s); e.Pending > 0 && e.InFlight == 0 && (i < 0 || int(e.Group) == i) && a.worker.Add(e.Key, e.Pending) {
			e.Pending = 0
		}
	}
	if slots, ok := a.groups.of(i, a.p); ok {
		for _, s := range slots {
			if t.Held(s) {
				take(s)
			}
		}
	} else {
		for s := table.Slot(0); int(s) < t.Slots(); s++ {
			if t.Held(s) {
				take(s)
			}
		}
	}
	if i < 0 {
		a.fail(a.worker.PublishAll(now, a.heartbeatMs))
		return
	}
	a.fail(a.worker.Publish(i, now, a.heartbeatMs))
}

// groupIndex lists the worker table's slots by Group (outbox shard), so that a
// tick visits its shard's keys, not the whole table (10 000 entries cost a
// quarter of a millisecond in the guest). It is built once the table took no
// new key for a tick, and used as long as it takes none, so that it misses no
// key: the table's adds are its length plus the keys the flusher evicted (the
// only removals). A slot it lists may have lost its key since (Held says).
type groupIndex struct {
	slots []table.Slot // by group: group g's are slots[start[g]:start[g+1]]
	start []int32
	// built is the table's adds when the index was built (0: never); seen at
	// the last tick.
	built, seen uint64
}

// of returns the slots of group i, or false when the index is not up to date
// (the caller scans the table).
func (x *groupIndex) of(i int, p *pluginContext) ([]table.Slot, bool) {
	if i < 0 {
		return nil, false
	}
	t := p.table
	adds := uint64(t.Len()) + p.flusher.Stats().KeysEvicted + 1 // from 1: 0 is never built
	if adds != x.built {
		stable := adds == x.seen
		x.seen = adds
		if !stable {
			return nil, false
		}
		x.build(t, p.agg.slices)
		x.built = adds
	}
	return x.slots[x.start[i]:x.start[i+1]], true
}

// grow returns s with length n, zeroed, reusing s's array if it is large enough.
func grow[E any](s []E, n int) []E {
	if cap(s) < n {
		return make([]E, n)
	}
	s = s[:n]
	clear(s)
	return s
}

// build indexes the table's slots by group (a counting sort).
func (x *groupIndex) build(t *table.Table, groups int) {
	x.start = grow(x.start, groups+1)
	for s := table.Slot(0); int(s) < t.Slots(); s++ {
		if t.Held(s) {
			x.start[t.At(s).Group+1]++
		}
	}
	for g := 1; g <= groups; g++ {
		x.start[g] += x.start[g-1]
	}
	x.slots = grow(x.slots, int(x.start[groups]))
	next := x.start[:groups] // filled up to the next group's start, then shifted back
	for s := table.Slot(0); int(s) < t.Slots(); s++ {
		if t.Held(s) {
			g := t.At(s).Group
			x.slots[next[g]] = s
			next[g]++
		}
	}
	copy(x.start[1:], x.start[:groups])
	x.start[0] = 0
}

// bytes is the memory of the aggregator's structures (reqcount.vm.bytes.*):
// the outbox, and the holder side (the merged table, what a collect made
// available, the Leader's buffers).
func (a *aggregator) bytes() (outbox, merged uint64) {
	merged = a.merged.Bytes() + a.leader.Bytes() + sizeof.Slice(a.parts) + sizeof.Slice(a.next) + sizeof.Slice(a.last) +
		sizeof.Slice(a.sending) + sizeof.Slice(a.filled) + sizeof.Slice(a.groups.slots) + sizeof.Slice(a.groups.start)
	return a.worker.Bytes(), merged
}

// tick is the aggregate part of OnTick: publish this tick's outbox shard, then,
// as the lease holder, collect that shard of every worker into the merged table
// and send it.
func (a *aggregator) tick() {
	now, i := nowMs(), a.slice()
	a.publish(i, now)
	a.collect(i, i+1, now, false)
	a.mflush.Tick()
}

// collect takes or renews the lease and, holding it, collects the shards
// [from, to) of every worker into the merged table (writing first the acks of
// what its calls delivered). Without the lease it collects nothing; with own
// (shutting down, the lease let go) it collects what no holder reserved of this
// worker's own outbox, so that a shutdown does not wait for another worker's
// ticks. Either way it writes its acks.
func (a *aggregator) collect(from, to int, now int64, own bool) {
	var err error
	a.leading = false
	if !own {
		// A draining worker (own) never takes or renews the lease: it let
		// it go at the drain's start, and another worker reports for the
		// Envoy. Kept, it collected every worker's every shard at each of
		// its drain ticks (several messages per key per interval) and could
		// not finish while traffic went on (the e2e simulation's steady-state
		// check fails without it).
		var leading bool
		leading, err = a.worker.Lead(now)
		a.fail(err)
		a.leading = leading && err == nil
	}
	a.parts = a.parts[:0]
	switch {
	case a.leading:
		for i := from; i < to; i++ {
			a.parts, err = a.leader.CollectParts(a.parts, i, a.slices, now, a.deadMs, a.holdMs)
			a.fail(err)
		}
	case own:
		a.parts, err = a.leader.CollectOwnParts(a.parts, a.slices, now, a.holdMs)
		a.fail(err)
	default:
		// A holder that lost the lease (its VM stalled) still acks what its
		// calls delivered, before its reservations run out: else the next
		// holder sends those counts again.
		a.fail(a.leader.WriteAcks())
	}
	a.p.tallies.takenOver = a.leader.TakenOver()
	a.refill()
}

// noParts is a merged entry's Group when the last collect has no parts for it.
const noParts = -1

// refill sets the merged table's Pending to what the last collect made available
// (nothing, when this worker does not hold the lease): the keys set last time are
// zeroed, then this time's are set, so a tick's work follows what it collected,
// not the size of the table. A key's parts (one per worker) are linked in next,
// from its entry's Group (a sort of the parts costs more in the guest).
func (a *aggregator) refill() {
	for _, r := range a.filled {
		if e := a.merged.Get(r); e != nil {
			e.Pending, e.Group = 0, noParts
		}
	}
	a.filled = a.filled[:0]
	a.next, a.last = grow(a.next, len(a.parts)), grow(a.last, len(a.parts))
	for i := range a.parts {
		r, e, added, ok := a.merged.EnsureString(a.parts[i].Key)
		if !ok {
			continue // a full table: the key waits in shared data for a later tick
		}
		a.next[i] = noParts
		if added || e.Group == noParts {
			e.Pending, e.Group = a.parts[i].N, int32(i)
			a.last[i] = int32(i)
			a.filled = append(a.filled, r)
			continue
		}
		first := e.Group
		a.next[a.last[first]], a.last[first] = int32(i), int32(i)
		e.Pending += a.parts[i].N
	}
}

// heldKey returns the string this worker already holds for key, from its
// merged table or its own (a lease holder sees most keys of its Envoy
// itself): a part's key then costs no allocation, where a new string per
// part and another per merged entry were most of a holder's garbage (two
// strings per key and interval, more than its tables hold).
func (a *aggregator) heldKey(key []byte) (string, bool) {
	if s, ok := a.merged.HeldKey(key); ok {
		return s, true
	}
	return a.p.table.HeldKey(key)
}

// partsOf returns the parts the last collect made available for e (valid until
// the next call), and marks them taken.
func (a *aggregator) partsOf(e *table.Entry) []merge.Part {
	i := e.Group
	e.Group = noParts
	a.sending = a.sending[:0]
	if i < 0 || int(i) >= len(a.parts) || a.parts[i].Key != e.Key {
		return nil
	}
	for ; i != noParts; i = a.next[i] {
		a.sending = append(a.sending, a.parts[i])
	}
	return a.sending
}

// sent: the merged flusher dispatched call id carrying e.
func (a *aggregator) sent(id uint64, e *table.Entry) {
	a.leader.Sent(id, a.partsOf(e))
}

// settled: call id carrying e ended.
func (a *aggregator) settled(id uint64, e *table.Entry, delivered bool) {
	a.leader.Settled(id, e.Key, delivered)
}

// dispatch sends one body of the merged flusher; the answer comes to onAnswer.
func (a *aggregator) dispatch(body []byte, id uint64) error {
	return a.p.callCluster(&a.calls, body, id)
}

// onAnswer settles a merged call with its answer.
func (a *aggregator) onAnswer(id uint64, numHeaders int) {
	p := a.p
	outcome, status := responseOutcome(numHeaders)
	a.mflush.Done(id, outcome, status)
	if p.draining && outcome == flush.Delivered {
		// Shutting down: what waited behind this call goes out now.
		a.mflush.SendAll()
	}
	// The acks are written once per tick (Collect), not per answer: one
	// rewrite of each outbox's acks however many calls were answered.
	p.finishIfDone()
}

// claimWake reports whether this worker may send key's wake-up: no worker of the
// Envoy sent one within wake_after.
func (a *aggregator) claimWake(key string) bool {
	ok, err := merge.ClaimWake(sharedDataStore, key, nowMs(), a.p.cfg.WakeAfter.Milliseconds(), a.p.cfg.MaxKeys)
	a.fail(err)
	return ok && err == nil
}

// drain starts the shutdown: everything the worker counted goes into its
// outbox, and what can be sent is sent (drainTick); the worker then waits, tick
// by tick, until done or its deadline (pluginContext.drainBy).
func (a *aggregator) drain() {
	if a.leading {
		// The holder's last collect, of every worker's every shard, and its
		// sends: what it reserved goes out now, not only at a later drain
		// tick (a shutdown may see none: TestAggregateOneVoice's lockstep
		// shutdown hung without it).
		now := nowMs()
		a.publish(-1, now)
		a.collect(0, a.slices, now, false)
		a.mflush.SendAll()
	}
	// Another worker takes over at its next tick. What this one reserved and
	// has in flight it still settles and acks (done), and nobody sends it
	// before the reservations run out.
	a.fail(a.worker.Release())
	a.drainTick()
}

// drainTick is a tick while shutting down: publish everything, collect what
// no holder reserved of this worker's own outbox, and send.
func (a *aggregator) drainTick() {
	now := nowMs()
	// What this worker reserved as holder and has not in flight goes to the
	// next holder at once (not when the reservations run out): it no longer
	// sends other workers' counts.
	a.fail(a.leader.Unreserve())
	a.publish(-1, now)
	a.collect(0, a.slices, now, true)
	a.mflush.SendAll()
}

// done reports whether a draining worker may finish: no call in flight, and
// nothing of its own outbox undelivered but what a live lease holder reserved
// (and will deliver); or it waited long enough.
func (a *aggregator) done() bool {
	if a.mflush.InFlight() > 0 {
		return false
	}
	// The acks of what this worker's calls delivered must be written before
	// it lets the lease go: unwritten, the next holder sends those counts
	// again. A failed write is tried again at the next tick (until drainBy).
	// TestShutdownWritesAcks breaks without it.
	ackErr := a.leader.WriteAcks()
	a.fail(ackErr)
	left, err := a.worker.Unsettled(nowMs())
	a.fail(err)
	if (ackErr == nil && err == nil && left == 0) || a.p.flusher.Now() >= a.p.drainBy {
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
