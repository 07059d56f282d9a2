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
// one record per line. The lines of outboxes and acks are written sorted by key;
// a reader takes them in any order (a key's last line counts), as an older
// build's reader does.
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
//     send those counts again. A worker starts an outbox entry over once its
//     acks cover all it published: what it counted since goes alone into a new
//     generation (none: the entry is dropped), so an old ack line never covers
//     new counts and an entry holds about an interval's counts, not its history.
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
//   - "reqcount.v1.seq" (CAS): "v1 <n>", the last worker number handed out
//     (NewWorkerID).
//
// Worker ids are 16 hex digits, new for every VM start, unique by construction:
// a number taken from the sequence by compare-and-swap, then random bits
// (NewWorkerID; ids from random bits alone are the same on every VM of a host
// whose random source has a fixed seed). A restarted worker
// never reuses an outbox, and the old one is delivered by the lease holder like
// any other, then emptied (by compare-and-swap: a worker alive after all keeps
// its newer outbox) and unlisted once its heartbeat stopped; a worker that finds
// a shard emptied drops what it had published there (all of it was delivered).
// So nothing merged is lost when a worker stops or its VM dies, and nothing is
// counted twice by a restart. Calls the lease holder had in flight when its VM
// died are sent again by the next holder (their acks were never written): the one
// case of at-least-once.
//
// # Ticks without garbage
//
// In the guest a GC cycle runs inside the tick that starts it, so what a tick
// allocates decides how often a tick is that long, and a VM that ticks for hours
// with few keys fills its heap with it. So, in steady state (the same keys, no
// new worker), a tick's calls allocate nothing but each part's key a lease holder
// hands out (Part.Key, once per key and interval): values are read line by line
// into buffers that are reused, walked in key order where two are merged (an
// outbox and its acks), and written into a reused buffer, a line that keeps its
// fields, or changes one, mostly by copy; the lease holder finds the lines
// deliveries add to by binary search rather than by sorting the deliveries; a
// worker's outbox shards are hash tables of its own with no pointer in them (the
// GC marks them without scanning them) that keep a key whose counts were all
// delivered for its next count; and the shared-data keys of a worker's shards are
// named once.
package merge

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strconv"
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

// parseWorkerEntry reads a list entry; id aliases e.
func parseWorkerEntry(e []byte) (id []byte, shards int, ok bool) {
	i := bytes.IndexByte(e, '/')
	if i < 0 {
		return nil, 0, false
	}
	n, err := strconv.Atoi(string(e[i+1:]))
	if err != nil || n < 1 || n > 1<<16 {
		return nil, 0, false
	}
	return e[:i], n, true
}

// names are the shared-data keys of one worker's values, each made once:
// naming a shard on every tick would allocate a string each time.
type names struct {
	entry, id string // its entry in the list, its id
	shards    int
	beat      string
	out, ack  []string // by shard, made at the first use
	seen      bool     // listed at the last Collect
}

func newNames(id string, shards int) *names {
	return &names{entry: workerEntry(id, shards), id: id, shards: shards, beat: heartbeatKey(id)}
}

// outKey and ackKey name shard i's outbox and acks.
func (n *names) outKey(i int) string { return n.name(&n.out, outboxPrefix, i) }
func (n *names) ackKey(i int) string { return n.name(&n.ack, ackPrefix, i) }

func (n *names) name(keys *[]string, prefix string, i int) string {
	if *keys == nil {
		*keys = make([]string, n.shards)
	}
	if (*keys)[i] == "" {
		(*keys)[i] = prefix + n.id + "." + strconv.Itoa(i)
	}
	return (*keys)[i]
}

// ErrCasMismatch is what Store.Set returns when the key changed since the CAS was
// read.
var ErrCasMismatch = errors.New("shared data: cas mismatch")

// Store is proxy-wasm shared data. Get returns ok false for a key never set. Set
// with cas 0, or of a key that does not exist, succeeds; otherwise the cas must be
// the key's current one (ErrCasMismatch). Set keeps nothing of value (the package
// reuses its buffers), and the package reads a value Get returned only until it
// returns to its caller, so Get may return bytes the host reuses after that (the
// proxy-wasm SDK's copy into the guest's arena).
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

// Trim starts over the entries whose acks cover all they published (Pub):
// those with nothing added since are dropped (it reports how many), the
// others keep what was added since, alone, in a new generation (in key
// order). The worker's shard does the same (shard.trim says why).
func (o *Outbox) Trim(acks Acks) int {
	keys := make([]string, 0, len(o.Entries))
	for k := range o.Entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	n := 0
	for _, k := range keys {
		c := o.Entries[k]
		a, ok := acks[k]
		if !ok || c.Pub == 0 || a.Gen != c.Gen || a.Delivered < c.Pub {
			continue
		}
		if c.N <= c.Pub {
			delete(o.Entries, k)
			n++
			continue
		}
		o.NextGen++
		o.Entries[k] = Cum{Gen: o.NextGen, N: c.N - c.Pub}
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
	dst, _ = appendOutbox(dst, o, nil)
	return dst
}

// appendOutbox is AppendOutbox sorting the keys in scratch (returned for reuse).
func appendOutbox(dst []byte, o *Outbox, scratch []string) ([]byte, []string) {
	dst = append(dst, "v1 "...)
	dst = strconv.AppendInt(dst, o.HeartbeatMs, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(o.NextGen), 10)
	dst = append(dst, '\n')
	keys := scratch[:0]
	for k := range o.Entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c := o.Entries[k]
		dst = append(dst, k...)
		dst = append(dst, ' ')
		dst = strconv.AppendUint(dst, uint64(c.Gen), 10)
		dst = append(dst, ' ')
		dst = strconv.AppendUint(dst, c.N, 10)
		dst = append(dst, '\n')
	}
	clear(keys) // the scratch keeps no key alive
	return dst, keys[:0]
}

// ParseOutbox reads an outbox. It copies what it keeps: data may be reused.
func ParseOutbox(data []byte) (Outbox, error) {
	hb, nextGen, lines, err := parseCumLines(nil, data)
	if err != nil {
		return Outbox{}, err
	}
	m := make(map[string]Cum, len(lines))
	for _, l := range lines {
		m[string(l.key)] = Cum{Gen: l.gen, N: l.n}
	}
	return Outbox{HeartbeatMs: hb, NextGen: nextGen, Entries: m}, nil
}

// parseOutboxHeader reads the header line "v1 <written ms> <next gen>".
func parseOutboxHeader(head []byte) (hb int64, nextGen uint32, ok bool) {
	v, rest := nextField(head)
	h, rest := nextField(rest)
	g, rest := nextField(rest)
	if extra, _ := nextField(rest); string(v) != "v1" || len(g) == 0 || len(extra) > 0 {
		return 0, 0, false
	}
	hb, err1 := strconv.ParseInt(string(h), 10, 64)
	gen, err2 := strconv.ParseUint(string(g), 10, 32)
	return hb, uint32(gen), err1 == nil && err2 == nil
}

// cumLine is one outbox line as read: its key aliases the value.
type cumLine struct {
	key []byte
	gen uint32
	n   uint64
}

// parseCumLines reads an outbox into dst (reused): its header and its lines,
// sorted by key, one per key (the last one, as a map would keep). It allocates
// nothing once dst is large enough; a value not sorted as AppendOutbox writes
// it is sorted in dst.
func parseCumLines(dst []cumLine, data []byte) (hb int64, nextGen uint32, lines []cumLine, err error) {
	head, _, _ := cut(data, '\n')
	hb, nextGen, ok := parseOutboxHeader(head)
	if !ok {
		return 0, 0, dst[:0], fmt.Errorf("outbox: bad header %q", head)
	}
	lines = dst[:0]
	sorted := true
	for p := len(head) + 1; p < len(data); {
		if data[p] == '\n' {
			p++
			continue
		}
		// "<key> <gen> <cum>", one pass.
		var l cumLine
		var gen uint64
		var ok bool
		start := p
		l.key, p, ok = word(data, p)
		if ok {
			gen, p, ok = number(data, p, 32, ' ')
		}
		if ok {
			l.n, p, ok = number(data, p, 64, '\n')
		}
		if !ok {
			line, _, _ := cut(data[start:], '\n')
			return 0, 0, lines[:0], fmt.Errorf("outbox: bad line %q", line)
		}
		l.gen = uint32(gen)
		if len(lines) > 0 && sorted && bytes.Compare(lines[len(lines)-1].key, l.key) >= 0 {
			sorted = false
		}
		lines = append(lines, l)
	}
	if !sorted {
		lines = sortCumLines(lines)
	}
	return hb, nextGen, lines, nil
}

// sortCumLines sorts lines by key, keeping the last line of each key: what a
// value written in another order means (ParseOutbox's map keeps the last).
// Every writer sorts its values: this is for one that did not, and allocates.
func sortCumLines(lines []cumLine) []cumLine {
	out := make([]cumLine, 0, len(lines))
	for _, i := range lastByKey(len(lines), func(i int) []byte { return lines[i].key }) {
		out = append(out, lines[i])
	}
	return out
}

// lastByKey returns the indexes of n lines in the order of their keys, the last
// line of each key only.
func lastByKey(n int, key func(int) []byte) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		if c := bytes.Compare(key(order[a]), key(order[b])); c != 0 {
			return c < 0
		}
		return order[a] < order[b]
	})
	out := order[:0]
	for i, o := range order {
		if i+1 < len(order) && bytes.Equal(key(o), key(order[i+1])) {
			continue
		}
		out = append(out, o)
	}
	return out
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
		dst = appendAckTail(append(dst, k...), d.Gen, d.Delivered, []byte(d.Holder), d.UntilMs)
	}
	return dst
}

// appendAckTail writes an acks line after its key: " <gen> <delivered>
// <holder> <until>\n", holder empty written "-".
func appendAckTail(dst []byte, gen uint32, delivered uint64, holder []byte, untilMs int64) []byte {
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(gen), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, delivered, 10)
	dst = append(dst, ' ')
	if len(holder) == 0 {
		dst = append(dst, '-')
	} else {
		dst = append(dst, holder...)
	}
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, untilMs, 10)
	return append(dst, '\n')
}

// ParseAcks reads acks; an empty value is no acks.
func ParseAcks(data []byte) (Acks, error) {
	lines, err := parseAckLines(nil, data)
	if err != nil {
		return nil, err
	}
	a := make(Acks, len(lines))
	holders := map[string]string{} // one string per holder, not per line
	for i := range lines {
		l := &lines[i]
		d := Ack{Gen: l.gen, Delivered: l.delivered, UntilMs: l.untilMs}
		if holder := l.holder(); len(holder) > 0 {
			h, ok := holders[string(holder)]
			if !ok {
				h = string(holder)
				holders[h] = h
			}
			d.Holder = h
		}
		a[string(l.key())] = d
	}
	return a, nil
}

// ackLine is one acks line as read: the line aliases the value, its fields
// are found in it by offset, so that a line kept or changed in one field is
// written back mostly by copy.
type ackLine struct {
	raw []byte // "<key> <gen> <delivered> <holder> <until>"
	// kEnd ends the key; delivered is raw[dOff:dEnd], the holder raw[dEnd+1:hEnd].
	kEnd, dOff, dEnd, hEnd int32
	gen                    uint32
	delivered              uint64
	untilMs                int64
}

// key returns the line's key.
func (a *ackLine) key() []byte { return a.raw[:a.kEnd] }

// holder returns the line's holder, empty for "-".
func (a *ackLine) holder() []byte {
	if h := a.raw[a.dEnd+1 : a.hEnd]; len(h) != 1 || h[0] != '-' {
		return h
	}
	return nil
}

// parseAckLines reads acks into dst (reused): the lines sorted by key, one per
// key (the last one, as a map would keep); an empty value is no acks. It
// allocates nothing once dst is large enough; a value not sorted as AppendAcks
// writes it is sorted in dst.
func parseAckLines(dst []ackLine, data []byte) ([]ackLine, error) {
	lines := dst[:0]
	if len(data) == 0 {
		return lines, nil
	}
	head, _, _ := cut(data, '\n')
	if string(head) != "v1" {
		return lines, fmt.Errorf("acks: bad header %q", head)
	}
	sorted := true
	for p := len(head) + 1; p < len(data); {
		if data[p] == '\n' {
			p++
			continue
		}
		// "<key> <gen> <delivered> <holder> <until>", one pass.
		var l ackLine
		var ok bool
		var gen, until uint64
		start := p
		_, p, ok = word(data, p)
		l.kEnd = int32(p - 1 - start)
		if ok {
			gen, p, ok = number(data, p, 32, ' ')
		}
		l.dOff = int32(p - start)
		if ok {
			l.delivered, p, ok = number(data, p, 64, ' ')
		}
		l.dEnd = int32(p - 1 - start)
		if ok {
			_, p, ok = word(data, p)
		}
		l.hEnd = int32(p - 1 - start)
		if ok {
			until, p, ok = number(data, p, 63, '\n')
		}
		if !ok {
			line, _, _ := cut(data[start:], '\n')
			return lines[:0], fmt.Errorf("acks: bad line %q", line)
		}
		end := p
		if data[p-1] == '\n' {
			end--
		}
		l.raw, l.gen, l.untilMs = data[start:end], uint32(gen), int64(until)
		if len(lines) > 0 && sorted && bytes.Compare(lines[len(lines)-1].key(), l.key()) >= 0 {
			sorted = false
		}
		lines = append(lines, l)
	}
	if !sorted {
		lines = sortAckLines(lines)
	}
	return lines, nil
}

// appendLine writes a's line as read.
func (a *ackLine) appendLine(dst []byte) []byte { return append(append(dst, a.raw...), '\n') }

// appendDelivered writes a's line with delivered instead of its own.
func (a *ackLine) appendDelivered(dst []byte, delivered uint64) []byte {
	dst = strconv.AppendUint(append(dst, a.raw[:a.dOff]...), delivered, 10)
	return append(append(dst, a.raw[a.dEnd:]...), '\n')
}

// appendReserved writes a's line with holder and until instead of its own.
func (a *ackLine) appendReserved(dst []byte, holder []byte, untilMs int64) []byte {
	dst = append(append(append(dst, a.raw[:a.dEnd]...), ' '), holder...)
	return append(strconv.AppendInt(append(dst, ' '), untilMs, 10), '\n')
}

// sortAckLines is sortCumLines for acks.
func sortAckLines(lines []ackLine) []ackLine {
	out := make([]ackLine, 0, len(lines))
	for _, i := range lastByKey(len(lines), func(i int) []byte { return lines[i].key() }) {
		out = append(out, lines[i])
	}
	return out
}

// word reads a field of a line from data[p:]: non-empty, up to a space (not
// the line's end); it returns the field and where the next one starts.
func word(data []byte, p int) ([]byte, int, bool) {
	start := p
	for p < len(data) && data[p] != ' ' && data[p] != '\n' {
		p++
	}
	if p == start || p == len(data) || data[p] != ' ' {
		return nil, p, false
	}
	return data[start:p], p + 1, true
}

// number reads a decimal field of a line from data[p:], of at most bits bits,
// up to end: a space, or the line's end ('\n' or the end of data), past which
// it returns. It allocates nothing.
func number(data []byte, p, bits int, end byte) (uint64, int, bool) {
	start := p
	var n uint64
	for ; p < len(data) && data[p] != end; p++ {
		c := data[p]
		if c < '0' || c > '9' || p-start >= 20 {
			return 0, p, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, p, false
		}
		n = n*10 + d
	}
	switch {
	case p == start || (bits < 64 && n >= 1<<bits):
		return 0, p, false
	case p == len(data):
		return n, p, end == '\n'
	}
	return n, p + 1, true
}

// cut is bytes.Cut at one byte.
func cut(data []byte, sep byte) (before, after []byte, found bool) {
	if i := bytes.IndexByte(data, sep); i >= 0 {
		return data[:i], data[i+1:], true
	}
	return data, nil, false
}

// nextField returns the first field of data separated by ASCII white space (as
// strings.Fields splits a value of ASCII text), or an empty one, and what
// follows it. It allocates nothing.
func nextField(data []byte) (field, rest []byte) {
	i := 0
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	j := i
	for j < len(data) && !isSpace(data[j]) {
		j++
	}
	return data[i:j], data[j:]
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
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
	rest, err := workersBody(data)
	if err != nil {
		return nil, err
	}
	ws := Workers{}
	for f, rest := nextField(rest); len(f) > 0; f, rest = nextField(rest) {
		ws = append(ws, string(f))
	}
	return ws, nil
}

// workersBody checks a list's header and returns its entries, unparsed.
func workersBody(data []byte) ([]byte, error) {
	v, rest := nextField(data)
	if string(v) != "v1" {
		return nil, fmt.Errorf("workers: bad value %q", data)
	}
	return rest, nil
}

// Lease says which worker sends the regular reports, and until when.
type Lease struct {
	Holder   string
	ExpiryMs int64
	Released bool
}

// AppendLease writes the lease's encoding.
func AppendLease(dst []byte, l Lease) []byte {
	return appendLease(dst, l.Holder, l.ExpiryMs, l.Released)
}

func appendLease(dst []byte, holder string, expiryMs int64, released bool) []byte {
	if holder == "" {
		holder = "-"
	}
	dst = append(dst, "v1 "...)
	dst = append(dst, holder...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, expiryMs, 10)
	if released {
		dst = append(dst, " released"...)
	}
	return dst
}

// ParseLease reads a lease.
func ParseLease(data []byte) (Lease, error) {
	l, err := parseLease(data)
	if err != nil {
		return Lease{}, err
	}
	return Lease{Holder: string(l.holder), ExpiryMs: l.expiryMs, Released: l.released}, nil
}

// leaseView is a lease as read: holder aliases the value (empty for none).
type leaseView struct {
	holder   []byte
	expiryMs int64
	released bool
}

// free is Lease.Free.
func (l leaseView) free(nowMs int64) bool {
	return l.released || len(l.holder) == 0 || nowMs >= l.expiryMs
}

// parseLease is ParseLease without allocating.
func parseLease(data []byte) (leaseView, error) {
	v, rest := nextField(data)
	holder, rest := nextField(rest)
	exp, rest := nextField(rest)
	flag, rest := nextField(rest)
	extra, _ := nextField(rest)
	if string(v) != "v1" || len(exp) == 0 || len(extra) > 0 || (len(flag) > 0 && string(flag) != "released") {
		return leaseView{}, fmt.Errorf("lease: bad value %q", data)
	}
	e, err := strconv.ParseInt(string(exp), 10, 64)
	if err != nil {
		return leaseView{}, fmt.Errorf("lease: bad value %q", data)
	}
	if string(holder) == "-" {
		holder = nil
	}
	return leaseView{holder: holder, expiryMs: e, released: len(flag) > 0}, nil
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
	head, rest, _ := cut(data, '\n')
	if string(head) != "v1" {
		return nil, fmt.Errorf("wakes: bad header %q", head)
	}
	w := Wakes{}
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = cut(rest, '\n')
		if len(line) == 0 {
			continue
		}
		k, more := nextField(line)
		t, more := nextField(more)
		if extra, _ := nextField(more); len(t) == 0 || len(extra) > 0 {
			return nil, fmt.Errorf("wakes: bad line %q", line)
		}
		n, err := strconv.ParseInt(string(t), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("wakes: bad line %q", line)
		}
		w[string(k)] = n
	}
	return w, nil
}
