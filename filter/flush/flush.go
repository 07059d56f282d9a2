// Package flush decides what a worker sends on each tick and settles each call when
// its answer comes: the flush path (tick → encode → dispatch → response), in plain Go.
//
// The rules, which keep counts exact while the VM lives:
//   - A count moves from Pending to InFlight when a call carrying it is dispatched.
//   - A delivered call (2xx) clears its InFlight; any other answer, a reset, or a
//     dispatch error puts the count back into Pending for a later tick, unless
//     the counts have an owner who hands them out again (Options.DropFailed):
//     then they leave the table, and only the owner puts counts into Pending.
//   - While a key's count is in flight the key is not sent again (one call per key
//     at a time, in both modes). So nothing is sent twice.
//   - A flush interval is split into Slices ticks; each key belongs to one slice
//     (its table slot, shifted by the worker's random Phase) and is sent on that
//     slice's tick: once per flush interval, and a tick handles about 1/Slices of
//     the keys, so no tick stalls the worker for long.
//   - Wake sends one key at once, outside its slice (the first request after a
//     silence), under the same rules.
//   - A key with nothing pending or in flight and no request for IdleTicks ticks
//     is dropped from the table at its slice's tick, so a worker's keys are the
//     recently active ones and memory stays bounded by max_keys whatever the
//     traffic.
package flush

import (
	"github.com/reqcount/reqcount/filter/table"
	"github.com/reqcount/reqcount/messages"
)

// Outcome is how a call ended.
type Outcome uint8

const (
	// Delivered: the collector answered 2xx.
	Delivered Outcome = iota
	// Rejected: the collector (or Envoy, for a timeout or connect failure) answered
	// with a status that is not 2xx.
	Rejected
	// Reset: the call failed without a response (Envoy reports zero headers).
	Reset
)

// Dispatch sends one body. id identifies the call: the caller reports its answer
// with Flusher.Done(id, …). A non-nil error means nothing was sent.
type Dispatch func(body []byte, id uint64) error

// Options configure a Flusher.
type Options struct {
	// Batch sends one JSON array per tick instead of one object per key.
	Batch bool
	// Slices is how many ticks one flush interval is split into (at least 1);
	// Phase, in [0, Slices), shifts which slice goes first, so that workers
	// started together do not report together.
	Slices, Phase int
	// IdleTicks is how many ticks a key with nothing pending or in flight is kept
	// after its last request (at least Slices is used): a wake-up needs the key
	// remembered for as long as its silence is shorter than wake_after.
	IdleTicks uint32
	// Meter, if set, is called for every key of a tick's slice before the key can
	// be dropped, and by MeterAll: where the plugin brings a key's per-service
	// metric up to date, once per flush interval per key.
	Meter func(*table.Entry)
	// WakeOnly sends nothing but wake-ups: Tick, Flush and Drain leave the counts
	// where they are (aggregate: envoy, where the workers' counts go through
	// shared data and one worker reports them).
	WakeOnly bool
	// Sent, if set, is called for every entry a call carries, right after the call
	// was dispatched and before its Pending moves into flight; Settled when the
	// call ends, before InFlight is cleared or put back.
	Sent    func(id uint64, e *table.Entry)
	Settled func(id uint64, e *table.Entry, delivered bool)
	// DropFailed: a call that fails (non-2xx, reset, abandoned) takes its counts
	// out of the table instead of putting them back into Pending. For a table
	// whose counts someone else owns and hands out again: the lease holder's
	// merged table, whose Pending only a collect may set (its Leader tracks
	// every count it hands out; a count the flusher put back would be sent in a
	// call the Leader does not track, delivered without an ack, and handed out
	// again: sent twice). The Leader gets the failed counts back through
	// Settled(…, false) and hands them out at the key's next collect.
	// TestDropFailed, filter's TestHolderFlushRealTiming and the e2e
	// TestSimAggregate break without it.
	DropFailed bool
	// AbandonAfter is how many ticks a call may go unanswered before its counts are
	// put back and its late answer ignored. Envoy always answers a call (at the
	// latest with a timeout), so this only guards against a host that never does.
	// Zero never abandons.
	AbandonAfter uint64
}

// Stats are running totals since the Flusher was made.
type Stats struct {
	// Calls dispatched, delivered, answered with a non-2xx status, reset, and
	// abandoned unanswered.
	CallsSent, CallsDelivered, CallsRejected, CallsReset, CallsAbandoned uint64
	// DispatchErrors counts calls the host refused to start.
	DispatchErrors uint64
	// LateAnswers counts answers to calls that were abandoned or never made.
	LateAnswers uint64
	// Counts (requests) sent, delivered, put back after a failed call, and
	// returned to their owner after a failed call (DropFailed).
	CountsSent, CountsDelivered, CountsRequeued, CountsReturned uint64
	// KeysEvicted counts idle keys dropped from the table.
	KeysEvicted uint64
	// Wakeups counts calls started by Wake (they are in CallsSent too).
	Wakeups uint64
	// LastStatus is the :status of the last non-2xx answer (resets have none).
	LastStatus int
	// LastDispatchError is the last error the host gave when starting a call.
	LastDispatchError error
}

// AddCalls adds o's call and count totals to s (not its table's: KeysEvicted,
// Wakeups); the last status and dispatch error are o's when it has them. A worker
// that also reports for its Envoy sums its two flushers' calls this way.
func (s *Stats) AddCalls(o Stats) {
	s.CallsSent += o.CallsSent
	s.CallsDelivered += o.CallsDelivered
	s.CallsRejected += o.CallsRejected
	s.CallsReset += o.CallsReset
	s.CallsAbandoned += o.CallsAbandoned
	s.DispatchErrors += o.DispatchErrors
	s.LateAnswers += o.LateAnswers
	s.CountsSent += o.CountsSent
	s.CountsDelivered += o.CountsDelivered
	s.CountsRequeued += o.CountsRequeued
	s.CountsReturned += o.CountsReturned
	if o.LastStatus != 0 {
		s.LastStatus = o.LastStatus
	}
	if o.LastDispatchError != nil {
		s.LastDispatchError = o.LastDispatchError
	}
}

// call is one call awaiting its answer: the slots whose InFlight it carries.
type call struct {
	slot  table.Slot   // the one key of a single-mode call or a wake-up
	slots []table.Slot // a batch call's keys (nil otherwise)
	tick  uint64       // when it was sent
}

// Flusher sends a Table's counts. Not safe for concurrent use (one per worker).
type Flusher struct {
	t        *table.Table
	opts     Options
	dispatch Dispatch

	calls  map[uint64]call
	nextID uint64
	tick   uint64

	// batch mode: the keys and messages of the batch being built.
	batchSlots []table.Slot
	batchMsgs  []messages.RequestCount

	draining bool
	buf      []byte
	stats    Stats
}

// New returns a Flusher for t that sends with d.
func New(t *table.Table, opts Options, d Dispatch) *Flusher {
	opts.Slices = max(opts.Slices, 1)
	opts.Phase = ((opts.Phase % opts.Slices) + opts.Slices) % opts.Slices
	opts.IdleTicks = max(opts.IdleTicks, uint32(opts.Slices))
	return &Flusher{t: t, opts: opts, dispatch: d, calls: make(map[uint64]call), nextID: 1}
}

// Now returns the tick count: 0 before the first Tick. The hot path stamps
// Entry.Last with Now()+1.
func (f *Flusher) Now() uint32 { return uint32(f.tick) }

// Stats returns the running totals.
func (f *Flusher) Stats() Stats { return f.stats }

// InFlight returns the number of calls awaiting an answer.
func (f *Flusher) InFlight() int { return len(f.calls) }

// Tick runs one tick: it abandons calls unanswered for too long, then, for the
// keys of this tick's slice, drops the idle ones and sends every count that is not
// in flight.
func (f *Flusher) Tick() {
	f.tick++
	if f.opts.AbandonAfter > 0 {
		for id, c := range f.calls {
			if f.tick-c.tick > f.opts.AbandonAfter {
				f.stats.CallsAbandoned++
				f.settle(id, c, false)
			}
		}
	}
	first := table.Slot((int(f.tick%uint64(f.opts.Slices)) + f.opts.Phase) % f.opts.Slices)
	now := uint32(f.tick)
	for s := first; int(s) < f.t.Slots(); s += table.Slot(f.opts.Slices) {
		if !f.t.Held(s) {
			continue
		}
		e := f.t.At(s)
		if f.opts.Meter != nil {
			f.opts.Meter(e)
		}
		if e.Pending == 0 && e.InFlight == 0 && now-e.Last >= f.opts.IdleTicks {
			f.t.Remove(s)
			f.stats.KeysEvicted++
		}
	}
	if !f.draining && !f.opts.WakeOnly {
		f.send(first, f.opts.Slices)
	}
}

// Flush sends every count that is not in flight, whatever its slice. After Drain
// it sends nothing.
func (f *Flusher) Flush() {
	if !f.draining && !f.opts.WakeOnly {
		f.send(0, 1)
	}
}

// SendAll sends every count that is not in flight, whatever its slice, also
// after Drain (a draining lease holder sends what it collects). Never with
// WakeOnly.
func (f *Flusher) SendAll() {
	if !f.opts.WakeOnly {
		f.send(0, 1)
	}
}

// Wake sends the key in slot s at once, outside its slice: the first request of
// a key after a silence. It sends nothing while the key is in flight (its counts
// go out with its next report) or after Drain, and reports whether it sent.
func (f *Flusher) Wake(s table.Slot) bool {
	if f.draining || !f.t.Held(s) {
		return false
	}
	e := f.t.At(s)
	if e.Pending == 0 || e.InFlight > 0 {
		return false
	}
	var ok bool
	if f.opts.Batch {
		f.batchSlots, f.batchMsgs = append(f.batchSlots[:0], s), append(f.batchMsgs[:0], message(e))
		ok = f.sendBatch()
	} else {
		ok = f.sendOne(s, e)
	}
	if ok {
		f.stats.Wakeups++
	}
	return ok
}

// send sends the counts not in flight of the keys in slots first, first+step, …:
// one call per key, or one batch.
func (f *Flusher) send(first table.Slot, step int) {
	if f.opts.Batch {
		f.batchSlots, f.batchMsgs = f.batchSlots[:0], f.batchMsgs[:0]
	}
	for s := first; int(s) < f.t.Slots(); s += table.Slot(step) {
		if !f.t.Held(s) {
			continue
		}
		e := f.t.At(s)
		if e.Pending == 0 || e.InFlight > 0 {
			continue
		}
		if f.opts.Batch {
			f.batchSlots = append(f.batchSlots, s)
			f.batchMsgs = append(f.batchMsgs, message(e))
			continue
		}
		if !f.sendOne(s, e) {
			// The host refuses a call for reasons that hold for every key (unknown
			// cluster, bad headers): stop here and try again next tick.
			return
		}
	}
	if f.opts.Batch && len(f.batchSlots) > 0 {
		f.sendBatch()
	}
}

func message(e *table.Entry) messages.RequestCount {
	return messages.RequestCount{Count: int(e.Pending), Svc: e.Service(), Namespace: e.Namespace()}
}

// sendOne sends one key's Pending as a single-mode call.
func (f *Flusher) sendOne(s table.Slot, e *table.Entry) bool {
	id, ok := f.call(messages.AppendFields(f.buf[:0], int(e.Pending), e.Service(), e.Namespace()))
	if !ok {
		return false
	}
	f.calls[id] = call{slot: s, tick: f.tick}
	f.sent(id, e)
	return true
}

// sendBatch sends batchMsgs as one array, carrying batchSlots.
func (f *Flusher) sendBatch() bool {
	id, ok := f.call(messages.AppendBatchJSON(f.buf[:0], f.batchMsgs))
	if !ok {
		return false
	}
	slots := append([]table.Slot(nil), f.batchSlots...)
	f.calls[id] = call{slots: slots, tick: f.tick}
	for _, s := range slots {
		f.sent(id, f.t.At(s))
	}
	return true
}

// call dispatches body as a new call and returns its id, or false if the host
// refused to start it. body becomes the reused buffer.
func (f *Flusher) call(body []byte) (uint64, bool) {
	f.buf = body
	id := f.nextID
	f.nextID++
	if err := f.dispatch(body, id); err != nil {
		f.stats.DispatchErrors++
		f.stats.LastDispatchError = err
		return 0, false
	}
	f.stats.CallsSent++
	return id, true
}

// sent moves an entry's counts into flight.
func (f *Flusher) sent(id uint64, e *table.Entry) {
	if f.opts.Sent != nil {
		f.opts.Sent(id, e)
	}
	f.stats.CountsSent += e.Pending
	e.InFlight, e.Pending = e.Pending, 0
}

// Done settles call id with its outcome and, for Rejected, the :status. An answer to
// an unknown or abandoned call is counted and otherwise ignored.
func (f *Flusher) Done(id uint64, o Outcome, status int) {
	c, ok := f.calls[id]
	if !ok {
		f.stats.LateAnswers++
		return
	}
	switch o {
	case Delivered:
		f.stats.CallsDelivered++
	case Rejected:
		f.stats.CallsRejected++
		f.stats.LastStatus = status
	default:
		f.stats.CallsReset++
	}
	f.settle(id, c, o == Delivered)
	if f.draining && o == Delivered {
		// Shutting down: counts held back only because their key was in flight go
		// out now. A failed call is not retried, so the shutdown still ends.
		if !f.opts.WakeOnly {
			f.send(0, 1)
		}
	}
}

// settle clears a call's in-flight counts: gone if delivered, back to Pending if
// not (or, with DropFailed, back to their owner: out of the table).
func (f *Flusher) settle(id uint64, c call, delivered bool) {
	delete(f.calls, id)
	apply := func(e *table.Entry) {
		if f.opts.Settled != nil {
			f.opts.Settled(id, e, delivered)
		}
		switch {
		case delivered:
			f.stats.CountsDelivered += e.InFlight
		case f.opts.DropFailed:
			f.stats.CountsReturned += e.InFlight
		default:
			f.stats.CountsRequeued += e.InFlight
			e.Pending += e.InFlight
		}
		e.InFlight = 0
	}
	if c.slots != nil {
		for _, s := range c.slots {
			apply(f.t.At(s))
		}
		return
	}
	apply(f.t.At(c.slot))
}

// Drain sends what may be sent one last time: the plugin is shutting down. After
// it, Tick and Flush send nothing; only a delivered answer sends the counts that
// waited behind it (its key was in flight), and a failed call is not retried, so a
// shutdown always ends. It returns the number of calls in flight; Pending reports
// what could not be sent.
func (f *Flusher) Drain() int {
	f.Flush()
	f.draining = true
	return len(f.calls)
}

// MeterAll calls Options.Meter for every key held (at shutdown).
func (f *Flusher) MeterAll() {
	if f.opts.Meter != nil {
		f.t.Each(func(_ table.Slot, e *table.Entry) { f.opts.Meter(e) })
	}
}

// Pending returns the requests counted and not delivered or in flight: what would
// be lost if the VM stopped now.
func (f *Flusher) Pending() uint64 {
	var n uint64
	f.t.Each(func(_ table.Slot, e *table.Entry) { n += e.Pending })
	return n
}
