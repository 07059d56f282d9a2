// Package flush decides what a worker sends on each tick and settles each call when
// its answer comes: the flush path (tick → encode → dispatch → response), in plain Go.
//
// The rules, which keep counts exact while the VM lives:
//   - A count moves from Pending to InFlight when a call carrying it is dispatched.
//   - A delivered call (2xx) clears its InFlight; any other answer, a reset, or a
//     dispatch error puts the count back into Pending for a later tick.
//   - While a key's count is in flight the key is not sent again (single mode: per
//     key; batch mode: one call per worker at a time). So nothing is sent twice.
//   - A key that had no requests since the last tick and has nothing in flight is
//     dropped from the table, so a worker's keys are the recently active ones and
//     memory stays bounded by max_keys whatever the traffic.
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
	// Batch sends one JSON array per flush instead of one object per key.
	Batch bool
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
	// Counts (requests) sent, delivered, and put back after a failed call.
	CountsSent, CountsDelivered, CountsRequeued uint64
	// KeysEvicted counts idle keys dropped from the table.
	KeysEvicted uint64
	// LastStatus is the :status of the last non-2xx answer (resets have none).
	LastStatus int
	// LastDispatchError is the last error the host gave when starting a call.
	LastDispatchError error
}

type call struct {
	slot table.Slot // single mode
	tick uint64     // when it was sent
}

// Flusher sends a Table's counts. Not safe for concurrent use (one per worker).
type Flusher struct {
	t        *table.Table
	opts     Options
	dispatch Dispatch

	calls  map[uint64]call
	nextID uint64
	tick   uint64

	// batch mode: the one call in flight, and its slots.
	batchID    uint64
	batchSlots []table.Slot
	batchMsgs  []messages.RequestCount

	draining bool
	buf      []byte
	stats    Stats
}

// New returns a Flusher for t that sends with d.
func New(t *table.Table, opts Options, d Dispatch) *Flusher {
	return &Flusher{t: t, opts: opts, dispatch: d, calls: make(map[uint64]call), nextID: 1}
}

// Stats returns the running totals.
func (f *Flusher) Stats() Stats { return f.stats }

// InFlight returns the number of calls awaiting an answer.
func (f *Flusher) InFlight() int { return len(f.calls) }

// Tick runs one flush period: it abandons calls unanswered for too long, drops idle
// keys, then sends every key with a count that is not in flight.
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
	f.t.Each(func(s table.Slot, e *table.Entry) {
		if e.Pending == 0 && e.InFlight == 0 {
			f.t.Remove(s)
			f.stats.KeysEvicted++
		}
	})
	f.Flush()
}

// Flush sends what may be sent now. After Drain it sends nothing.
func (f *Flusher) Flush() {
	if !f.draining {
		f.send()
	}
}

// send sends every count that is not in flight: one call per key, or one batch
// if no batch is in flight.
func (f *Flusher) send() {
	if f.opts.Batch {
		f.sendBatch()
		return
	}
	stop := false
	f.t.Each(func(s table.Slot, e *table.Entry) {
		if stop || e.Pending == 0 || e.InFlight > 0 {
			return
		}
		id, ok := f.call(messages.AppendFields(f.buf[:0], int(e.Pending), e.Service(), e.Namespace()))
		if !ok {
			// The host refuses a call for reasons that hold for every key (unknown
			// cluster, bad headers): stop here and try again next tick.
			stop = true
			return
		}
		f.calls[id] = call{slot: s, tick: f.tick}
		f.sent(e)
	})
}

func (f *Flusher) sendBatch() {
	if f.batchID != 0 {
		return // one batch call per worker at a time
	}
	f.batchSlots, f.batchMsgs = f.batchSlots[:0], f.batchMsgs[:0]
	f.t.Each(func(s table.Slot, e *table.Entry) {
		if e.Pending == 0 || e.InFlight > 0 {
			return
		}
		f.batchSlots = append(f.batchSlots, s)
		f.batchMsgs = append(f.batchMsgs, messages.RequestCount{Count: int(e.Pending), Svc: e.Service(), Namespace: e.Namespace()})
	})
	if len(f.batchSlots) == 0 {
		return
	}
	id, ok := f.call(messages.AppendBatchJSON(f.buf[:0], f.batchMsgs))
	if !ok {
		return
	}
	f.batchID = id
	f.calls[id] = call{tick: f.tick}
	for _, s := range f.batchSlots {
		f.sent(f.t.At(s))
	}
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
func (f *Flusher) sent(e *table.Entry) {
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
		f.send()
	}
}

// settle clears a call's in-flight counts: gone if delivered, back to Pending if not.
func (f *Flusher) settle(id uint64, c call, delivered bool) {
	delete(f.calls, id)
	apply := func(e *table.Entry) {
		if delivered {
			f.stats.CountsDelivered += e.InFlight
		} else {
			f.stats.CountsRequeued += e.InFlight
			e.Pending += e.InFlight
		}
		e.InFlight = 0
	}
	if f.opts.Batch && id == f.batchID {
		for _, s := range f.batchSlots {
			apply(f.t.At(s))
		}
		f.batchID = 0
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

// Pending returns the requests counted and not delivered or in flight: what would
// be lost if the VM stopped now.
func (f *Flusher) Pending() uint64 {
	var n uint64
	f.t.Each(func(_ table.Slot, e *table.Entry) { n += e.Pending })
	return n
}
