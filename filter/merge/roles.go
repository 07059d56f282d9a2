package merge

import (
	"errors"
	"fmt"
	"strconv"
)

// casRetries bounds the compare-and-swap loops: another worker winning that many
// times in a row means the next tick tries again.
const casRetries = 8

// Worker is one worker's side of the merge: its outbox (in shards), its place
// in the list of workers, the lease and wake-up claims. Not safe for concurrent
// use (one per VM).
type Worker struct {
	ID     string
	s      Store
	shards []shard
	// MaxKeys bounds the outbox: a new key beyond it stays in the worker's table.
	MaxKeys int
	// LeaseMs is how long a lease lasts without renewal.
	LeaseMs int64
	keys    int   // entries over all shards
	beatMs  int64 // last heartbeat written
	buf     []byte
}

// shard is one outbox shard as this worker holds it.
type shard struct {
	out   Outbox
	dirty bool
	// written is set once the shard was written: from then on each entry's Pub
	// is what the lease holder may have delivered. A holder empties the shards
	// of a worker it takes for dead only once all of them were delivered, so a
	// worker that finds a shard emptied drops exactly that much
	// (forgetPublished).
	written bool
}

// ShardOf returns the outbox shard of key among n: an FNV-1a hash, so that every
// worker puts a key in the same shard.
func ShardOf(key string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}

// NewWorker returns the merge side of worker id, its outbox in n shards (the
// flush interval's slices: a tick publishes one).
func NewWorker(s Store, id string, n, maxKeys int, leaseMs int64) *Worker {
	w := &Worker{ID: id, s: s, MaxKeys: maxKeys, LeaseMs: leaseMs, shards: make([]shard, max(n, 1))}
	for i := range w.shards {
		w.shards[i].out.Entries = map[string]Cum{}
	}
	return w
}

// Shards returns the number of outbox shards.
func (w *Worker) Shards() int { return len(w.shards) }

// Add moves n requests for key into its outbox shard (written by Publish). It
// returns false, taking nothing, when the outbox holds MaxKeys other keys.
func (w *Worker) Add(key string, n uint64) bool {
	sh := &w.shards[ShardOf(key, len(w.shards))]
	if _, ok := sh.out.Entries[key]; !ok {
		if w.keys >= w.MaxKeys {
			return false
		}
		w.keys++
	}
	sh.out.Add(key, n)
	sh.dirty = true
	return true
}

// Unsettled returns what the outbox holds that is neither delivered nor reserved
// by another lease holder at nowMs (who will deliver it): what a worker that is
// shutting down must still see delivered itself.
func (w *Worker) Unsettled(nowMs int64) (uint64, error) {
	var n uint64
	for i := range w.shards {
		acks, err := w.acks(i)
		if err != nil {
			return 0, err
		}
		for k, c := range w.shards[i].out.Entries {
			a := acks[k]
			if a.Gen == c.Gen && a.Holder != "" && a.Holder != w.ID && nowMs < a.UntilMs {
				continue
			}
			n += c.N - acks.Delivered(k, c)
		}
	}
	return n, nil
}

// Undelivered returns what the outbox holds that its acks do not cover.
func (w *Worker) Undelivered() (uint64, error) {
	var n uint64
	for i := range w.shards {
		acks, err := w.acks(i)
		if err != nil {
			return 0, err
		}
		n += w.shards[i].out.Undelivered(acks)
	}
	return n, nil
}

// Publish trims shard i of what was delivered and writes it if it changed;
// writes the heartbeat if it is older than heartbeatMs; and makes sure the worker
// is listed. Until a write succeeds, counts Add took are only in this VM.
func (w *Worker) Publish(i int, nowMs, heartbeatMs int64) error {
	if err := w.publishShard(i, nowMs); err != nil {
		return err
	}
	if nowMs-w.beatMs >= heartbeatMs {
		if err := w.s.Set(heartbeatKey(w.ID), strconv.AppendInt(nil, nowMs, 10), 0); err != nil {
			return fmt.Errorf("heartbeat: %w", err)
		}
		w.beatMs = nowMs
	}
	return w.list()
}

// PublishAll publishes every shard (at shutdown).
func (w *Worker) PublishAll(nowMs, heartbeatMs int64) error {
	var errs []error
	for i := range w.shards {
		errs = append(errs, w.Publish(i, nowMs, heartbeatMs))
	}
	return errors.Join(errs...)
}

func (w *Worker) publishShard(i int, nowMs int64) error {
	sh := &w.shards[i]
	acks, err := w.acks(i)
	if err != nil {
		return err
	}
	if n := sh.out.Trim(acks); n > 0 {
		w.keys -= n
		sh.dirty = true
	}
	for try := 0; ; try++ {
		v, cas, ok, err := w.s.Get(OutboxKey(w.ID, i))
		if err != nil {
			return fmt.Errorf("publish outbox: %w", err)
		}
		if ok && len(v) == 0 && sh.written {
			w.forgetPublished(sh)
		}
		if !sh.dirty {
			return nil
		}
		sh.out.HeartbeatMs = nowMs
		w.buf = AppendOutbox(w.buf[:0], &sh.out)
		// With the CAS read above: a holder may empty the shard meanwhile.
		err = w.s.Set(OutboxKey(w.ID, i), w.buf, cas)
		if err == nil {
			sh.dirty = false
			sh.written = true
			for k, c := range sh.out.Entries {
				if c.Pub != c.N {
					c.Pub = c.N
					sh.out.Entries[k] = c
				}
			}
			return nil
		}
		if !errors.Is(err, ErrCasMismatch) || try == casRetries {
			return fmt.Errorf("publish outbox: %w", err)
		}
	}
}

// forgetPublished drops from a shard what was published before the lease holder
// emptied it (all of it delivered), and gives what is left new generations, so
// that no ack of the old shard can cover it.
func (w *Worker) forgetPublished(sh *shard) {
	for k, c := range sh.out.Entries {
		if c.Pub == 0 {
			continue
		}
		c.N -= min(c.Pub, c.N)
		if c.N == 0 {
			delete(sh.out.Entries, k)
			w.keys--
			continue
		}
		sh.out.NextGen++
		sh.out.Entries[k] = Cum{Gen: sh.out.NextGen, N: c.N}
	}
	sh.dirty = true
}

func (w *Worker) acks(i int) (Acks, error) {
	v, _, ok, err := w.s.Get(AckKey(w.ID, i))
	if err != nil || !ok {
		return Acks{}, err
	}
	return ParseAcks(v)
}

// list puts the worker on the list of workers if it is not there (checked on
// every publish: a list created by two workers at once keeps only one of them).
func (w *Worker) list() error {
	me := workerEntry(w.ID, len(w.shards))
	return update(w.s, KeyWorkers, []byte("v1"), func(v []byte) ([]byte, bool, error) {
		ws, err := ParseWorkers(v)
		if err != nil {
			return nil, false, err
		}
		if ws.Has(me) {
			return nil, false, nil
		}
		return AppendWorkers(nil, append(ws, me)), true, nil
	})
}

// Lead takes or renews the lease at nowMs and reports whether this worker holds
// it: only the holder sends regular reports.
func (w *Worker) Lead(nowMs int64) (bool, error) {
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
	return err == nil && l.Holder == w.ID && !l.Released, err
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
// the key (about the newest max keys are kept, over wakeShards keys).
func ClaimWake(s Store, key string, nowMs, afterMs int64, max int) (bool, error) {
	claimed := false
	k := WakeKey(ShardOf(key, wakeShards))
	max = (max + wakeShards - 1) / wakeShards
	err := update(s, k, []byte("v1\n"), func(v []byte) ([]byte, bool, error) {
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
	Worker string
	Shard  int
	Key    string
	Gen    uint32
	N      uint64
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
	// deltas are deliveries not yet written: ack key (worker, shard) → key →
	// delivered (by generation).
	deltas map[string]map[string]Cum
}

// NewLeader returns the lease-holder side of worker id over s.
func NewLeader(s Store, id string) *Leader {
	return &Leader{s: s, id: id, inflight: map[partID]uint64{}, calls: map[uint64][]Part{}, deltas: map[string]map[string]Cum{}}
}

// Collect reads the outbox shards of every listed worker that belong to slice
// (shard j of a worker with S shards belongs to slice j % slices) and their acks,
// reserves until nowMs + holdMs what is undelivered and not reserved by another
// holder, and returns, per key, the parts reserved and not in flight. holdMs/2
// must exceed the calls' timeout: a holder that loses the lease stops renewing,
// and its calls in flight must be answered before the reservation ends. At slice 0 a
// worker whose heartbeat is older than deadMs and whose outbox is fully delivered
// is unlisted and its keys emptied. Call it only while holding the lease.
func (l *Leader) Collect(slice, slices int, nowMs, deadMs, holdMs int64) (map[string][]Part, error) {
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
	for _, entry := range ws {
		id, n, ok := parseWorkerEntry(entry)
		if !ok {
			continue
		}
		if slice == 0 && !l.busy(id) {
			dead, err := l.dead(id, n, nowMs, deadMs)
			if err != nil {
				return nil, err
			}
			if dead {
				gone = append(gone, entry)
				continue
			}
		}
		for j := slice; j < n; j += slices {
			if err := l.collectShard(id, j, nowMs, holdMs, avail); err != nil {
				return nil, err
			}
		}
	}
	if len(gone) > 0 {
		if err := l.unlist(gone); err != nil {
			return nil, err
		}
	}
	return avail, nil
}

// CollectOwn is Collect restricted to the leader's own outbox, every shard: a
// worker shutting down without the lease reserves and sends what no holder has
// reserved. The reservations keep it from sending what a holder may send.
func (l *Leader) CollectOwn(shards int, nowMs, holdMs int64) (map[string][]Part, error) {
	if err := l.WriteAcks(); err != nil {
		return nil, err
	}
	avail := map[string][]Part{}
	for j := 0; j < shards; j++ {
		if err := l.collectShard(l.id, j, nowMs, holdMs, avail); err != nil {
			return nil, err
		}
	}
	return avail, nil
}

// collectShard reserves and hands out shard j of worker id.
func (l *Leader) collectShard(id string, j int, nowMs, holdMs int64, avail map[string][]Part) error {
	ov, _, ok, err := l.s.Get(OutboxKey(id, j))
	if err != nil || !ok || len(ov) == 0 {
		return err
	}
	out, err := ParseOutbox(ov)
	if err != nil {
		return nil // a value this version cannot read: left alone
	}
	av, acas, _, err := l.s.Get(AckKey(id, j))
	if err != nil {
		return err
	}
	acks, err := ParseAcks(av)
	if err != nil {
		acks = Acks{}
	}
	changed := false
	var parts []Part
	for k, c := range out.Entries {
		a, ok := acks[k]
		switch {
		case ok && a.Gen > c.Gen:
			continue // the acks are newer than the outbox read: next time
		case !ok || a.Gen < c.Gen:
			a, changed = Ack{Gen: c.Gen}, true
		}
		left := c.N - min(a.Delivered, c.N)
		if left == 0 {
			continue
		}
		if a.Holder != l.id && a.Holder != "" && nowMs < a.UntilMs {
			continue // reserved by another holder, who may have it in flight
		}
		// Renewed once less than half of holdMs is left, in flight or not: a
		// call sent now is covered for more than holdMs/2, longer than its
		// timeout, whatever happens to the lease; and the acks are not rewritten
		// on every collect.
		if a.Holder != l.id || a.UntilMs < nowMs+holdMs/2 {
			a.Holder, a.UntilMs, changed = l.id, nowMs+holdMs, true
		}
		acks[k] = a
		left -= min(l.inflight[partID{id, k, c.Gen}], left)
		if left > 0 {
			parts = append(parts, Part{Worker: id, Shard: j, Key: k, Gen: c.Gen, N: left})
		}
	}
	// Acks of entries the worker has dropped (or renewed) are no longer needed.
	// Only those of generations the outbox read knows: the worker may have
	// written a newer outbox since, whose entries the acks may already cover.
	for k, a := range acks {
		if c, ok := out.Entries[k]; a.Gen <= out.NextGen && (!ok || c.Gen != a.Gen) {
			delete(acks, k)
			changed = true
		}
	}
	if changed {
		// Reserved only if no other holder wrote meanwhile: else next interval.
		if err := l.s.Set(AckKey(id, j), AppendAcks(nil, acks), acas); err != nil {
			if errors.Is(err, ErrCasMismatch) {
				return nil
			}
			return err
		}
	}
	for _, p := range parts {
		avail[p.Key] = append(avail[p.Key], p)
	}
	return nil
}

// dead reports whether worker id (n shards) stopped beating more than deadMs ago
// with everything delivered; if so its shards are emptied (each only if unchanged
// since read: a worker alive after all has written a newer one, and stays).
func (l *Leader) dead(id string, n int, nowMs, deadMs int64) (bool, error) {
	hv, _, ok, err := l.s.Get(heartbeatKey(id))
	if err != nil {
		return false, err
	}
	if ok {
		if beat, err := strconv.ParseInt(string(hv), 10, 64); err == nil && nowMs-beat <= deadMs {
			return false, nil
		}
	}
	cas := make([]uint32, n)
	for j := 0; j < n; j++ {
		ov, c, ok, err := l.s.Get(OutboxKey(id, j))
		if err != nil {
			return false, err
		}
		cas[j] = c
		if !ok || len(ov) == 0 {
			continue
		}
		out, err := ParseOutbox(ov)
		if err != nil {
			return false, nil
		}
		av, _, _, err := l.s.Get(AckKey(id, j))
		if err != nil {
			return false, err
		}
		acks, err := ParseAcks(av)
		if err != nil || out.Undelivered(acks) > 0 {
			return false, err
		}
	}
	for j := 0; j < n; j++ {
		if cas[j] == 0 {
			continue
		}
		if err := l.s.Set(OutboxKey(id, j), nil, cas[j]); err != nil {
			if errors.Is(err, ErrCasMismatch) {
				return false, nil // it wrote: alive (shards emptied so far it re-fills)
			}
			return false, err
		}
	}
	return true, nil
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

// unlist removes dead, fully delivered workers (list entries; their outboxes
// already emptied) and empties their acks and heartbeats (shared data has no delete: an empty value is the
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
	empty := func([]byte) ([]byte, bool, error) { return nil, true, nil }
	for _, entry := range ids {
		id, n, _ := parseWorkerEntry(entry)
		for j := 0; j < n; j++ {
			if err := update(l.s, AckKey(id, j), nil, empty); err != nil {
				return err
			}
		}
		if err := update(l.s, heartbeatKey(id), nil, empty); err != nil {
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
			ak := AckKey(p.Worker, p.Shard)
			d := l.deltas[ak]
			if d == nil {
				d = map[string]Cum{}
				l.deltas[ak] = d
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

// WriteAcks writes the acks of delivered parts, merging them into each worker's
// acks by compare-and-swap. What cannot be written now stays for the next call.
func (l *Leader) WriteAcks() error {
	var errs []error
	for ak, d := range l.deltas {
		err := update(l.s, ak, []byte("v1\n"), func(v []byte) ([]byte, bool, error) {
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
		delete(l.deltas, ak)
	}
	return errors.Join(errs...)
}
