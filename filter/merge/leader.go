package merge

import (
	"bytes"
	"errors"
	"strconv"
)

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
//
// A tick's calls (CollectParts, Sent, Settled, WriteAcks) allocate nothing once
// its buffers have grown to the values' sizes, but a string for each key handed
// out (Part.Key) and what is new (a worker listed, more calls in flight than
// before).
type Leader struct {
	// KeyString, if set, returns a string it already holds equal to key,
	// or false: Part.Key is then that string rather than a new one, so that
	// a collect of keys the caller holds allocates no key (package main
	// looks them up in its tables). A string that is not equal to key is
	// not used.
	KeyString func(key []byte) (string, bool)

	s        Store
	id       string
	idb      []byte // id, as written in acks
	inflight map[partID]uint64
	calls    map[uint64][]flight
	// takenOver sums what was handed out from other holders' expired
	// reservations (TakenOver).
	takenOver uint64
	// reservedIn maps the acks keys this holder wrote reservations into to
	// their worker's id (Unreserve).
	reservedIn map[string]string
	// spare are the part slices of settled calls, for Sent to reuse.
	spare [][]flight
	// deltas are deliveries not yet written (Settled, in order), written by
	// WriteAcks.
	deltas []delta
	// WriteAcks' scratch: one acks value's deliveries, those not written, the
	// sums per line and of keys without a line.
	group, failed []delta
	sums, extra   []ackSum
	// workers are the key names of the workers listed at the last Collect;
	// own those of the leader's own outbox (CollectOwn).
	workers []*names
	own     *names
	// Reused from call to call: the parts Collect hands out, the values read and
	// written.
	parts []Part
	outs  []cumLine
	acks  []ackLine
	buf   []byte
}

// flight is a part in flight, with its key's hash (keyHash: a call's parts for
// a key are found without comparing every key).
type flight struct {
	Part
	hash uint32
}

// delta is a delivered part, to be acked.
type delta struct {
	worker string
	shard  int
	key    string
	gen    uint32
	n      uint64
}

// maxSpare bounds the slices kept for reuse.
const maxSpare = 256

// NewLeader returns the lease-holder side of worker id over s.
func NewLeader(s Store, id string) *Leader {
	return &Leader{s: s, id: id, idb: []byte(id)}
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
	parts, err := l.CollectParts(l.parts[:0], slice, slices, nowMs, deadMs, holdMs)
	if err != nil {
		return nil, err
	}
	return l.byKey(parts), nil
}

// CollectParts is Collect appending the parts to dst, in no particular order
// (a key may have a part from each worker): it allocates nothing but the parts'
// keys once dst and the Leader's buffers have grown. On an error it returns dst
// as it was.
func (l *Leader) CollectParts(dst []Part, slice, slices int, nowMs, deadMs, holdMs int64) ([]Part, error) {
	if err := l.WriteAcks(); err != nil {
		return dst, err
	}
	v, _, ok, err := l.s.Get(KeyWorkers)
	if err != nil || !ok {
		return dst, err
	}
	rest, err := workersBody(v)
	if err != nil {
		return dst, err
	}
	for _, n := range l.workers {
		n.seen = false
	}
	had := len(dst)
	var gone []string
	for f, rest := nextField(rest); len(f) > 0; f, rest = nextField(rest) {
		n := l.names(f)
		if n == nil {
			continue
		}
		n.seen = true
		if slice == 0 && !l.busy(n.id) {
			dead, err := l.dead(n, nowMs, deadMs)
			if err != nil {
				return dst[:had], err
			}
			if dead {
				gone = append(gone, n.entry)
				continue
			}
		}
		for j := slice; j < n.shards; j += slices {
			if dst, err = l.collectShard(dst, n, j, nowMs, holdMs); err != nil {
				return dst[:had], err
			}
		}
	}
	l.forgetUnlisted()
	if len(gone) > 0 {
		if err := l.unlist(gone); err != nil {
			return dst[:had], err
		}
	}
	return dst, nil
}

// names returns the key names of the worker of list entry e (nil if e is not
// one), made the first time it is listed.
func (l *Leader) names(e []byte) *names {
	for _, n := range l.workers {
		if n.entry == string(e) {
			return n
		}
	}
	id, shards, ok := parseWorkerEntry(e)
	if !ok {
		return nil
	}
	n := newNames(string(id), shards)
	l.workers = append(l.workers, n)
	return n
}

// forgetUnlisted drops the names of workers no longer listed.
func (l *Leader) forgetUnlisted() {
	kept := l.workers[:0]
	for _, n := range l.workers {
		if n.seen {
			kept = append(kept, n)
		}
	}
	clear(l.workers[len(kept):])
	l.workers = kept
}

// ackKey names the acks of shard j of worker id, with the names of a listed
// worker.
func (l *Leader) ackKey(id string, j int) string {
	for _, n := range l.workers {
		if n.id == id && j < n.shards {
			return n.ackKey(j)
		}
	}
	return AckKey(id, j)
}

// CollectOwn is Collect restricted to the leader's own outbox, every shard: a
// worker shutting down without the lease reserves and sends what no holder has
// reserved. The reservations keep it from sending what a holder may send.
func (l *Leader) CollectOwn(shards int, nowMs, holdMs int64) (map[string][]Part, error) {
	parts, err := l.CollectOwnParts(l.parts[:0], shards, nowMs, holdMs)
	if err != nil {
		return nil, err
	}
	return l.byKey(parts), nil
}

// CollectOwnParts is CollectOwn appending the parts to dst, as CollectParts.
func (l *Leader) CollectOwnParts(dst []Part, shards int, nowMs, holdMs int64) ([]Part, error) {
	if err := l.WriteAcks(); err != nil {
		return dst, err
	}
	had := len(dst)
	if l.own == nil || l.own.shards != shards {
		l.own = newNames(l.id, shards)
	}
	n := l.own
	for j := 0; j < shards; j++ {
		var err error
		if dst, err = l.collectShard(dst, n, j, nowMs, holdMs); err != nil {
			return dst[:had], err
		}
	}
	return dst, nil
}

// byKey returns parts by key; parts becomes the Leader's scratch.
func (l *Leader) byKey(parts []Part) map[string][]Part {
	avail := map[string][]Part{}
	for _, p := range parts {
		avail[p.Key] = append(avail[p.Key], p)
	}
	clear(parts)
	l.parts = parts[:0]
	return avail
}

// collectShard reserves and hands out shard j of worker n: it reads the outbox
// and its acks, walks both in key order, and writes the acks back if they
// changed. The parts are appended to dst only once the acks are written.
//
// For each key of the outbox, with its ack (if any):
//   - an ack of a newer generation than the outbox read hands nothing out (the
//     worker wrote a newer outbox since: next time);
//   - an ack of an older generation, or none, is replaced by one of the
//     outbox's generation, nothing delivered;
//   - what is left undelivered, unless another holder's reservation still runs,
//     is reserved by this holder until nowMs+holdMs (renewed once less than
//     holdMs/2 is left: a call sent now is covered for more than holdMs/2,
//     longer than its timeout, whatever happens to the lease; and the acks are
//     not rewritten on every collect), and handed out less what is in flight.
//
// Acks of keys the outbox read does not hold at their generation are dropped
// (the worker dropped or renewed the entry), but only those of generations the
// outbox read knows: the worker may have written a newer outbox since, whose
// entries the acks may already cover.
func (l *Leader) collectShard(dst []Part, n *names, j int, nowMs, holdMs int64) ([]Part, error) {
	// The acks first, then the outbox. Between two reads the worker may trim
	// an entry its acks show delivered, and another holder then drop that
	// ack line (its outbox no longer holds the key): read in the other order,
	// the outbox would still hold the entry and the acks no longer cover it,
	// and the whole entry would be handed out again. Read acks-first, an ack
	// line that goes missing later only concerns an entry the outbox read
	// already lacks, and any change to the acks fails this collect's write
	// (its CAS). TestCollectTrimBetweenReads breaks without it.
	av, acas, _, err := l.s.Get(n.ackKey(j))
	if err != nil {
		return dst, err
	}
	ov, _, ok, err := l.s.Get(n.outKey(j))
	if err != nil || !ok || len(ov) == 0 {
		return dst, err
	}
	_, nextGen, outs, err := parseCumLines(l.outs, ov)
	l.outs = outs
	if err != nil {
		return dst, nil // a value this version cannot read: left alone
	}
	acks, err := parseAckLines(l.acks, av)
	l.acks = acks
	if err != nil {
		acks = acks[:0] // unreadable: replaced
	}
	had := len(dst)
	changed := false
	var takenOver uint64
	reserved := false
	buf := append(l.buf[:0], "v1\n"...)
	oi, ai := 0, 0
	for oi < len(outs) || ai < len(acks) {
		var c *cumLine
		var a *ackLine
		switch {
		case ai == len(acks):
			c = &outs[oi]
		case oi == len(outs):
			a = &acks[ai]
		default:
			switch cmp := bytes.Compare(outs[oi].key, acks[ai].key()); {
			case cmp < 0:
				c = &outs[oi]
			case cmp > 0:
				a = &acks[ai]
			default:
				c, a = &outs[oi], &acks[ai]
			}
		}
		if c != nil {
			oi++
		}
		if a != nil {
			ai++
		}
		if c == nil || a != nil && a.gen > c.gen {
			// An ack the outbox read does not hold, or holds at another
			// generation: dropped, unless newer than the outbox read.
			if a.gen <= nextGen {
				changed = true
				continue
			}
			buf = a.appendLine(buf)
			continue
		}
		if a == nil || a.gen < c.gen {
			// None of the outbox's generation: a new one, nothing delivered,
			// replacing an older one.
			changed = true
			if c.n == 0 { // nothing to reserve: the older ack stays if newer than the outbox read
				if a != nil && a.gen > nextGen {
					buf = a.appendLine(buf)
				}
				continue
			}
			buf = appendAckTail(append(buf, c.key...), c.gen, 0, l.idb, nowMs+holdMs)
			reserved = true
			dst = l.handOut(dst, n, j, c, c.n)
			continue
		}
		// The ack of the outbox's generation.
		left := c.n - min(a.delivered, c.n)
		holder := a.holder()
		if left == 0 || (string(holder) != l.id && len(holder) > 0 && nowMs < a.untilMs) {
			// Delivered, or reserved by another holder who may have it in
			// flight: left as it is. Invariant: what a live reservation
			// covers is handed out by its holder only (TestMergeExact fails
			// on 4 of its 60 seeds without it, TestTakenOver too).
			buf = a.appendLine(buf)
			continue
		}
		if string(holder) != l.id || a.untilMs < nowMs+holdMs/2 {
			buf = a.appendReserved(buf, l.idb, nowMs+holdMs)
			changed = true
			reserved = true
		} else {
			buf = a.appendLine(buf)
		}
		if len(holder) > 0 && string(holder) != l.id {
			// Another holder's reservation that ran out (a live one was
			// left alone above): its acks never came.
			takenOver += left
		}
		dst = l.handOut(dst, n, j, c, left)
	}
	l.buf = buf
	if changed {
		// Reserved only if no other holder wrote meanwhile: else next interval.
		if err := l.s.Set(n.ackKey(j), buf, acas); err != nil {
			clear(dst[had:])
			if errors.Is(err, ErrCasMismatch) {
				return dst[:had], nil
			}
			return dst[:had], err
		}
	}
	l.takenOver += takenOver
	if reserved {
		if l.reservedIn == nil {
			l.reservedIn = map[string]string{}
		}
		if _, ok := l.reservedIn[n.ackKey(j)]; !ok {
			l.reservedIn[n.ackKey(j)] = n.id
		}
	}
	return dst, nil
}

// Unreserve gives up this holder's reservations of what it has not in
// flight, so that the next holder sends those counts at once rather than
// once the reservations run out (and does not count them as taken over:
// TestUnreserve). A holder that let the lease go calls it at each tick of
// its shutdown; the parts it has in flight stay reserved until it settles
// them. What cannot be written now is tried at the next call.
func (l *Leader) Unreserve() error {
	var errs []error
	for key, worker := range l.reservedIn {
		kept := false
		err := update(l.s, key, nil, func(v []byte) ([]byte, bool, error) {
			acks, err := parseAckLines(l.acks, v)
			l.acks = acks
			if err != nil {
				return nil, false, nil // unreadable: a holder replaces it
			}
			kept = false
			changed := false
			buf := append(l.buf[:0], "v1\n"...)
			for i := range acks {
				a := &acks[i]
				if string(a.holder()) != l.id {
					buf = a.appendLine(buf)
					continue
				}
				if l.inflight[partID{worker, string(a.key()), a.gen}] > 0 {
					kept = true
					buf = a.appendLine(buf)
					continue
				}
				buf = a.appendReserved(buf, noHolder, 0)
				changed = true
			}
			l.buf = buf
			return buf, changed, nil
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !kept {
			delete(l.reservedIn, key)
		}
	}
	return errors.Join(errs...)
}

// noHolder is an ack line's holder field when nobody reserved it.
var noHolder = []byte("-")

// TakenOver returns the requests this Leader has handed out from another
// holder's reservation that ran out: that holder's VM died (or stalled past
// holdMs) before it acked them. What it had sent of them and the collector
// accepted is delivered again: the one case of at-least-once, and this is
// its upper bound (some of them it may never have sent).
func (l *Leader) TakenOver() uint64 { return l.takenOver }

// handOut appends the part of outbox line c that is left, less what is in
// flight, if any. Invariant: a count is in at most one call at a time; the
// merged flusher also skips a key in flight, so only a drain's resend would
// send it twice without this (the scenario "aggregate/envoy: shutdown reports
// what was counted and waits" fails without it).
func (l *Leader) handOut(dst []Part, n *names, j int, c *cumLine, left uint64) []Part {
	key := l.keyString(c.key)
	if len(l.inflight) > 0 {
		left -= min(l.inflight[partID{n.id, key, c.gen}], left)
	}
	if left == 0 {
		return dst
	}
	return append(dst, Part{Worker: n.id, Shard: j, Key: key, Gen: c.gen, N: left})
}

// keyString returns key as a string: KeyString's, if it has one equal to
// key, else a new one.
func (l *Leader) keyString(key []byte) string {
	if l.KeyString != nil {
		if s, ok := l.KeyString(key); ok && s == string(key) {
			return s
		}
	}
	return string(key)
}

// dead reports whether worker n stopped beating more than deadMs ago with
// everything delivered; if so its shards are emptied (each only if unchanged
// since read: a worker alive after all has written a newer one, and stays).
func (l *Leader) dead(n *names, nowMs, deadMs int64) (bool, error) {
	hv, _, ok, err := l.s.Get(n.beat)
	if err != nil {
		return false, err
	}
	if ok {
		if beat, err := strconv.ParseInt(string(hv), 10, 64); err == nil && nowMs-beat <= deadMs {
			return false, nil
		}
	}
	cas := make([]uint32, n.shards)
	for j := 0; j < n.shards; j++ {
		ov, c, ok, err := l.s.Get(n.outKey(j))
		if err != nil {
			return false, err
		}
		cas[j] = c
		if !ok || len(ov) == 0 {
			continue
		}
		if _, _, l.outs, err = parseCumLines(l.outs, ov); err != nil {
			return false, nil
		}
		av, _, _, err := l.s.Get(n.ackKey(j))
		if err != nil {
			return false, err
		}
		if l.acks, err = parseAckLines(l.acks, av); err != nil {
			return false, err
		}
		for _, c := range l.outs {
			if c.n > findAck(l.acks, string(c.key), c.gen).covers(c.n) {
				return false, nil
			}
		}
	}
	for j := 0; j < n.shards; j++ {
		if cas[j] == 0 {
			continue
		}
		if err := l.s.Set(n.outKey(j), nil, cas[j]); err != nil {
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
		rest, err := workersBody(v)
		if err != nil {
			return nil, false, err
		}
		l.buf = append(l.buf[:0], "v1"...)
		removed := false
		for f, rest := nextField(rest); len(f) > 0; f, rest = nextField(rest) {
			dead := false
			for _, g := range ids {
				dead = dead || g == string(f)
			}
			if dead {
				removed = true
				continue
			}
			l.buf = append(append(l.buf, ' '), f...)
		}
		return l.buf, removed, nil
	})
	if err != nil {
		return err
	}
	empty := func([]byte) ([]byte, bool, error) { return nil, true, nil }
	for _, entry := range ids {
		id, n, _ := parseWorkerEntry([]byte(entry))
		for j := 0; j < n; j++ {
			if err := update(l.s, AckKey(string(id), j), nil, empty); err != nil {
				return err
			}
		}
		if err := update(l.s, heartbeatKey(string(id)), nil, empty); err != nil {
			return err
		}
	}
	return nil
}

// Sent records that call id carries parts.
func (l *Leader) Sent(id uint64, parts []Part) {
	if l.calls == nil { // made at the first call: a worker that never leads has none
		l.calls, l.inflight = map[uint64][]flight{}, map[partID]uint64{}
	}
	c, ok := l.calls[id]
	if !ok && len(l.spare) > 0 {
		c = l.spare[len(l.spare)-1]
		l.spare = l.spare[:len(l.spare)-1]
	}
	for _, p := range parts {
		c = append(c, flight{Part: p, hash: keyHash(p.Key)})
		l.inflight[partID{p.Worker, p.Key, p.Gen}] += p.N
	}
	l.calls[id] = c
}

// Settled ends call id's parts for key: delivered ones become acks (written by
// WriteAcks), others are available again at the next Collect.
func (l *Leader) Settled(id uint64, key string, delivered bool) {
	c, ok := l.calls[id]
	if !ok {
		return
	}
	h := keyHash(key)
	for i := 0; i < len(c); i++ {
		if c[i].hash != h || c[i].Key != key {
			continue
		}
		p := c[i].Part
		pid := partID{p.Worker, p.Key, p.Gen}
		if l.inflight[pid] -= min(p.N, l.inflight[pid]); l.inflight[pid] == 0 {
			delete(l.inflight, pid)
		}
		if delivered {
			l.deltas = append(l.deltas, delta{worker: p.Worker, shard: p.Shard, key: p.Key, gen: p.Gen, n: p.N})
		}
		// The call's other parts stay, in any order: the last one moves here.
		last := len(c) - 1
		c[i], c[last] = c[last], flight{}
		c = c[:last]
		i--
	}
	if len(c) > 0 {
		l.calls[id] = c
		return
	}
	delete(l.calls, id)
	if cap(c) > 0 && len(l.spare) < maxSpare {
		l.spare = append(l.spare, c)
	}
}

// WriteAcks writes the acks of delivered parts, merging them into each worker's
// acks by compare-and-swap. What cannot be written now stays for the next call.
func (l *Leader) WriteAcks() error {
	var errs []error
	// One acks value at a time: the deliveries of the first worker and shard
	// left, in the order they came.
	for len(l.deltas) > 0 {
		worker, shard := l.deltas[0].worker, l.deltas[0].shard
		group, rest := l.group[:0], l.deltas[:0]
		for _, d := range l.deltas {
			if d.worker == worker && d.shard == shard {
				group = append(group, d)
			} else {
				rest = append(rest, d)
			}
		}
		clear(l.deltas[len(rest):])
		l.deltas, l.group = rest, group
		err := update(l.s, l.ackKey(worker, shard), noAcks, func(v []byte) ([]byte, bool, error) {
			return l.mergeAcks(v, group), true, nil
		})
		if err != nil {
			errs = append(errs, err)
			l.failed = append(l.failed, group...)
		}
		clear(group)
	}
	// What failed waits for the next call.
	l.deltas = append(l.deltas, l.failed...)
	clear(l.failed)
	l.failed = l.failed[:0]
	return errors.Join(errs...)
}

// mergeAcks returns acks value v with the deliveries ds (of its worker and
// shard, in the order they came) added. A key's deliveries add up, a later
// generation replacing an earlier one; then a sum of a newer generation than
// the key's ack replaces the ack, one of the same adds to it, an older one is
// ignored. An unreadable v is replaced. The deliveries are not sorted (a sort
// of them cost more than the rest in the guest).
func (l *Leader) mergeAcks(v []byte, ds []delta) []byte {
	acks, err := parseAckLines(l.acks, v)
	l.acks = acks
	if err != nil {
		acks = acks[:0]
	}
	// sums[i] is what the deliveries add to acks[i] (found by binary search:
	// the lines are sorted); those of keys without an ack are in extra.
	sums := l.sums[:0]
	for range acks {
		sums = append(sums, ackSum{})
	}
	extra := l.extra[:0]
	for _, d := range ds {
		var sum *ackSum
		if i := searchAcks(acks, d.key); i < len(acks) && string(acks[i].key()) == d.key {
			sum = &sums[i]
		}
		for i := 0; sum == nil && i < len(extra); i++ {
			if extra[i].key == d.key {
				sum = &extra[i]
			}
		}
		if sum == nil {
			extra = append(extra, ackSum{key: d.key})
			sum = &extra[len(extra)-1]
		}
		if !sum.set || sum.gen != d.gen {
			sum.gen, sum.n, sum.set = d.gen, 0, true
		}
		sum.n += d.n
	}
	for i := 1; i < len(extra); i++ { // rarely more than one: an insertion sort
		for j := i; j > 0 && extra[j-1].key > extra[j].key; j-- {
			extra[j-1], extra[j] = extra[j], extra[j-1]
		}
	}
	buf := append(l.buf[:0], "v1\n"...)
	ei := 0
	for i := range acks {
		a := &acks[i]
		for ; ei < len(extra) && compareKey(a.key(), extra[ei].key) > 0; ei++ {
			buf = appendAckTail(append(buf, extra[ei].key...), extra[ei].gen, extra[ei].n, nil, 0)
		}
		switch sum := sums[i]; {
		case !sum.set || a.gen > sum.gen:
			buf = a.appendLine(buf)
		case a.gen == sum.gen:
			buf = a.appendDelivered(buf, a.delivered+sum.n)
		default:
			buf = appendAckTail(append(buf, a.key()...), sum.gen, sum.n, nil, 0)
		}
	}
	for ; ei < len(extra); ei++ {
		buf = appendAckTail(append(buf, extra[ei].key...), extra[ei].gen, extra[ei].n, nil, 0)
	}
	clear(extra)
	l.sums, l.extra, l.buf = sums, extra[:0], buf
	return buf
}

// ackSum is what the deliveries of one key add up to (set once one did).
type ackSum struct {
	key string
	gen uint32
	n   uint64
	set bool
}

// keyHash is FNV-1a, over a key held or read.
func keyHash[K []byte | string](k K) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(k); i++ {
		h ^= uint32(k[i])
		h *= 16777619
	}
	return h
}

// searchAcks returns the index of the first of acks (sorted by key) whose key
// is not less than key.
func searchAcks(acks []ackLine, key string) int {
	lo, hi := 0, len(acks)
	for lo < hi {
		if m := int(uint(lo+hi) >> 1); compareKey(acks[m].key(), key) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// findAck returns the ack of key in acks (sorted by key) if it is of generation
// gen, or nil.
func findAck(acks []ackLine, key string, gen uint32) *ackLine {
	if i := searchAcks(acks, key); i < len(acks) && string(acks[i].key()) == key && acks[i].gen == gen {
		return &acks[i]
	}
	return nil
}

// covers returns how much of an entry of n requests the ack a (of its
// generation, or nil) covers.
func (a *ackLine) covers(n uint64) uint64 {
	if a == nil {
		return 0
	}
	return min(a.delivered, n)
}

// compareKey compares a key read with a key held, without allocating.
func compareKey(b []byte, s string) int {
	n := min(len(b), len(s))
	for i := 0; i < n; i++ {
		if b[i] != s[i] {
			if b[i] < s[i] {
				return -1
			}
			return 1
		}
	}
	return len(b) - len(s)
}
