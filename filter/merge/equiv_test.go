package merge

import (
	"bytes"
	"fmt"
	"math/rand"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The parsers and the lease holder's reads and writes work on values line by
// line, without maps (a tick allocates nothing). These tests hold them to the
// map-based code they replaced (ref*, as it was), over random values:
// written by this version (sorted), by another writer (any order, a key twice),
// or malformed.

func refFields(line []byte, f [][]byte) bool {
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

func refParseUint(b []byte, bits int) (uint64, bool) {
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

func refParseOutbox(data []byte) (Outbox, error) {
	head, rest, _ := bytes.Cut(data, []byte("\n"))
	f := strings.Fields(string(head))
	if len(f) != 3 || f[0] != "v1" {
		return Outbox{}, fmt.Errorf("bad header")
	}
	hb, err1 := strconv.ParseInt(f[1], 10, 64)
	gen, err2 := strconv.ParseUint(f[2], 10, 32)
	if err1 != nil || err2 != nil {
		return Outbox{}, fmt.Errorf("bad header")
	}
	m := map[string]Cum{}
	var fs [3][]byte
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		if len(line) == 0 {
			continue
		}
		if !refFields(line, fs[:]) {
			return Outbox{}, fmt.Errorf("bad line")
		}
		g, ok1 := refParseUint(fs[1], 32)
		n, ok2 := refParseUint(fs[2], 64)
		if !ok1 || !ok2 {
			return Outbox{}, fmt.Errorf("bad line")
		}
		m[string(fs[0])] = Cum{Gen: uint32(g), N: n}
	}
	return Outbox{HeartbeatMs: hb, NextGen: uint32(gen), Entries: m}, nil
}

func refParseAcks(data []byte) (Acks, error) {
	if len(data) == 0 {
		return Acks{}, nil
	}
	head, rest, _ := bytes.Cut(data, []byte("\n"))
	if string(head) != "v1" {
		return nil, fmt.Errorf("bad header")
	}
	a := Acks{}
	var f [5][]byte
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		if len(line) == 0 {
			continue
		}
		if !refFields(line, f[:]) {
			return nil, fmt.Errorf("bad line")
		}
		gen, ok1 := refParseUint(f[1], 32)
		n, ok2 := refParseUint(f[2], 64)
		until, ok3 := refParseUint(f[4], 63)
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("bad line")
		}
		d := Ack{Gen: uint32(gen), Delivered: n, UntilMs: int64(until)}
		if string(f[3]) != "-" {
			d.Holder = string(f[3])
		}
		a[string(f[0])] = d
	}
	return a, nil
}

// refCollectShard is collectShard as it was, over parsed values: the acks to
// write (nil: none) and the parts handed out.
func refCollectShard(me, worker string, j int, out Outbox, acks Acks, nowMs, holdMs int64, inflight map[partID]uint64) (Acks, []Part) {
	changed := false
	var parts []Part
	for k, c := range out.Entries {
		a, ok := acks[k]
		switch {
		case ok && a.Gen > c.Gen:
			continue
		case !ok || a.Gen < c.Gen:
			a, changed = Ack{Gen: c.Gen}, true
		}
		left := c.N - min(a.Delivered, c.N)
		if left == 0 {
			continue
		}
		if a.Holder != me && a.Holder != "" && nowMs < a.UntilMs {
			continue
		}
		if a.Holder != me || a.UntilMs < nowMs+holdMs/2 {
			a.Holder, a.UntilMs, changed = me, nowMs+holdMs, true
		}
		acks[k] = a
		left -= min(inflight[partID{worker, k, c.Gen}], left)
		if left > 0 {
			parts = append(parts, Part{Worker: worker, Shard: j, Key: k, Gen: c.Gen, N: left})
		}
	}
	for k, a := range acks {
		if c, ok := out.Entries[k]; a.Gen <= out.NextGen && (!ok || c.Gen != a.Gen) {
			delete(acks, k)
			changed = true
		}
	}
	if !changed {
		return nil, parts
	}
	return acks, parts
}

// refMergeAcks is WriteAcks' change as it was: deliveries folded per key (a
// new generation replaces), then merged into the acks.
func refMergeAcks(acks Acks, ds []delta) Acks {
	d := map[string]Cum{}
	for _, x := range ds {
		c := d[x.key]
		if c.Gen != x.gen {
			c = Cum{Gen: x.gen}
		}
		c.N += x.n
		d[x.key] = c
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
	return acks
}

// valueGen makes random values over a few keys.
type valueGen struct {
	rng  *rand.Rand
	keys []string
}

func newValueGen(seed int64) *valueGen {
	return &valueGen{rng: rand.New(rand.NewSource(seed)), keys: []string{
		"a.ns", "b.ns", "c.ns", "web.shop", "web.shop2", "a-much-longer-service-name-than-thirty-two.default",
	}}
}

func (g *valueGen) key() string { return g.keys[g.rng.Intn(len(g.keys))] }

// lines writes lines in order (sorted, as this version writes them) or not,
// sometimes a key twice, sometimes with empty lines.
func (g *valueGen) lines(head string, lines map[string]string, dups []string) []byte {
	var ks []string
	for k := range lines {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	if g.rng.Intn(3) == 0 {
		g.rng.Shuffle(len(ks), func(i, j int) { ks[i], ks[j] = ks[j], ks[i] })
	}
	var b []byte
	b = append(b, head...)
	b = append(b, '\n')
	for i, k := range ks {
		if i < len(dups) && g.rng.Intn(4) == 0 {
			b = append(b, dups[i]...) // an earlier line for a key, overridden below or not
			b = append(b, '\n')
		}
		b = append(b, lines[k]...)
		if g.rng.Intn(8) == 0 {
			b = append(b, '\n')
		}
		if i < len(ks)-1 || g.rng.Intn(2) == 0 {
			b = append(b, '\n')
		}
	}
	return g.maybeBreak(b)
}

// maybeBreak now and then damages a value.
func (g *valueGen) maybeBreak(b []byte) []byte {
	if g.rng.Intn(12) != 0 || len(b) == 0 {
		return b
	}
	b = append([]byte(nil), b...)
	switch i := g.rng.Intn(len(b)); g.rng.Intn(4) {
	case 0:
		b[i] = ' '
	case 1:
		b[i] = 'x'
	case 2:
		b = b[:i]
	default:
		b = append(b[:i:i], append([]byte("  "), b[i:]...)...)
	}
	return b
}

func (g *valueGen) outbox() []byte {
	next := uint32(1 + g.rng.Intn(8))
	lines := map[string]string{}
	var dups []string
	for range g.rng.Intn(len(g.keys) + 1) {
		k := g.key()
		lines[k] = fmt.Sprintf("%s %d %d", k, 1+g.rng.Intn(int(next)), g.rng.Intn(6))
		dups = append(dups, fmt.Sprintf("%s %d %d", g.key(), 1+g.rng.Intn(int(next)), g.rng.Intn(6)))
	}
	return g.lines(fmt.Sprintf("v1 %d %d", 1700000000000+g.rng.Intn(1000), next), lines, dups)
}

func (g *valueGen) acks(me string, nowMs int64) []byte {
	if g.rng.Intn(10) == 0 {
		return nil
	}
	holders := []string{"-", me, "0000000000000bad"}
	line := func(k string) string {
		return fmt.Sprintf("%s %d %d %s %d", k, g.rng.Intn(10), g.rng.Intn(7), holders[g.rng.Intn(3)], nowMs-5000+int64(g.rng.Intn(20000)))
	}
	lines := map[string]string{}
	var dups []string
	for range g.rng.Intn(len(g.keys) + 1) {
		k := g.key()
		lines[k] = line(k)
		dups = append(dups, line(g.key()))
	}
	return g.lines("v1", lines, dups)
}

func TestParseLinesAsMaps(t *testing.T) {
	g := newValueGen(1)
	for i := range 20000 {
		ov := g.outbox()
		want, werr := refParseOutbox(ov)
		got, gerr := ParseOutbox(ov)
		if (werr != nil) != (gerr != nil) || (werr == nil && !reflect.DeepEqual(got, want)) {
			t.Fatalf("case %d: ParseOutbox(%q) = %+v, %v; want %+v, %v", i, ov, got, gerr, want, werr)
		}
		av := g.acks("00000000000000a1", 1700000000000)
		wa, werr := refParseAcks(av)
		ga, gerr := ParseAcks(av)
		if (werr != nil) != (gerr != nil) || (werr == nil && !reflect.DeepEqual(ga, wa)) {
			t.Fatalf("case %d: ParseAcks(%q) = %+v, %v; want %+v, %v", i, av, ga, gerr, wa, werr)
		}
	}
}

// memStore is a Store over a map, for the tests of this package.
type memStore struct {
	m    map[string][]byte
	cas  map[string]uint32
	next uint32
}

func newMemStore() *memStore {
	return &memStore{m: map[string][]byte{}, cas: map[string]uint32{}, next: 1}
}

func (s *memStore) Get(k string) ([]byte, uint32, bool, error) {
	v, ok := s.m[k]
	return v, s.cas[k], ok, nil
}

func (s *memStore) Set(k string, v []byte, cas uint32) error {
	if cur, ok := s.cas[k]; ok && cas != 0 && cas != cur {
		return ErrCasMismatch
	}
	s.m[k] = append([]byte(nil), v...)
	s.cas[k] = s.next
	s.next++
	return nil
}

func sortParts(ps []Part) []Part {
	sort.Slice(ps, func(i, j int) bool { return ps[i].Key < ps[j].Key })
	return ps
}

func TestCollectShardAsMaps(t *testing.T) {
	const me, worker, nowMs, holdMs = "00000000000000a1", "00000000000000b2", 1700000000000, 15000
	g := newValueGen(2)
	for i := range 20000 {
		s := newMemStore()
		ov, av := g.outbox(), g.acks(me, nowMs)
		out, err := refParseOutbox(ov)
		if err != nil {
			continue // left alone by both: TestParseLinesAsMaps
		}
		s.m[OutboxKey(worker, 0)], s.cas[OutboxKey(worker, 0)] = ov, 100
		if av != nil {
			s.m[AckKey(worker, 0)], s.cas[AckKey(worker, 0)] = av, 101
		}
		l := NewLeader(s, me)
		inflight := map[partID]uint64{}
		for id := range uint64(g.rng.Intn(3)) {
			p := Part{Worker: worker, Key: g.key(), Gen: uint32(1 + g.rng.Intn(8)), N: uint64(1 + g.rng.Intn(3))}
			l.Sent(id, []Part{p})
			inflight[partID{p.Worker, p.Key, p.Gen}] += p.N
		}
		acks, err := refParseAcks(av)
		if err != nil {
			acks = Acks{}
		}
		wantAcks, wantParts := refCollectShard(me, worker, 0, out, acks, nowMs, holdMs, inflight)
		gotParts, err := l.collectShard(nil, newNames(worker, 1), 0, nowMs, holdMs)
		if err != nil {
			t.Fatal(err)
		}
		gotValue := s.m[AckKey(worker, 0)]
		wantValue := av
		if wantAcks != nil {
			wantValue = AppendAcks(nil, wantAcks)
		}
		if !bytes.Equal(gotValue, wantValue) || !reflect.DeepEqual(sortParts(gotParts), sortParts(wantParts)) {
			t.Fatalf("case %d: outbox %q, acks %q, in flight %v:\ngot  acks %q, parts %+v\nwant acks %q, parts %+v",
				i, ov, av, inflight, gotValue, gotParts, wantValue, wantParts)
		}
	}
}

func TestMergeAcksAsMaps(t *testing.T) {
	const me, worker = "00000000000000a1", "00000000000000b2"
	g := newValueGen(3)
	l := NewLeader(newMemStore(), me)
	for i := range 20000 {
		av := g.acks(me, 1700000000000)
		var ds []delta
		for range g.rng.Intn(8) {
			ds = append(ds, delta{worker: worker, key: g.key(), gen: uint32(g.rng.Intn(10)), n: uint64(1 + g.rng.Intn(4))})
		}
		acks, err := refParseAcks(av)
		if err != nil {
			acks = Acks{}
		}
		want := AppendAcks(nil, refMergeAcks(acks, ds))
		if got := l.mergeAcks(av, ds); !bytes.Equal(got, want) {
			t.Fatalf("case %d: acks %q, deliveries %+v:\ngot  %q\nwant %q", i, av, ds, got, want)
		}
	}
}
