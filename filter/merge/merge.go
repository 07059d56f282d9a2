// Package merge lets the workers of one Envoy speak with one voice: each worker
// publishes the counts it took into proxy-wasm shared data, and one worker, the
// holder of a lease, reports the sum for all. It is plain Go over a Store (shared
// data's get and compare-and-swap set), tested directly; package main adapts the
// SDK to it.
//
// # Shared data: keys and values
//
// Envoy keeps shared data per process and vm_id, shared by every worker VM, for as
// long as any VM of the vm_id lives (a restarted worker finds it as the others
// left it). It has no delete, no key listing, and no atomic create: a set of a key
// that does not exist always succeeds, whatever CAS it carries (two workers that
// both find a key missing both "create" it, and the later write wins). So every
// key below has a single writer, except the list, the lease and the wake-up times:
// those are created with a CAS no real value carries (a set that fails if the key
// exists; see Create) and then only changed by compare-and-swap. Values are text,
// one record per line.
//
//   - "reqcount.v1.out.<worker>.<shard>" (writer: that worker, by compare-and-swap
//     against a holder emptying it): one shard of its outbox (keys are spread over
//     as many shards as a flush interval has ticks, by an FNV hash of the key, so
//     that a tick publishes and collects a small share). The header
//     "v1 <written unix ms> <next gen>", then a line "<svc.ns> <gen> <cum>" per key:
//     cum is every request the worker counted for the key since the entry was made
//     (generation gen). Counts move from the worker's table into cum at their
//     shard's tick; from then on they are the Envoy's, whatever happens to the
//     worker.
//   - "reqcount.v1.ack.<worker>.<shard>" (writers: lease holders, by
//     compare-and-swap): "v1", then "<svc.ns> <gen> <delivered> <holder> <until
//     unix ms>" per key: how much of that shard's cum the collector has accepted
//     (2xx), and which holder has reserved the rest, until when. A holder sends
//     only what it reserved, and renews its reservations whenever it collects;
//     a reservation outlives a call's timeout, so a holder that lost the lease (its
//     VM stalled, say) still settles its calls in flight before anyone else may
//     send those counts again. A worker drops an outbox entry once it is fully
//     delivered; its next request for the key starts a new generation, so an old
//     ack line never covers new counts.
//   - "reqcount.v1.beat.<worker>" (writer: that worker): its last heartbeat, unix ms.
//   - "reqcount.v1.workers" (CAS): "v1 <worker>/<shards> …", the outboxes the lease
//     holder reads. Each worker checks on every publish that it is listed.
//   - "reqcount.v1.lease" (CAS): "v1 <worker> <expiry unix ms> [released]". The
//     holder renews it every tick; another worker takes it once it expired or was
//     released. Only the holder sends regular reports.
//   - "reqcount.v1.wake.<0..63>" (CAS): "v1", then "<svc.ns> <unix ms>" per key
//     (keys spread over 64 values by hash): the last wake-up any worker sent for
//     the key, the newest about max_keys kept in all; a worker claims a wake-up by
//     a successful swap.
//
// Worker ids are 16 random hex digits, new for every VM start: a restarted worker
// never reuses an outbox, and the old one is delivered by the lease holder like
// any other, then emptied (by compare-and-swap: a worker alive after all keeps
// its newer outbox) and unlisted once its heartbeat stopped; a worker that finds
// a shard emptied drops what it had published there (all of it was delivered).
// So nothing merged is lost when a worker stops or its VM dies, and nothing is
// counted twice by a restart. Calls the lease holder had in flight when its VM
// died are sent again by the next holder (their acks were never written): the one
// case of at-least-once.
package merge

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Key names in shared data.
const (
	KeyWorkers   = "reqcount.v1.workers"
	KeyLease     = "reqcount.v1.lease"
	wakePrefix   = "reqcount.v1.wake."
	outboxPrefix = "reqcount.v1.out."
	ackPrefix    = "reqcount.v1.ack."
	beatPrefix   = "reqcount.v1.beat."
	// wakeShards is how many keys the wake-up times are spread over, so that a
	// claim rewrites a small value.
	wakeShards = 64
)

// OutboxKey names shard i of a worker's outbox.
func OutboxKey(worker string, i int) string { return outboxPrefix + worker + "." + strconv.Itoa(i) }

// AckKey names the acks of shard i of a worker's outbox.
func AckKey(worker string, i int) string { return ackPrefix + worker + "." + strconv.Itoa(i) }

// WakeKey names shard i of the wake-up times.
func WakeKey(i int) string { return wakePrefix + strconv.Itoa(i) }

func heartbeatKey(worker string) string { return beatPrefix + worker }

// workerEntry is a worker's entry in the list: its id and its number of shards.
func workerEntry(id string, shards int) string { return id + "/" + strconv.Itoa(shards) }

func parseWorkerEntry(e string) (id string, shards int, ok bool) {
	id, n, ok := strings.Cut(e, "/")
	if !ok {
		return "", 0, false
	}
	shards, err := strconv.Atoi(n)
	if err != nil || shards < 1 || shards > 1<<16 {
		return "", 0, false
	}
	return id, shards, true
}

// ErrCasMismatch is what Store.Set returns when the key changed since the CAS was
// read.
var ErrCasMismatch = errors.New("shared data: cas mismatch")

// Store is proxy-wasm shared data. Get returns ok false for a key never set. Set
// with cas 0, or of a key that does not exist, succeeds; otherwise the cas must be
// the key's current one (ErrCasMismatch).
type Store interface {
	Get(key string) (value []byte, cas uint32, ok bool, err error)
	Set(key string, value []byte, cas uint32) error
}

// createCAS is the CAS Create sets with: no value carries it (hosts count CAS
// tokens up from 1 and a key's token changes on every write, so for a key to
// carry this one 2^32-1 writes would have to land exactly so), so the set fails
// when the key exists and succeeds when it does not.
const createCAS = ^uint32(0)

// Create sets key to value if it does not exist. It reports whether it did; a key
// that exists is left as it is (not an error).
func Create(s Store, key string, value []byte) (bool, error) {
	err := s.Set(key, value, createCAS)
	if errors.Is(err, ErrCasMismatch) {
		return false, nil
	}
	return err == nil, err
}

// Cum is a count for one key in one generation.
type Cum struct {
	Gen uint32
	N   uint64
	// Pub is N as the worker last wrote it (its own bookkeeping, not encoded):
	// what a lease holder may have delivered.
	Pub uint64
}

// Outbox is one worker's published counts: its own view is the truth (it is the
// only writer). The zero value is empty; use Add.
type Outbox struct {
	HeartbeatMs int64
	NextGen     uint32
	Entries     map[string]Cum
}

// Add moves n counted requests for key into the outbox.
func (o *Outbox) Add(key string, n uint64) {
	if o.Entries == nil {
		o.Entries = map[string]Cum{}
	}
	c, ok := o.Entries[key]
	if !ok {
		o.NextGen++
		c.Gen = o.NextGen
	}
	c.N += n
	o.Entries[key] = c
}

// Undelivered returns the requests in the outbox that acks do not cover.
func (o *Outbox) Undelivered(acks Acks) uint64 {
	var n uint64
	for k, c := range o.Entries {
		n += c.N - acks.Delivered(k, c)
	}
	return n
}

// Trim drops the entries acks says are fully delivered, and reports how many.
func (o *Outbox) Trim(acks Acks) int {
	n := 0
	for k, c := range o.Entries {
		if acks.Delivered(k, c) >= c.N {
			delete(o.Entries, k)
			n++
		}
	}
	return n
}

// Ack is how much of one outbox entry (generation Gen) was delivered, and who
// reserved the rest until when.
type Ack struct {
	Gen       uint32
	Delivered uint64
	Holder    string
	UntilMs   int64
}

// Acks are the acks of one worker's outbox, per key.
type Acks map[string]Ack

// Delivered returns how much of outbox entry c of key the acks cover: none if
// they are for another generation, and never more than c.N.
func (a Acks) Delivered(key string, c Cum) uint64 {
	d, ok := a[key]
	if !ok || d.Gen != c.Gen {
		return 0
	}
	return min(d.Delivered, c.N)
}

// AppendOutbox writes o's encoding to dst, keys sorted.
func AppendOutbox(dst []byte, o *Outbox) []byte {
	dst = fmt.Appendf(dst, "v1 %d %d\n", o.HeartbeatMs, o.NextGen)
	return appendCums(dst, o.Entries)
}

// ParseOutbox reads an outbox. It copies what it keeps: data may be reused.
func ParseOutbox(data []byte) (Outbox, error) {
	head, rest, _ := bytes.Cut(data, []byte("\n"))
	f := strings.Fields(string(head))
	if len(f) != 3 || f[0] != "v1" {
		return Outbox{}, fmt.Errorf("outbox: bad header %q", head)
	}
	hb, err1 := strconv.ParseInt(f[1], 10, 64)
	gen, err2 := strconv.ParseUint(f[2], 10, 32)
	if err1 != nil || err2 != nil {
		return Outbox{}, fmt.Errorf("outbox: bad header %q", head)
	}
	entries, err := parseCums(rest)
	if err != nil {
		return Outbox{}, fmt.Errorf("outbox: %w", err)
	}
	return Outbox{HeartbeatMs: hb, NextGen: uint32(gen), Entries: entries}, nil
}

// AppendAcks writes a's encoding to dst, keys sorted.
func AppendAcks(dst []byte, a Acks) []byte {
	dst = append(dst, "v1\n"...)
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		d := a[k]
		holder := d.Holder
		if holder == "" {
			holder = "-"
		}
		dst = append(dst, k...)
		dst = append(dst, ' ')
		dst = strconv.AppendUint(dst, uint64(d.Gen), 10)
		dst = append(dst, ' ')
		dst = strconv.AppendUint(dst, d.Delivered, 10)
		dst = append(dst, ' ')
		dst = append(dst, holder...)
		dst = append(dst, ' ')
		dst = strconv.AppendInt(dst, d.UntilMs, 10)
		dst = append(dst, '\n')
	}
	return dst
}

// ParseAcks reads acks; an empty value is no acks.
func ParseAcks(data []byte) (Acks, error) {
	if len(data) == 0 {
		return Acks{}, nil
	}
	head, rest, _ := bytes.Cut(data, []byte("\n"))
	if string(head) != "v1" {
		return nil, fmt.Errorf("acks: bad header %q", head)
	}
	a := make(Acks, bytes.Count(rest, []byte("\n")))
	var f [5][]byte
	holders := map[string]string{} // one string per holder, not per line
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		if len(line) == 0 {
			continue
		}
		if !fields(line, f[:]) {
			return nil, fmt.Errorf("acks: bad line %q", line)
		}
		gen, ok1 := parseUint(f[1], 32)
		n, ok2 := parseUint(f[2], 64)
		until, ok3 := parseUint(f[4], 63)
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("acks: bad line %q", line)
		}
		d := Ack{Gen: uint32(gen), Delivered: n, UntilMs: int64(until)}
		if string(f[3]) != "-" {
			h, ok := holders[string(f[3])]
			if !ok {
				h = string(f[3])
				holders[h] = h
			}
			d.Holder = h
		}
		a[string(f[0])] = d
	}
	return a, nil
}

func appendCums(dst []byte, m map[string]Cum) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c := m[k]
		dst = append(dst, k...)
		dst = append(dst, ' ')
		dst = strconv.AppendUint(dst, uint64(c.Gen), 10)
		dst = append(dst, ' ')
		dst = strconv.AppendUint(dst, c.N, 10)
		dst = append(dst, '\n')
	}
	return dst
}

func parseCums(data []byte) (map[string]Cum, error) {
	m := make(map[string]Cum, bytes.Count(data, []byte("\n")))
	var f [3][]byte
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte("\n"))
		if len(line) == 0 {
			continue
		}
		if !fields(line, f[:]) {
			return nil, fmt.Errorf("bad line %q", line)
		}
		gen, ok1 := parseUint(f[1], 32)
		n, ok2 := parseUint(f[2], 64)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("bad line %q", line)
		}
		m[string(f[0])] = Cum{Gen: uint32(gen), N: n}
	}
	return m, nil
}

// fields splits line at single spaces into exactly len(f) non-empty fields,
// without allocating: the parsers run on every tick.
func fields(line []byte, f [][]byte) bool {
	for i := range f {
		var field []byte
		var more bool
		field, line, more = bytes.Cut(line, []byte(" "))
		if len(field) == 0 || (i < len(f)-1) != more {
			return false
		}
		f[i] = field
	}
	return true
}

// parseUint reads a decimal number of at most bits bits, without allocating.
func parseUint(b []byte, bits int) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	if bits < 64 && n >= 1<<bits {
		return 0, false
	}
	return n, true
}

// Workers is the list of workers whose outboxes the lease holder reads.
type Workers []string

// AppendWorkers writes the list's encoding.
func AppendWorkers(dst []byte, w Workers) []byte {
	dst = append(dst, "v1"...)
	for _, id := range w {
		dst = append(dst, ' ')
		dst = append(dst, id...)
	}
	return dst
}

// ParseWorkers reads the list.
func ParseWorkers(data []byte) (Workers, error) {
	f := strings.Fields(string(data))
	if len(f) == 0 || f[0] != "v1" {
		return nil, fmt.Errorf("workers: bad value %q", data)
	}
	return Workers(f[1:]), nil
}

// Has reports whether id is listed.
func (w Workers) Has(id string) bool {
	for _, x := range w {
		if x == id {
			return true
		}
	}
	return false
}

// Lease says which worker sends the regular reports, and until when.
type Lease struct {
	Holder   string
	ExpiryMs int64
	Released bool
}

// Free reports whether another worker may take the lease at nowMs.
func (l Lease) Free(nowMs int64) bool { return l.Released || l.Holder == "" || nowMs >= l.ExpiryMs }

// AppendLease writes the lease's encoding.
func AppendLease(dst []byte, l Lease) []byte {
	holder := l.Holder
	if holder == "" {
		holder = "-"
	}
	dst = fmt.Appendf(dst, "v1 %s %d", holder, l.ExpiryMs)
	if l.Released {
		dst = append(dst, " released"...)
	}
	return dst
}

// ParseLease reads a lease.
func ParseLease(data []byte) (Lease, error) {
	f := strings.Fields(string(data))
	if len(f) < 3 || len(f) > 4 || f[0] != "v1" || (len(f) == 4 && f[3] != "released") {
		return Lease{}, fmt.Errorf("lease: bad value %q", data)
	}
	exp, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return Lease{}, fmt.Errorf("lease: bad value %q", data)
	}
	l := Lease{Holder: f[1], ExpiryMs: exp, Released: len(f) == 4}
	if l.Holder == "-" {
		l.Holder = ""
	}
	return l, nil
}

// Wakes are the last wake-up time of each key, across the workers.
type Wakes map[string]int64

// AppendWakes writes the encoding, keeping the newest max entries.
func AppendWakes(dst []byte, w Wakes, max int) []byte {
	keys := make([]string, 0, len(w))
	for k := range w {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if w[keys[i]] != w[keys[j]] {
			return w[keys[i]] > w[keys[j]]
		}
		return keys[i] < keys[j]
	})
	if len(keys) > max {
		keys = keys[:max]
	}
	sort.Strings(keys)
	dst = append(dst, "v1\n"...)
	for _, k := range keys {
		dst = append(dst, k...)
		dst = append(dst, ' ')
		dst = strconv.AppendInt(dst, w[k], 10)
		dst = append(dst, '\n')
	}
	return dst
}

// ParseWakes reads the wake-up times.
func ParseWakes(data []byte) (Wakes, error) {
	head, rest, _ := bytes.Cut(data, []byte("\n"))
	if string(head) != "v1" {
		return nil, fmt.Errorf("wakes: bad header %q", head)
	}
	w := Wakes{}
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		if len(line) == 0 {
			continue
		}
		f := strings.Fields(string(line))
		if len(f) != 2 {
			return nil, fmt.Errorf("wakes: bad line %q", line)
		}
		t, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("wakes: bad line %q", line)
		}
		w[f[0]] = t
	}
	return w, nil
}
