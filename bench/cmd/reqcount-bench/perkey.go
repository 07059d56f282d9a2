package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/messages"
)

// What one active key costs a worker VM (issue 17): linear memory at 0, 1 000
// and 10 000 active keys, side by side in one run, for both aggregate modes,
// and with aggregate: envoy for the lease holder (which also merges every
// worker's outbox) and a worker that does not hold the lease. Every key has
// a request on every worker in each of two flush intervals, each reported
// and answered (200, at once) before the figure is read. Then, on one worker
// VM per mode (with aggregate: envoy it holds the lease, the heavier role),
// keys turn over: over keyTurnIntervals flush intervals a share of the keys
// goes idle each interval and as many new ones arrive, with the longest tick
// and the GC cycles it ran; and the long run repeats that for hours of ticks
// and compares the memory at its end with the memory after its first interval.
//
// The tick target is on the worker thread's CPU time (wasmhost's GuestCPU),
// wall time reported beside it: this sandbox's vCPUs lose about 5 % to steal
// under load, and in wall time it lands on whichever tick runs, doubling
// some. The host's own GC is off during the timed intervals and bodies are
// decoded after them, so neither is charged to the guest.

// perKeyCounts are the table's columns: active keys per worker.
var perKeyCounts = []int{0, 1000, 10000}

const (
	// perKeyWorkers is the Envoy of the aggregate: envoy rows: a holder and
	// a worker that is not.
	perKeyWorkers = 2
	// keyTurnIntervals flush intervals of keys arriving and going idle are
	// timed (at least 10, issue 17).
	keyTurnIntervals = 12
	// keyTurnShare of the active keys go idle in each interval, and as many
	// new ones arrive.
	keyTurnShare = 10 // percent
	// perKeyMaxKeys is max_keys of the table's VMs: the default, for every
	// column (the 0-key VM is configured as the others are).
	perKeyMaxKeys = 10000
)

// keyMemRow is one figure: a role's linear memory at keys active keys.
type keyMemRow struct {
	aggregate string
	role      string // "worker", "holder" or "not holder"
	keys      int
	mem       uint32 // linear memory
	// heap and runtime are the guest's own accounting (the reqcount.vm.*
	// gauges, read from runtime/metrics at its last tick): live heap objects
	// and all the memory the Go runtime maps, this VM's share of the
	// Envoy-wide gauges (wasmhost.Worker.Gauge).
	heap, runtime int64
	// structs is the guest's accounting by structure (the
	// reqcount.vm.bytes.* gauges, measured once per flush interval), in the
	// order of keyStructs.
	structs [len(keyStructs)]int64
}

// keyStructs are the reqcount.vm.bytes.* gauges: the structures a key's bytes
// go to, by the names the rows give them.
var keyStructs = [...]struct{ name, gauge string }{
	{"table", "reqcount.vm.bytes.table"},
	{"memo", "reqcount.vm.bytes.memo"},
	{"series", "reqcount.vm.bytes.series"},
	{"outbox", "reqcount.vm.bytes.outbox"},
	{"merged", "reqcount.vm.bytes.merged"},
}

// keyTurn is the turnover run of one mode.
type keyTurn struct {
	aggregate string
	keys      int
	ticks     int // per flush interval
	intervals int
	// longest and longestCPU are each interval's longest proxy_on_tick, in
	// wall time and in the worker thread's CPU time; gcCycles the GC cycles
	// the VM ran over the timed intervals.
	longest, longestCPU []time.Duration
	gcCycles            int64
	// Long run: linear memory after its first interval and at its end, over
	// longTicks ticks.
	longTicks         int
	longSpan          time.Duration
	memFirst, memLast uint32
	longGC            int64
	// polls counts the run's calls to the host's poll_oneoff.
	polls         wasmhost.PollCalls
	counted, sent uint64
	problem       string
}

// byStructure lists the structures' bytes, and the heap objects they do not
// account for (the SDK's, the runtime's own, buffers of a tick), or "" when the
// module has no such gauges.
func (r *keyMemRow) byStructure() string {
	var parts []string
	var sum int64
	for j, st := range keyStructs {
		if n := r.structs[j]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %s", st.name, kib(n)))
			sum += n
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return strings.Join(parts, ", ") + fmt.Sprintf("; other heap objects %s", kib(r.heap-sum))
}

// kib formats n bytes in KiB.
func kib(n int64) string { return fmt.Sprintf("%.0f KiB", float64(n)/1024) }

// perKey is the whole measurement.
type perKey struct {
	rows  []keyMemRow
	turns []*keyTurn
	// requestNs is the cost of one request (filter authority's median
	// ns/request) in the same run, when the run measured it: the longest
	// tick is also given in requests.
	requestNs float64
}

// row returns the figure for (aggregate, role, keys), or nil.
func (p *perKey) row(aggregate, role string, keys int) *keyMemRow {
	for i := range p.rows {
		r := &p.rows[i]
		if r.aggregate == aggregate && r.role == role && r.keys == keys {
			return r
		}
	}
	return nil
}

// perKeyBytes is the linear memory one active key costs at keys keys, above
// the 0-key VM of the same role.
func (p *perKey) perKeyBytes(aggregate, role string, keys int) (float64, bool) {
	base, at := p.row(aggregate, role, 0), p.row(aggregate, role, keys)
	if base == nil || at == nil || keys == 0 {
		return 0, false
	}
	return (float64(at.mem) - float64(base.mem)) / float64(keys), true
}

// simClock is a wall clock that moves only when the run ticks: a manual tick
// stands for one tick period (leases, wake-up claims and reservations are in
// the guest's wall-clock milliseconds).
type simClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *simClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// keyHost is a host of the compiled filter for the per-key runs: the default
// key_source (authority: each key is an authority of its own, so the memo
// fills as a gateway's does), wake-ups off (every count goes out at its key's
// tick), default flush_interval, every call answered 200.
type keyHost struct {
	h     *wasmhost.Host
	clock *simClock
	tick  time.Duration
	ticks int // per flush interval
	// sent counts the requests the collector accepted, from the bodies
	// (decoded after each interval's ticks, out of the timed calls).
	sent   uint64
	mu     sync.Mutex
	bodies [][]byte
}

func newKeyHost(ctx context.Context, mod *wasmhost.Module, aggregate string, workers, maxKeys int) (*keyHost, error) {
	conf := fmt.Sprintf(`{"cluster":%q,"aggregate":%q,"max_keys":%d,"wake_after":"0s"}`, cluster, aggregate, maxKeys)
	cfg, err := config.Parse([]byte(conf))
	if err != nil {
		return nil, err
	}
	k := &keyHost{clock: &simClock{now: time.Now()}}
	ok := okResponse()
	k.h, err = wasmhost.New(ctx, mod, wasmhost.Config{
		Workers:       workers,
		PluginConfig:  []byte(conf),
		Clusters:      map[string]string{cluster: ""},
		ManualTicks:   true,
		TimeCallbacks: true,
		Walltime:      k.clock.Now,
		LogLevel:      wasmhost.LevelInfo,
		// The dispatcher runs inside proxy_http_call, so inside the timed
		// tick: it only keeps the body (already the host's copy) and
		// answers, as the guest flush's does; a collector's decoding is not
		// Envoy's work.
		Dispatch: func(c wasmhost.Callout, reply func(wasmhost.Response)) {
			k.mu.Lock()
			k.bodies = append(k.bodies, c.Body)
			k.mu.Unlock()
			reply(ok)
		},
	})
	if err != nil {
		return nil, err
	}
	k.tick = k.h.Worker(0).TickPeriod()
	k.ticks = ticksPerInterval(cfg.FlushInterval, k.tick)
	return k, nil
}

// keyRequest is the request for key i of a run.
func keyRequest(i int) wasmhost.Request {
	hs := append([][2]string(nil), benchRequest.Headers...)
	for j := range hs {
		if hs[j][0] == ":authority" {
			hs[j][1] = fmt.Sprintf("key-%06d.shop.svc.cluster.local:8080", i)
		}
	}
	return wasmhost.Request{Headers: hs}
}

// tickTimes are the longest proxy_on_tick of one interval on worker 0: wall
// time, and CPU time on the worker's thread.
type tickTimes struct{ wall, cpu time.Duration }

// interval sends reqs to every worker, then ticks every worker through one
// flush interval and waits for the answers. It returns the longest
// proxy_on_tick of the interval on worker 0.
func (k *keyHost) interval(ctx context.Context, reqs []wasmhost.Request) (tickTimes, error) {
	// The host's own garbage (the bench's, wazero's) is collected between
	// intervals, and the host's collector is off during one: a host GC's
	// assists and its workers would land in the timed guest calls, and
	// Envoy's C++ has no such cycle.
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for i := range k.h.Workers() {
		w := k.h.Worker(i)
		for _, r := range reqs {
			if _, err := w.Request(ctx, r); err != nil {
				return tickTimes{}, err
			}
		}
	}
	w0 := k.h.Worker(0)
	var longest tickTimes
	for range k.ticks {
		before := w0.Stats()
		for i := range k.h.Workers() {
			if err := k.h.Worker(i).Tick(ctx); err != nil {
				return tickTimes{}, err
			}
		}
		after := w0.Stats()
		longest.wall = max(longest.wall, after.GuestTime["proxy_on_tick"]-before.GuestTime["proxy_on_tick"])
		longest.cpu = max(longest.cpu, after.GuestCPU["proxy_on_tick"]-before.GuestCPU["proxy_on_tick"])
		k.clock.advance(k.tick)
	}
	for i := range k.h.Workers() {
		w := k.h.Worker(i)
		w.MemorySize() // after every answer queued so far
		if err := w.Crashed(); err != nil {
			return tickTimes{}, err
		}
	}
	k.mu.Lock()
	for _, b := range k.bodies {
		k.sent += bodyCount(b)
	}
	k.bodies = k.bodies[:0]
	k.mu.Unlock()
	return longest, nil
}

// callsBy returns each worker's report calls so far: with aggregate: envoy
// only the lease holder makes them.
func (k *keyHost) callsBy() []uint64 {
	out := make([]uint64, k.h.Workers())
	for i := range out {
		out[i] = k.h.Worker(i).Stats().HostCalls["proxy_http_call"]
	}
	return out
}

func (k *keyHost) close(ctx context.Context) { k.h.Close(ctx) }

// runPerKey measures the table and the turnover runs.
func runPerKey(ctx context.Context, o options, mod *wasmhost.Module) (*perKey, error) {
	p := &perKey{}
	for _, agg := range []string{"envoy", "worker"} {
		for _, n := range perKeyCounts {
			rows, err := keyMemory(ctx, mod, agg, n)
			if err != nil {
				return nil, fmt.Errorf("per-key memory, aggregate %s, %d keys: %w", agg, n, err)
			}
			p.rows = append(p.rows, rows...)
		}
	}
	for _, agg := range []string{"envoy", "worker"} {
		t, err := keyTurnover(ctx, o, mod, agg, perKeyCounts[len(perKeyCounts)-1])
		if err != nil {
			return nil, fmt.Errorf("key turnover, aggregate %s: %w", agg, err)
		}
		p.turns = append(p.turns, t)
	}
	return p, nil
}

// keyMemory is one column of the table for one mode.
func keyMemory(ctx context.Context, mod *wasmhost.Module, aggregate string, keys int) ([]keyMemRow, error) {
	workers := 1
	if aggregate == "envoy" {
		workers = perKeyWorkers
	}
	k, err := newKeyHost(ctx, mod, aggregate, workers, perKeyMaxKeys)
	if err != nil {
		return nil, err
	}
	defer k.close(ctx)
	reqs := make([]wasmhost.Request, keys)
	for i := range reqs {
		reqs[i] = keyRequest(i)
	}
	for range 2 {
		if _, err := k.interval(ctx, reqs); err != nil {
			return nil, err
		}
	}
	calls := k.callsBy()
	var rows []keyMemRow
	for i := range workers {
		role := "worker"
		if aggregate == "envoy" {
			role = "not holder"
			// With no keys nobody calls: worker 0 stands for the holder.
			if calls[i] > 0 || (keys == 0 && i == 0) {
				role = "holder"
			}
		}
		w := k.h.Worker(i)
		r := keyMemRow{aggregate: aggregate, role: role, keys: keys, mem: w.MemorySize(),
			heap: w.Gauge("reqcount.vm.heap_bytes"), runtime: w.Gauge("reqcount.vm.memory_bytes")}
		for j, st := range keyStructs {
			r.structs[j] = w.Gauge(st.gauge)
		}
		rows = append(rows, r)
	}
	// A count merged after the holder collected its shard goes out in the
	// next interval: two more, with no new requests, deliver everything.
	for range 2 {
		if _, err := k.interval(ctx, nil); err != nil {
			return nil, err
		}
	}
	if want := uint64(2 * keys * workers); k.sent != want {
		return nil, fmt.Errorf("%d requests reported for %d sent", k.sent, want)
	}
	if aggregate == "envoy" && keys > 0 && (rows[0].role == rows[1].role) {
		return nil, fmt.Errorf("report calls by worker %v: want exactly one holder", calls)
	}
	return rows, nil
}

// keyTurnover is the turnover run at keys active keys on one worker VM:
// timed intervals, then the long run.
func keyTurnover(ctx context.Context, o options, mod *wasmhost.Module, aggregate string, keys int) (*keyTurn, error) {
	// Keys that went idle stay until the filter evicts them (after a flush
	// interval of silence), so the table holds more than the active keys.
	k, err := newKeyHost(ctx, mod, aggregate, 1, 2*keys)
	if err != nil {
		return nil, err
	}
	defer k.close(ctx)
	t := &keyTurn{aggregate: aggregate, keys: keys, ticks: k.ticks, intervals: keyTurnIntervals}
	// The active keys are a window [next-keys, next) over key numbers that
	// moves by a share each interval: the oldest go idle (and are dropped
	// once idle for the filter's eviction time), new ones arrive.
	next := keys
	step := keys * keyTurnShare / 100
	window := func() []wasmhost.Request {
		reqs := make([]wasmhost.Request, 0, keys)
		for i := next - keys; i < next; i++ {
			reqs = append(reqs, keyRequest(i))
		}
		next += step
		return reqs
	}
	gc := func() int64 { return k.h.Gauge("reqcount.vm.gc_cycles") }
	var counted uint64
	crashed := func(err error) (*keyTurn, error) {
		if errors.Is(err, wasmhost.ErrCrashed) {
			t.problem = firstLine(err.Error())
			return t, nil
		}
		return nil, err
	}
	// Two intervals to fill the table, then the timed ones.
	for range 2 {
		if _, err := k.interval(ctx, window()); err != nil {
			return crashed(err)
		}
		counted += uint64(keys)
	}
	gc0 := gc()
	for range keyTurnIntervals {
		d, err := k.interval(ctx, window())
		if err != nil {
			return crashed(err)
		}
		counted += uint64(keys)
		t.longest, t.longestCPU = append(t.longest, d.wall), append(t.longestCPU, d.cpu)
	}
	t.gcCycles = gc() - gc0
	// The long run: the same turnover, one interval after another.
	intervals := max(o.keyLongTicks/k.ticks, 2)
	t.longTicks = intervals * k.ticks
	t.longSpan = time.Duration(t.longTicks) * k.tick
	gc0 = gc()
	for i := range intervals {
		if _, err := k.interval(ctx, window()); err != nil {
			return crashed(err)
		}
		counted += uint64(keys)
		if i == 0 {
			t.memFirst = k.h.Worker(0).MemorySize()
		}
	}
	t.memLast = k.h.Worker(0).MemorySize()
	t.longGC = gc() - gc0
	// What is still in the filter's table goes out at its next ticks.
	for range 2 {
		if _, err := k.interval(ctx, nil); err != nil {
			return crashed(err)
		}
	}
	t.counted, t.sent = counted, k.sent
	t.polls = k.h.Stats().PollOneoff
	if counted != k.sent {
		t.problem = fmt.Sprintf("%d requests reported for %d sent", k.sent, counted)
	}
	return t, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// bodyCount is the number of requests a report body carries (0 for a body
// that does not decode: the run's totals then show it).
func bodyCount(b []byte) uint64 {
	ms, err := messages.Decode(b)
	if err != nil {
		return 0
	}
	var n uint64
	for _, m := range ms {
		n += uint64(m.Count)
	}
	return n
}

// Issue 17's targets.
const (
	targetBytesPerKey = 512                   // linear memory per active key at 10 000 keys, above the 0-key VM
	targetKeyTick     = 10 * time.Millisecond // longest tick with keys turning over, GC cycles included
	targetLongDrift   = 0.10                  // long run: end within 10 % of the memory after its first interval
)

// tableRows adds the measurement's rows to the results table.
func (p *perKey) tableRows(row func(...string)) {
	if p == nil {
		return
	}
	for _, r := range p.rows {
		detail := "0-key VM: the baseline"
		if per, ok := p.perKeyBytes(r.aggregate, r.role, r.keys); ok {
			detail = fmt.Sprintf("%s B per active key above the 0-key VM", groupf(per))
		}
		if r.heap > 0 {
			detail += fmt.Sprintf("; guest accounting: Go heap objects %s, all Go runtime memory %s", mib(uint64(r.heap)), mib(uint64(r.runtime)))
		}
		if by := r.byStructure(); by != "" {
			detail += "; by structure (reqcount.vm.bytes.*): " + by
		}
		row("linear memory per worker VM", fmt.Sprintf("aggregate %s, %s, %s active keys", r.aggregate, r.role, count(r.keys)), mib(uint64(r.mem)),
			detail+"; every key with a request on every worker in each of two flush intervals, reported and answered")
	}
	for _, t := range p.turns {
		s, c := durationSpread(t.longest), durationSpread(t.longestCPU)
		row("longest tick, keys turning over", fmt.Sprintf("aggregate %s, %s keys, %d%% replaced per interval", t.aggregate, count(t.keys), keyTurnShare),
			ms(time.Duration(c.Max))+" CPU",
			fmt.Sprintf("longest proxy_on_tick of %d flush intervals (%d ticks each) in the worker thread's CPU time (median of the intervals' longest %s); wall time: longest %s, median %s; %d GC cycles in those intervals",
				len(t.longestCPU), t.ticks, ms(medianDuration(t.longestCPU)), ms(time.Duration(s.Max)), ms(medianDuration(t.longest)), t.gcCycles)+
				p.inRequests(time.Duration(c.Max)))
		row("memory over the long run, keys turning over", fmt.Sprintf("aggregate %s, %s keys", t.aggregate, count(t.keys)),
			fmt.Sprintf("%s after the first interval, %s at the end", mib(uint64(t.memFirst)), mib(uint64(t.memLast))),
			fmt.Sprintf("%d ticks (%v of ticks), %d%% of the keys replaced per interval; %d GC cycles (%.0f per hour of ticks); %d poll_oneoff calls to the host (ENOSYS, as Envoy 1.33-1.38); %d requests sent, %d reported",
				t.longTicks, t.longSpan, keyTurnShare, t.longGC, float64(t.longGC)*float64(time.Hour)/float64(t.longSpan), t.polls.AtStart+t.polls.AfterStart, t.counted, t.sent))
	}
}

// inRequests says what d costs in requests of the same run, or nothing when
// the run did not time requests.
func (p *perKey) inRequests(d time.Duration) string {
	if p.requestNs <= 0 {
		return ""
	}
	return fmt.Sprintf("; the longest tick costs what %s requests do (filter authority, %s ns each in this run)",
		groupf(float64(d)/p.requestNs), groupf(p.requestNs))
}

// targets adds issue 17's targets.
func (p *perKey) targets(target func(bool, string, ...any)) {
	if p == nil {
		return
	}
	for _, agg := range []string{"envoy", "worker"} {
		roles := []string{"worker"}
		if agg == "envoy" {
			roles = []string{"holder", "not holder"}
		}
		top := perKeyCounts[len(perKeyCounts)-1]
		for _, role := range roles {
			per, ok := p.perKeyBytes(agg, role, top)
			target(ok && per <= targetBytesPerKey, "aggregate %s, %s: linear memory per active key at %s keys ≤ %d B: %s B",
				agg, role, count(top), targetBytesPerKey, groupf(per))
		}
	}
	for _, t := range p.turns {
		c := durationSpread(t.longestCPU)
		target(t.problem == "" && len(t.longestCPU) >= 10 && time.Duration(c.Max) > 0 && time.Duration(c.Max) <= targetKeyTick,
			"aggregate %s: longest tick at %s keys turning over ≤ %s CPU, GC cycles included: %s over %d intervals with %d GC cycles (wall %s)%s",
			t.aggregate, count(t.keys), ms(targetKeyTick), ms(time.Duration(c.Max)), len(t.longestCPU), t.gcCycles,
			ms(time.Duration(durationSpread(t.longest).Max)), problemSuffix(t.problem))
		n := t.polls.AtStart + t.polls.AfterStart
		target(t.problem == "" && n == 0, "aggregate %s, %s keys turning over: calls to the host's poll_oneoff = 0 over %v of ticks with %d GC cycles: %d%s",
			t.aggregate, count(t.keys), t.longSpan, t.longGC, n, problemSuffix(t.problem))
		drift := (float64(t.memLast) - float64(t.memFirst)) / float64(max(t.memFirst, 1))
		target(t.problem == "" && drift <= targetLongDrift,
			"aggregate %s: memory at the end of the long run within %.0f %% of its first interval's: %s vs %s (%+.1f %%)%s",
			t.aggregate, targetLongDrift*100, mib(uint64(t.memLast)), mib(uint64(t.memFirst)), drift*100, problemSuffix(t.problem))
	}
}

func problemSuffix(p string) string {
	if p == "" {
		return ""
	}
	return "; " + p
}

// runOnlyPerKey is -only perkey: it builds the filter alone, runs the per-key
// memory phase, and prints its rows and targets (no results file: a partial
// run's figures are for the one who ran it, not bench/RESULTS.md).
func runOnlyPerKey(ctx context.Context, o options, root, buildDir string, stdout io.Writer) error {
	phase := startPhase("build")
	var specs []moduleSpec
	for _, m := range moduleSpecs {
		if m.name == "filter" {
			specs = append(specs, m)
		}
	}
	wasm, err := buildModules(root, buildDir, specs)
	if err != nil {
		return err
	}
	phase.end()
	mod, err := wasmhost.Compile(ctx, wasm["filter"])
	if err != nil {
		return fmt.Errorf("compile filter: %w", err)
	}
	defer mod.Close(ctx)
	phase = startPhase("per-key memory")
	p, err := runPerKey(ctx, o, mod)
	if err != nil {
		return err
	}
	phase.end()
	var t, g strings.Builder
	row := func(cells ...string) { t.WriteString("| " + strings.Join(cells, " | ") + " |\n") }
	row("measure", "subject", "value", "detail")
	row("---", "---", "---", "---")
	p.tableRows(row)
	p.targets(func(ok bool, format string, args ...any) {
		mark := "PASS"
		if !ok {
			mark = "MISS"
		}
		fmt.Fprintf(&g, "- %s: %s\n", mark, fmt.Sprintf(format, args...))
	})
	_, err = fmt.Fprintf(stdout, "%s\n%s", t.String(), g.String())
	return err
}
