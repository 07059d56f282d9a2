package merge

import (
	"errors"
	"fmt"
)

// casRetries bounds the compare-and-swap loops: another worker winning that many
// times in a row means the next tick tries again.
const casRetries = 8

// Worker is one worker's side of the merge: its outbox, its place in the list of
// workers, the lease and wake-up claims. Not safe for concurrent use (one per VM).
type Worker struct {
	ID  string
	s   Store
	out Outbox
	// MaxKeys bounds the outbox: a new key beyond it stays in the worker's table.
	MaxKeys int
	// LeaseMs is how long a lease lasts without renewal.
	LeaseMs int64
	dirty   bool
	leader  bool
	buf     []byte
	// published is the outbox as last written: what the lease holder may have
	// delivered. A holder empties the outbox of a worker it takes for dead only
	// once all of it was delivered, so a worker that finds its outbox emptied
	// drops exactly that much (forgetPublished).
	published map[string]Cum
}

// NewWorker returns the merge side of worker id.
func NewWorker(s Store, id string, maxKeys int, leaseMs int64) *Worker {
	return &Worker{ID: id, s: s, MaxKeys: maxKeys, LeaseMs: leaseMs, out: Outbox{Entries: map[string]Cum{}}}
}

// Add moves n requests for key into the outbox (written by Publish). It returns
// false, taking nothing, when the outbox holds MaxKeys other keys.
func (w *Worker) Add(key string, n uint64) bool {
	if _, ok := w.out.Entries[key]; !ok && len(w.out.Entries) >= w.MaxKeys {
		return false
	}
	w.out.Add(key, n)
	w.dirty = true
	return true
}

// Undelivered returns what the outbox holds that its acks (as last read) do not
// cover, and the acks read.
func (w *Worker) Undelivered() (uint64, error) {
	acks, err := w.acks()
	if err != nil {
		return 0, err
	}
	return w.out.Undelivered(acks), nil
}

// Publish trims the outbox of what was delivered, writes it (with a heartbeat
// at nowMs) when it changed or the heartbeat is older than heartbeatMs, and makes
// sure the worker is listed. Until a write succeeds, counts Add took are only in
// this VM.
func (w *Worker) Publish(nowMs, heartbeatMs int64) error {
	if acks, err := w.acks(); err != nil {
		return err
	} else if w.out.Trim(acks) > 0 {
		w.dirty = true
	}
	for i := 0; ; i++ {
		v, cas, ok, err := w.s.Get(OutboxKey(w.ID))
		if err != nil {
			return fmt.Errorf("publish outbox: %w", err)
		}
		if ok && len(v) == 0 && w.published != nil {
			w.forgetPublished()
		}
		if !w.dirty && nowMs-w.out.HeartbeatMs < heartbeatMs {
			break
		}
		w.out.HeartbeatMs = nowMs
		w.buf = AppendOutbox(w.buf[:0], &w.out)
		// With the CAS read above: a holder may empty the outbox meanwhile.
		err = w.s.Set(OutboxKey(w.ID), w.buf, cas)
		if err == nil {
			w.dirty = false
			w.published = make(map[string]Cum, len(w.out.Entries))
			for k, c := range w.out.Entries {
				w.published[k] = c
			}
			break
		}
		if !errors.Is(err, ErrCasMismatch) || i == casRetries {
			return fmt.Errorf("publish outbox: %w", err)
		}
	}
	return w.list()
}

// forgetPublished drops from the outbox what was published before the lease
// holder emptied it (all of it delivered), and gives what is left new
// generations, so that no ack of the old outbox can cover it.
func (w *Worker) forgetPublished() {
	for k, p := range w.published {
		c, ok := w.out.Entries[k]
		if !ok || c.Gen != p.Gen {
			continue
		}
		c.N -= min(p.N, c.N)
		if c.N == 0 {
			delete(w.out.Entries, k)
			continue
		}
		w.out.NextGen++
		w.out.Entries[k] = Cum{Gen: w.out.NextGen, N: c.N}
	}
	w.published = map[string]Cum{}
	w.dirty = true
}

func (w *Worker) acks() (Acks, error) {
	v, _, ok, err := w.s.Get(AckKey(w.ID))
	if err != nil || !ok {
		return Acks{}, err
	}
	return ParseAcks(v)
}

// list puts the worker on the list of workers if it is not there (checked on
// every publish: a list created by two workers at once keeps only one of them).
func (w *Worker) list() error {
	return update(w.s, KeyWorkers, []byte("v1"), func(v []byte) ([]byte, bool, error) {
		ws, err := ParseWorkers(v)
		if err != nil {
			return nil, false, err
		}
		if ws.Has(w.ID) {
			return nil, false, nil
		}
		return AppendWorkers(nil, append(ws, w.ID)), true, nil
	})
}

// Lead takes or renews the lease at nowMs and reports whether this worker holds
// it: only the holder sends regular reports.
func (w *Worker) Lead(nowMs int64) (bool, error) {
	w.leader = false
	err := update(w.s, KeyLease, AppendLease(nil, Lease{Released: true}), func(v []byte) ([]byte, bool, error) {
		l, err := ParseLease(v)
		if err != nil {
			return nil, false, err
		}
		if l.Holder != w.ID && !l.Free(nowMs) {
			return nil, false, nil
		}
		return AppendLease(nil, Lease{Holder: w.ID, ExpiryMs: nowMs + w.LeaseMs}), true, nil
	})
	if err != nil {
		return false, err
	}
	v, _, ok, err := w.s.Get(KeyLease)
	if err != nil || !ok {
		return false, err
	}
	l, err := ParseLease(v)
	w.leader = err == nil && l.Holder == w.ID && !l.Released
	return w.leader, err
}

// Release gives the lease up, if this worker holds it, so that another takes over
// at once (at shutdown).
func (w *Worker) Release() error {
	return update(w.s, KeyLease, nil, func(v []byte) ([]byte, bool, error) {
		l, err := ParseLease(v)
		if err != nil || l.Holder != w.ID {
			return nil, false, err
		}
		l.Released = true
		return AppendLease(nil, l), true, nil
	})
}

// ClaimWake reports whether this worker may send key's wake-up at nowMs: no
// worker has sent one in the last afterMs. A successful claim records nowMs for
// the key (the newest max keys are kept).
func ClaimWake(s Store, key string, nowMs, afterMs int64, max int) (bool, error) {
	claimed := false
	err := update(s, KeyWake, []byte("v1\n"), func(v []byte) ([]byte, bool, error) {
		ws, err := ParseWakes(v)
		if err != nil {
			return nil, false, err
		}
		if t, ok := ws[key]; ok && nowMs-t < afterMs {
			claimed = false
			return nil, false, nil
		}
		ws[key] = nowMs
		claimed = true
		return AppendWakes(nil, ws, max), true, nil
	})
	return claimed && err == nil, err
}

// update is a compare-and-swap loop on key: it creates key with initial if it does
// not exist (when initial is not nil), then asks change for the new value (false:
// leave it) and swaps it in, reading again on a mismatch.
func update(s Store, key string, initial []byte, change func([]byte) ([]byte, bool, error)) error {
	for i := 0; i < casRetries; i++ {
		v, cas, ok, err := s.Get(key)
		if err != nil {
			return err
		}
		if !ok {
			if initial == nil {
				return nil
			}
			if _, err := Create(s, key, initial); err != nil {
				return err
			}
			continue
		}
		nv, write, err := change(v)
		if err != nil || !write {
			return err
		}
		err = s.Set(key, nv, cas)
		if !errors.Is(err, ErrCasMismatch) {
			return err
		}
	}
	return fmt.Errorf("%s: %w %d times in a row", key, ErrCasMismatch, casRetries)
}

// Part is what one worker's outbox holds to send for a key.
type Part struct {
	Worker, Key string
	Gen         uint32
	N           uint64
}

type partID struct {
	worker, key string
	gen         uint32
}

// Leader is a lease holder's side: it reads every listed outbox, reserves and
// hands out what is to send, and writes the acks as the collector accepts it. A
// worker keeps its Leader after losing the lease, to settle its calls in flight.
type Leader struct {
	s        Store
	id       string
	inflight map[partID]uint64
	calls    map[uint64][]Part
	// deltas are deliveries not yet written: worker → key → delivered (by
	// generation).
	deltas map[string]map[string]Cum
}

// NewLeader returns the lease-holder side of worker id over s.
func NewLeader(s Store, id string) *Leader {
	return &Leader{s: s, id: id, inflight: map[partID]uint64{}, calls: map[uint64][]Part{}, deltas: map[string]map[string]Cum{}}
}

// Collect reads every listed worker's outbox and acks, reserves until nowMs +
// holdMs what is undelivered and not reserved by another holder, and returns, per
// key, the parts reserved and not in flight. holdMs must exceed the calls'
// timeout: a holder that loses the lease stops renewing, and its calls in flight
// must be answered before the reservation ends. A worker whose heartbeat is older
// than deadMs and whose outbox is fully delivered is unlisted and its keys
// emptied. Call it only while holding the lease.
func (l *Leader) Collect(nowMs, deadMs, holdMs int64) (map[string][]Part, error) {
	if err := l.WriteAcks(); err != nil {
		return nil, err
	}
	v, _, ok, err := l.s.Get(KeyWorkers)
	if err != nil || !ok {
		return nil, err
	}
	ws, err := ParseWorkers(v)
	if err != nil {
		return nil, err
	}
	avail := map[string][]Part{}
	var gone []string
	for _, id := range ws {
		ov, ocas, ok, err := l.s.Get(OutboxKey(id))
		if err != nil {
			return nil, err
		}
		if !ok || len(ov) == 0 {
			continue
		}
		out, err := ParseOutbox(ov)
		if err != nil {
			continue // a value this version cannot read: left alone
		}
		av, acas, _, err := l.s.Get(AckKey(id))
		if err != nil {
			return nil, err
		}
		acks, err := ParseAcks(av)
		if err != nil {
			acks = Acks{}
		}
		if out.Undelivered(acks) == 0 && !l.busy(id) && nowMs-out.HeartbeatMs > deadMs {
			// Emptied only if unchanged since read: a worker that is alive after
			// all has written a newer outbox, and stays.
			if err := l.s.Set(OutboxKey(id), nil, ocas); err == nil {
				gone = append(gone, id)
				continue
			} else if !errors.Is(err, ErrCasMismatch) {
				return nil, err
			}
		}
		changed := false
		var parts []Part
		for k, c := range out.Entries {
			a, ok := acks[k]
			if !ok || a.Gen != c.Gen {
				a, changed = Ack{Gen: c.Gen}, true
			}
			left := c.N - min(a.Delivered, c.N)
			if left == 0 {
				continue
			}
			if a.Holder != l.id && a.Holder != "" && nowMs < a.UntilMs {
				continue // reserved by another holder, who may have it in flight
			}
			// Renewed on every collect, in flight or not: a call sent now is covered
			// for holdMs, longer than its timeout, whatever happens to the lease.
			if a.Holder != l.id || a.UntilMs != nowMs+holdMs {
				a.Holder, a.UntilMs, changed = l.id, nowMs+holdMs, true
			}
			acks[k] = a
			left -= min(l.inflight[partID{id, k, c.Gen}], left)
			if left > 0 {
				parts = append(parts, Part{Worker: id, Key: k, Gen: c.Gen, N: left})
			}
		}
		// Acks of entries the worker has dropped (or renewed) are no longer needed.
		for k, a := range acks {
			if c, ok := out.Entries[k]; !ok || c.Gen != a.Gen {
				delete(acks, k)
				changed = true
			}
		}
		if changed {
			// Reserved only if no other holder wrote meanwhile: else next tick.
			if err := l.s.Set(AckKey(id), AppendAcks(nil, acks), acas); err != nil {
				if errors.Is(err, ErrCasMismatch) {
					continue
				}
				return nil, err
			}
		}
		for _, p := range parts {
			avail[p.Key] = append(avail[p.Key], p)
		}
	}
	if len(gone) > 0 {
		if err := l.unlist(gone); err != nil {
			return nil, err
		}
	}
	return avail, nil
}

// busy reports whether a call in flight carries a part of worker id.
func (l *Leader) busy(id string) bool {
	for p := range l.inflight {
		if p.worker == id {
			return true
		}
	}
	return false
}

// unlist removes dead, fully delivered workers (their outboxes already emptied)
// and empties their acks (shared data has no delete: an empty value is the
// smallest that can be left).
func (l *Leader) unlist(ids []string) error {
	err := update(l.s, KeyWorkers, nil, func(v []byte) ([]byte, bool, error) {
		ws, err := ParseWorkers(v)
		if err != nil {
			return nil, false, err
		}
		keep := ws[:0:0]
		for _, id := range ws {
			dead := false
			for _, g := range ids {
				dead = dead || g == id
			}
			if !dead {
				keep = append(keep, id)
			}
		}
		return AppendWorkers(nil, keep), len(keep) != len(ws), nil
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		err := update(l.s, AckKey(id), nil, func([]byte) ([]byte, bool, error) { return nil, true, nil })
		if err != nil {
			return err
		}
	}
	return nil
}

// Sent records that call id carries parts.
func (l *Leader) Sent(id uint64, parts []Part) {
	l.calls[id] = append(l.calls[id], parts...)
	for _, p := range parts {
		l.inflight[partID{p.Worker, p.Key, p.Gen}] += p.N
	}
}

// Settled ends call id's parts for key: delivered ones become acks (written by
// WriteAcks), others are available again at the next Collect.
func (l *Leader) Settled(id uint64, key string, delivered bool) {
	parts := l.calls[id]
	rest := parts[:0]
	for _, p := range parts {
		if p.Key != key {
			rest = append(rest, p)
			continue
		}
		pid := partID{p.Worker, p.Key, p.Gen}
		if l.inflight[pid] -= min(p.N, l.inflight[pid]); l.inflight[pid] == 0 {
			delete(l.inflight, pid)
		}
		if delivered {
			d := l.deltas[p.Worker]
			if d == nil {
				d = map[string]Cum{}
				l.deltas[p.Worker] = d
			}
			c := d[p.Key]
			if c.Gen != p.Gen {
				c = Cum{Gen: p.Gen}
			}
			c.N += p.N
			d[p.Key] = c
		}
	}
	if len(rest) == 0 {
		delete(l.calls, id)
	} else {
		l.calls[id] = rest
	}
}

// InFlight returns the number of calls with parts in flight.
func (l *Leader) InFlight() int { return len(l.calls) }

// Pending reports whether deliveries wait to be written to the acks.
func (l *Leader) Pending() bool { return len(l.deltas) > 0 }

// WriteAcks writes the acks of delivered parts, merging them into each worker's
// acks by compare-and-swap. What cannot be written now stays for the next call.
func (l *Leader) WriteAcks() error {
	var errs []error
	for w, d := range l.deltas {
		err := update(l.s, AckKey(w), []byte("v1\n"), func(v []byte) ([]byte, bool, error) {
			acks, err := ParseAcks(v)
			if err != nil {
				acks = Acks{}
			}
			for k, c := range d {
				cur, ok := acks[k]
				switch {
				case !ok || cur.Gen < c.Gen:
					acks[k] = Ack{Gen: c.Gen, Delivered: c.N}
				case cur.Gen == c.Gen:
					cur.Delivered += c.N
					acks[k] = cur
				}
			}
			return AppendAcks(nil, acks), true, nil
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		delete(l.deltas, w)
	}
	return errors.Join(errs...)
}

// Snapshot returns a copy of the worker's outbox as it holds it (published or not).
func (w *Worker) Snapshot() Outbox {
	o := w.out
	o.Entries = make(map[string]Cum, len(w.out.Entries))
	for k, c := range w.out.Entries {
		o.Entries[k] = c
	}
	return o
}

// Published returns a copy of the outbox entries as last written.
func (w *Worker) Published() map[string]Cum {
	out := make(map[string]Cum, len(w.published))
	for k, c := range w.published {
		out[k] = c
	}
	return out
}

// CallParts returns the parts call id carries (for tests and logs).
func (l *Leader) CallParts(id uint64) []Part { return append([]Part(nil), l.calls[id]...) }
