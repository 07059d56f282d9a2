package merge

import (
	"errors"
	"fmt"
	"strconv"
)

// Worker is one worker's side of the merge: its outbox (in shards), its place
// in the list of workers, the lease and wake-up claims. Not safe for concurrent
// use (one per VM).
//
// A tick's calls (Publish, Lead) allocate nothing once the worker's buffers
// have grown to its values' sizes, but for what is new: a key's first entry in
// its shard, a shard's first use.
type Worker struct {
	ID string
	s  Store
	// shards are the outbox shards, each made at its first key: a worker of
	// few keys holds few.
	shards []*shard
	// MaxKeys bounds the outbox: a new key beyond it stays in the worker's table.
	MaxKeys int
	// LeaseMs is how long a lease lasts without renewal.
	LeaseMs int64
	keys    int   // entries over all shards
	beatMs  int64 // last heartbeat written
	names   *names
	// Reused from tick to tick: the value written, the acks read.
	buf  []byte
	acks []ackLine
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
	n = max(n, 1)
	return &Worker{ID: id, s: s, MaxKeys: maxKeys, LeaseMs: leaseMs, shards: make([]*shard, n), names: newNames(id, n)}
}

// Shards returns the number of outbox shards.
func (w *Worker) Shards() int { return len(w.shards) }

// Add moves n requests for key into its outbox shard (written by Publish). It
// returns false, taking nothing, when the outbox holds MaxKeys other keys; n 0
// takes nothing either (an entry holds at least one request).
func (w *Worker) Add(key string, n uint64) bool {
	if n == 0 {
		return true
	}
	h := keyHash(key)
	sh, e := w.shards[h%uint32(len(w.shards))], -1 // ShardOf's shard
	if sh != nil {
		e = sh.find(key, h)
	}
	if !sh.holds(e) {
		if w.keys >= w.MaxKeys {
			return false
		}
		w.keys++
	}
	if sh == nil {
		sh = &shard{}
		w.shards[h%uint32(len(w.shards))] = sh
	}
	sh.add(key, e, n)
	return true
}

// Unsettled returns what the outbox holds that is neither delivered nor reserved
// by another lease holder at nowMs (who will deliver it): what a worker that is
// shutting down must still see delivered itself.
func (w *Worker) Unsettled(nowMs int64) (uint64, error) {
	return w.sumUndelivered(func(a *ackLine) bool {
		h := a.holder()
		return len(h) > 0 && string(h) != w.ID && nowMs < a.untilMs
	})
}

// Undelivered returns what the outbox holds that its acks do not cover.
func (w *Worker) Undelivered() (uint64, error) {
	return w.sumUndelivered(func(*ackLine) bool { return false })
}

// sumUndelivered sums what the outbox holds that its acks do not cover, but for
// the entries whose ack (of their generation) settled says another will.
func (w *Worker) sumUndelivered(settled func(*ackLine) bool) (uint64, error) {
	var n uint64
	for i, sh := range w.shards {
		if sh == nil {
			continue
		}
		v, _, ok, err := w.s.Get(w.names.ackKey(i))
		if err != nil {
			return 0, err
		}
		w.acks = w.acks[:0]
		if ok {
			if w.acks, err = parseAckLines(w.acks, v); err != nil {
				return 0, err
			}
		}
		for j := range sh.ents {
			e := &sh.ents[j]
			if e.n == 0 {
				continue
			}
			a := findAck(w.acks, string(sh.key(j)), e.gen)
			if a != nil && settled(a) {
				continue
			}
			n += e.n - a.covers(e.n)
		}
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
		w.buf = strconv.AppendInt(w.buf[:0], nowMs, 10)
		if err := w.s.Set(w.names.beat, w.buf, 0); err != nil {
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

// publishShard publishes shard i; a shard that never held a key has nothing to
// publish, nor anything a holder could have delivered or emptied.
func (w *Worker) publishShard(i int, nowMs int64) error {
	sh := w.shards[i]
	if sh == nil {
		return nil
	}
	av, _, ok, err := w.s.Get(w.names.ackKey(i))
	if err != nil {
		return err
	}
	if ok {
		if w.acks, err = parseAckLines(w.acks, av); err != nil {
			return err
		}
		w.keys -= sh.trim(w.acks)
	}
	for try := 0; ; try++ {
		v, cas, ok, err := w.s.Get(w.names.outKey(i))
		if err != nil {
			return fmt.Errorf("publish outbox: %w", err)
		}
		if ok && len(v) == 0 && sh.written {
			w.forgetPublished(sh)
		}
		sh.compact()
		if !sh.dirty {
			return nil
		}
		w.buf = sh.appendTo(w.buf[:0], nowMs)
		// With the CAS read above: a holder may empty the shard meanwhile
		// (all it held delivered; the worker taken for dead). Invariant: a
		// worker never writes over an emptied shard what was delivered; the
		// write fails, and the next read drops it (forgetPublished).
		// TestPublishRacesEmptying fails without it.
		err = w.s.Set(w.names.outKey(i), w.buf, cas)
		if err == nil {
			sh.dirty = false
			sh.written = true
			for j := range sh.ents {
				sh.ents[j].pub = sh.ents[j].n
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
	for i := range sh.ents {
		e := &sh.ents[i]
		if e.n == 0 || e.pub == 0 {
			continue
		}
		if e.n -= min(e.pub, e.n); e.n == 0 {
			sh.drop(i)
			w.keys--
			continue
		}
		sh.nextGen++
		e.gen, e.pub = sh.nextGen, 0
	}
	sh.dirty = true
}

// list puts the worker on the list of workers if it is not there (checked on
// every publish: a list created by two workers at once keeps only one of them).
func (w *Worker) list() error {
	me := w.names.entry
	return update(w.s, KeyWorkers, emptyList, func(v []byte) ([]byte, bool, error) {
		rest, err := workersBody(v)
		if err != nil {
			return nil, false, err
		}
		w.buf = append(w.buf[:0], "v1"...)
		for f, rest := nextField(rest); len(f) > 0; f, rest = nextField(rest) {
			if string(f) == me {
				return nil, false, nil
			}
			w.buf = append(append(w.buf, ' '), f...)
		}
		w.buf = append(append(w.buf, ' '), me...)
		return w.buf, true, nil
	})
}

// The values a key is created with when missing: a list of no workers, a free
// lease, no acks. Create copies them.
var (
	emptyList     = []byte("v1")
	releasedLease = AppendLease(nil, Lease{Released: true})
	noAcks        = []byte("v1\n")
)

// Lead takes or renews the lease at nowMs and reports whether this worker holds
// it: only the holder sends regular reports.
func (w *Worker) Lead(nowMs int64) (bool, error) {
	err := update(w.s, KeyLease, releasedLease, func(v []byte) ([]byte, bool, error) {
		l, err := parseLease(v)
		if err != nil {
			return nil, false, err
		}
		if string(l.holder) != w.ID && !l.free(nowMs) {
			return nil, false, nil
		}
		w.buf = appendLease(w.buf[:0], w.ID, nowMs+w.LeaseMs, false)
		return w.buf, true, nil
	})
	if err != nil {
		return false, err
	}
	v, _, ok, err := w.s.Get(KeyLease)
	if err != nil || !ok {
		return false, err
	}
	l, err := parseLease(v)
	return err == nil && string(l.holder) == w.ID && !l.released, err
}

// Release gives the lease up, if this worker holds it, so that another takes over
// at once (at shutdown).
func (w *Worker) Release() error {
	return update(w.s, KeyLease, nil, func(v []byte) ([]byte, bool, error) {
		l, err := parseLease(v)
		if err != nil || string(l.holder) != w.ID {
			return nil, false, err
		}
		w.buf = appendLease(w.buf[:0], w.ID, l.expiryMs, true)
		return w.buf, true, nil
	})
}
