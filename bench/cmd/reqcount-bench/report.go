package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"testing"
	"time"
)

type moduleSize struct {
	name      string
	raw, gzip int
}

// results is everything one run measured.
type results struct {
	opts       options
	sdkVersion string
	started    time.Time
	wall       time.Duration
	sizes      []moduleSize
	wasm       *wasmResults
	guestFlush []*guestFlush
	wakeups    *wakeups
	keda       *kedaBench
	perKey     *perKey
	hold       *holdBench
	model      []*modelRow
	hot        []*hotPath
	flush      *flushBench
}

type report struct {
	table   string // the one markdown table
	targets string // the targets, PASS/MISS, as a markdown list
	where   string // the "where the time goes" section
	pass    bool
}

// Targets (ratios measured in the same run).
const (
	targetAuthority  = 1.10    // filter authority / authority-floor, ns per request
	targetStatic     = 1.05    // filter static / noop, ns per request
	targetMemGrowth  = 1 << 20 // bytes of growth from the first to the second checkpoint
	targetMemRatio   = 1.25    // filter / authority-floor, linear memory at the second checkpoint
	targetLongGrowth = 1 << 20 // bytes of growth from the second checkpoint to the end of the long run
	targetStartMem   = 4 << 20 // linear memory at VM start, filter variants
	targetFlushLimit = 2 * time.Millisecond

	// Issue 7.
	targetWakeupP99   = 10 * time.Millisecond // first request of an idle key → the operator has it
	targetLongestTick = 10 * time.Millisecond // guest time of one proxy_on_tick at 10 000 keys
	targetInclude     = 1.10                  // filter authority with a 20-pattern include / authority-floor
	targetIgnore      = 1.35                  // filter authority with both ignore lists / authority-floor
	targetHoldNoise   = 0.10                  // filter authority with hold set for other keys: at most this much over filter authority (ratios to the floor)

	// Issue 9.
	targetAuthorityStrict = 1.0     // filter authority / authority-floor, ns per request
	targetMemOverNoop     = 1 << 20 // bytes over the noop floor's linear memory at the second checkpoint
	targetGCPerMillion    = 1.0     // guest GC cycles per million requests once warm
)

// memoryTargeted are the variants issue 9's memory and GC targets apply to.
var memoryTargeted = []string{"filter authority", "filter authority, 8 hosts", "filter header"}

// setBenchtime sets testing.Benchmark's run time, which only exists as the
// test.benchtime flag.
func setBenchtime(d string) error {
	testing.Init()
	return flag.Set("test.benchtime", d)
}

func (r *results) markdown() report {
	var t strings.Builder
	row := func(cells ...string) { t.WriteString("| " + strings.Join(cells, " | ") + " |\n") }
	o := r.opts
	w := r.wasm
	mem1, mem2 := count(o.mem1), count(o.mem2)

	row("measure", "subject", "value", "detail")
	row("---", "---", "---", "---")
	for _, v := range w.variants {
		s := summarize(v.nsPerReq)
		row("ns/request", v.name, groupf(s.Median),
			fmt.Sprintf("median of %d rounds × %s requests; min–max %s–%s", s.N, count(o.n), groupf(s.Min), groupf(s.Max)))
	}
	for _, rs := range ratioSpecs {
		s := summarize(w.ratios[rs.name])
		row("ratio ns/request", rs.name, fmt.Sprintf("%.3f", s.Median),
			fmt.Sprintf("median of per-round ratios; min–max %.3f–%.3f", s.Min, s.Max))
	}
	floor := w.variant("authority-floor")
	noop := w.variant("noop")
	for _, v := range w.variants {
		detail := fmt.Sprintf("%d per-request callbacks exported (Envoy calls each); measured entries include proxy_on_memory_allocate: %s",
			v.mod.EntriesPerRequest(), v.breakdown(v.guestByName))
		if v.filter {
			detail += fmt.Sprintf("; %d callbacks fewer than the floors: the filter exports only what it needs (lean set)",
				noop.mod.EntriesPerRequest()-v.mod.EntriesPerRequest())
		}
		row("guest entries/request", v.name, fmt.Sprintf("%d exported, %.2f measured", v.mod.EntriesPerRequest(), v.perRequest(v.guestEntries)), detail)
	}
	for _, v := range w.variants {
		row("host calls/request", v.name, fmt.Sprintf("%.2f", v.perRequest(v.hostCalls)), v.breakdown(v.hostByName))
	}
	for _, v := range w.variants {
		row("linear memory at VM start", v.name, mib(uint64(v.startMem)),
			"after _initialize, proxy_on_vm_start and proxy_on_configure, before any request")
	}
	for _, v := range w.variants {
		m1, m2 := v.mem[o.mem1], v.mem[o.mem2]
		row("linear memory", v.name, fmt.Sprintf("%s after %s, %s after %s", mib(uint64(m1)), mem1, mib(uint64(m2)), mem2),
			fmt.Sprintf("growth %+.2f MiB", (float64(m2)-float64(m1))/(1<<20)))
	}
	for _, v := range w.variants {
		if v.filter {
			perHour := float64(time.Hour) / float64(time.Duration(o.longTicks)*500*time.Millisecond)
			row("GC cycles, poll_oneoff calls per hour of ticks", v.name,
				fmt.Sprintf("%.0f GC cycles, %.0f poll_oneoff", float64(v.longCycles)*perHour, float64(v.longPolls)*perHour),
				fmt.Sprintf("long run, %s ticks of 500ms, %d requests before each; the host answers poll_oneoff ENOSYS as Envoy 1.33-1.38 do; %d calls to it over the whole run",
					count(o.longTicks), o.longRequests, v.polls.AtStart+v.polls.AfterStart))
		}
	}
	for _, v := range w.variants {
		if v.filter {
			row("linear memory after the long run", v.name, mib(uint64(v.longMem)),
				fmt.Sprintf("after %s more ticks (%s of 500ms ticks), %d requests before each; %s (%d started by the filter's GC pacer); growth over %s %+.2f MiB",
					count(o.longTicks), time.Duration(o.longTicks)*500*time.Millisecond, o.longRequests,
					plural(v.longCycles, "GC cycle"), v.longCollected, mem2, (float64(v.longMem)-float64(v.mem[o.mem2]))/(1<<20)))
		}
	}
	for _, v := range w.variants {
		if v.filter {
			row("ratio linear memory", v.name+" / authority-floor", fmt.Sprintf("%.3f", float64(v.mem[o.mem2])/float64(floor.mem[o.mem2])),
				"after "+mem2)
		}
	}
	for _, v := range w.variants {
		if v.filter {
			row("linear memory over noop", v.name, fmt.Sprintf("%+.2f MiB", float64(int64(v.mem[o.mem2])-int64(noop.mem[o.mem2]))/(1<<20)),
				fmt.Sprintf("after %s, against the noop floor's %s", mem2, mib(uint64(noop.mem[o.mem2]))))
		}
	}
	for _, v := range w.variants {
		value, detail := r.gcRow(v)
		row("guest GC cycles per 1M requests", v.name, value, detail)
	}
	for _, v := range w.variants {
		if v.filter {
			value, detail := vmGauges(v)
			row("guest VM gauges at the end", v.name, value, detail)
		}
	}
	for _, v := range w.variants {
		if v.filter {
			detail, ok := v.countCheck()
			verdict := "all counted"
			if !ok {
				verdict = fmt.Sprintf("%d missing", int64(v.requests)-v.delivered.Load())
			}
			row("requests counted", v.name, verdict, detail)
		}
	}
	for _, hp := range r.hot {
		row("native hot path", "key_source "+hp.name, fmt.Sprintf("%.0f allocs/request", hp.allocs),
			fmt.Sprintf("%.1f ns/op; %s", hp.nsOp, hp.what))
	}
	fb := r.flush
	keys := count(o.keys)
	flushRow := func(what string, ds []time.Duration, detail string) {
		s := durationSpread(ds)
		row("native flush, "+keys+" keys", what, ms(time.Duration(s.Median)),
			fmt.Sprintf("median of %d; min–max %s–%s; %s", s.N, ms(time.Duration(s.Min)), ms(time.Duration(s.Max)), detail))
	}
	flushRow("encode single", fb.encodeSingle, fmt.Sprintf("%s AppendFields into a reused buffer, %d bytes in all", keys, fb.bytesSingle))
	flushRow("encode batch", fb.encodeBatch, fmt.Sprintf("one AppendBatchJSON, %d bytes", fb.bytesBatch))
	flushRow("Flusher.Tick single", fb.tickSingle, "evict pass + encode + no-op dispatch per key")
	flushRow("Flusher.Tick batch", fb.tickBatch, "evict pass + collect + encode + one no-op dispatch")
	for _, g := range r.guestFlush {
		measure := "longest tick, " + keys + " keys"
		if g.oneTick {
			measure = "one-tick flush, " + keys + " keys"
		}
		if len(g.longest) == 0 {
			row(measure, g.subject(), "no timed run", g.problems())
			continue
		}
		all := durationSpread(g.longest)
		detail := fmt.Sprintf("guest time of the longest proxy_on_tick in one flush_interval (%d ticks, every key once), median of %d intervals; longest of all %s, shortest %s; all the interval's ticks together %s; until every answer is delivered %s; %d calls, %d body bytes per interval",
			g.ticks, all.N, ms(time.Duration(all.Max)), ms(time.Duration(all.Min)), ms(medianDuration(g.total)), ms(medianDuration(g.answered)), g.calls, g.body)
		if !g.ok() {
			detail += "; " + g.problems()
		}
		row(measure, g.subject(), ms(g.longestTick()), detail)
	}
	if wu := r.wakeups; wu != nil {
		value := "none measured"
		detail := fmt.Sprintf("%d wake-ups after %d untimed: the first request of a never-seen key, from just before Worker.Request to the collector accepting its message (default dispatcher, loopback HTTP); %d messages at the collector",
			len(wu.latencies), wakeupWarmup, wu.messages)
		if len(wu.latencies) > 0 {
			value = fmt.Sprintf("p50 %s, p99 %s", ms(percentile(wu.latencies, 50)), ms(percentile(wu.latencies, 99)))
			detail += fmt.Sprintf("; min–max %s–%s", ms(minDuration(wu.latencies)), ms(maxDuration(wu.latencies)))
		}
		if wu.stopped != "" {
			detail += "; stopped: " + wu.stopped
		}
		row("wake-up latency", fmt.Sprintf("filter authority, flush_interval %v", wakeupInterval), value, detail)
	}
	r.keda.tableRows(row)
	if r.perKey != nil {
		for _, v := range w.variants {
			if v.name == "filter authority" {
				r.perKey.requestNs = summarize(v.nsPerReq).Median
			}
		}
	}
	r.perKey.tableRows(row)
	r.hold.tableRows(row)
	for _, m := range r.model {
		row("model: operator messages/s", m.name, groupf(meshRate(m.perSidecar()))+"/s", m.detail())
	}
	for _, m := range r.sizes {
		what := m.name + ".wasm"
		if m.name == "filter" {
			what = "filter.wasm (as `make build` ships it)"
		}
		row("module size", what, fmt.Sprintf("%s raw", groupf(float64(m.raw))),
			fmt.Sprintf("%s gzipped (best compression)", groupf(float64(m.gzip))))
	}
	row("wall time", "this run", r.wall.Round(time.Second).String(), phaseSummary())

	var g strings.Builder
	pass := true
	target := func(ok bool, format string, args ...any) {
		mark := "PASS"
		if !ok {
			mark, pass = "MISS", false
		}
		fmt.Fprintf(&g, "- %s: %s\n", mark, fmt.Sprintf(format, args...))
	}
	ratio := func(name string) spread {
		rs, ok := w.ratios[name]
		if !ok || len(rs) == 0 {
			panic("reqcount-bench: no ratio " + name) // a renamed variant must not pass silently
		}
		return summarize(rs)
	}
	ra := ratio("filter authority / authority-floor")
	target(ra.Median <= targetAuthority, "filter authority ≤ %.2f × authority-floor: %.3f (per-round %.3f–%.3f)", targetAuthority, ra.Median, ra.Min, ra.Max)
	rh := ratio("filter authority, 8 hosts / authority-floor")
	target(rh.Median <= targetAuthority, "filter authority, 8 hosts in turn (the memo path) ≤ %.2f × authority-floor: %.3f (per-round %.3f–%.3f)", targetAuthority, rh.Median, rh.Min, rh.Max)
	rs := ratio("filter static / noop")
	target(rs.Median <= targetStatic, "filter static ≤ %.2f × noop: %.3f (per-round %.3f–%.3f)", targetStatic, rs.Median, rs.Min, rs.Max)
	ri := ratio("filter authority, include 20 / authority-floor")
	target(ri.Median <= targetInclude, "filter authority with a 20-pattern include ≤ %.2f × authority-floor: %.3f (per-round %.3f–%.3f)", targetInclude, ri.Median, ri.Min, ri.Max)
	rg := ratio("filter authority, ignore rules / authority-floor")
	target(rg.Median <= targetIgnore, "filter authority with ignore_paths and ignore_user_agents ≤ %.2f × authority-floor: %.3f (per-round %.3f–%.3f)", targetIgnore, rg.Median, rg.Min, rg.Max)
	rk := ratio("filter authority, hold other keys / authority-floor")
	target(rk.Median <= ra.Median+targetHoldNoise, "filter authority with hold set for other keys ≤ filter authority + %.2f × authority-floor (unchanged within noise): %.3f vs %.3f",
		targetHoldNoise, rk.Median, ra.Median)
	fa := w.variant("filter authority")
	calls, entries, wantEntries := fa.proxyCallsPerRequest(), fa.perRequest(fa.guestEntries), float64(fa.mod.EntriesPerRequest()+1)
	target(calls == 1 && math.Abs(entries-wantEntries) < 0.005,
		"filter authority with neither include nor ignore rules reads one header per request, as before: %.2f proxy_* host calls, %.2f guest entries per request (%d exported callbacks + 1 allocation for the copy)",
		calls, entries, fa.mod.EntriesPerRequest())
	target(ra.Median <= targetAuthorityStrict, "filter authority ≤ %.2f × authority-floor (issue 9: no worse than the floor): %.3f (per-round %.3f–%.3f)", targetAuthorityStrict, ra.Median, ra.Min, ra.Max)
	for _, name := range memoryTargeted {
		v := w.variant(name)
		over := float64(int64(v.mem[o.mem2])-int64(noop.mem[o.mem2])) / (1 << 20)
		target(over*(1<<20) <= targetMemOverNoop, "%s linear memory after %s ≤ the noop floor's + 1 MiB: %s vs %s (%+.2f MiB)",
			name, mem2, mib(uint64(v.mem[o.mem2])), mib(uint64(noop.mem[o.mem2])), over)
		over = float64(int64(v.longMem)-int64(noop.mem[o.mem2])) / (1 << 20)
		target(over*(1<<20) <= targetMemOverNoop, "%s linear memory after the long run ≤ the noop floor's + 1 MiB: %s vs %s (%+.2f MiB)",
			name, mib(uint64(v.longMem)), mib(uint64(noop.mem[o.mem2])), over)
	}
	for _, name := range memoryTargeted {
		value, _ := r.gcRow(w.variant(name))
		rate, ok := w.variant(name).gcPerMillion(o.mem1)
		target(ok && rate <= targetGCPerMillion, "%s guest GC cycles per million requests once warm ≤ %.0f: %s", name, targetGCPerMillion, value)
	}
	for _, v := range w.variants {
		n := v.polls.AtStart + v.polls.AfterStart
		target(n == 0, "%s calls to the host's poll_oneoff = 0 (Envoy 1.33-1.38 answer ENOSYS and Go's runtime throws; the module answers its own): %d", v.name, n)
	}
	for _, v := range w.variants {
		if !v.filter {
			continue
		}
		m1, m2 := v.mem[o.mem1], v.mem[o.mem2]
		target(v.startMem <= targetStartMem, "%s linear memory at VM start ≤ %s (a guard: the Go heap's 512 KiB arenas are aligned, so a little more static data or start-up heap can cost a whole arena per worker): %s",
			v.name, mib(targetStartMem), mib(uint64(v.startMem)))
		target(int64(m2)-int64(m1) <= targetMemGrowth, "%s memory after %s ≤ after %s + 1 MiB: %s vs %s", v.name, mem2, mem1, mib(uint64(m2)), mib(uint64(m1)))
		target(int64(v.longMem)-int64(m2) <= targetLongGrowth, "%s memory after the long run ≤ after %s + %s: %s vs %s",
			v.name, mem2, mib(targetLongGrowth), mib(uint64(v.longMem)), mib(uint64(m2)))
		ratio := float64(m2) / float64(floor.mem[o.mem2])
		target(ratio <= targetMemRatio, "%s memory after %s ≤ %.2f × authority-floor's: %.3f (%s vs %s)", v.name, mem2, targetMemRatio, ratio, mib(uint64(m2)), mib(uint64(floor.mem[o.mem2])))
	}
	for _, v := range w.variants {
		if v.filter {
			detail, ok := v.countCheck()
			target(ok, "%s counts every request it is driven (not a performance target; a correctness check of the run): %s", v.name, detail)
		}
	}
	for _, g := range r.guestFlush {
		if g.oneTick {
			continue
		}
		all := durationSpread(g.longest)
		target(len(g.longest) > 0 && g.longestTick() <= targetLongestTick,
			"longest tick at %s keys, %s mode, aggregate %s, ≤ %s of guest time: %s (median over %d flush intervals of %d ticks of each interval's longest; longest of all %s)",
			keys, g.mode, g.aggregate, ms(targetLongestTick), ms(g.longestTick()), all.N, g.ticks, ms(time.Duration(all.Max)))
	}
	for _, g := range r.guestFlush {
		detail := g.problems()
		if detail == "" {
			detail = fmt.Sprintf("%d flush intervals, each flushed one count per key", g.runs+1)
		}
		mode := g.mode + " mode, aggregate " + g.aggregate
		if g.oneTick {
			mode += ", one tick"
		}
		target(g.ok(), "the filter (%s) flushes %s keys in the guest without a VM crash and with exact counts (a correctness check of the run): %s",
			mode, keys, detail)
	}
	r.keda.targets(o, target)
	r.perKey.targets(target)
	r.hold.targets(target)
	if wu := r.wakeups; wu != nil {
		p50, p99 := percentile(wu.latencies, 50), percentile(wu.latencies, 99)
		detail := fmt.Sprintf("p99 %s, p50 %s over %d wake-ups", ms(p99), ms(p50), len(wu.latencies))
		if wu.stopped != "" {
			detail += "; stopped: " + wu.stopped
		}
		target(wu.stopped == "" && len(wu.latencies) == o.wakeups && p99 < targetWakeupP99,
			"wake-up latency (first request of an idle key → the collector has its message, flush_interval %v) p99 < %s: %s", wakeupInterval, ms(targetWakeupP99), detail)
	}
	for _, m := range r.model {
		rule := fmt.Sprintf("%d messages for %d keys over %d flush intervals: each key once per interval", m.messages, m.keys, modelIntervals)
		if m.sporadic {
			rule = fmt.Sprintf("%d messages carrying %d counts for %d requests: each request counted once", m.messages, m.counted, m.requests)
			if m.wakeAfter > 0 {
				rule += ", in a message of its own (a wake-up)"
			}
		}
		target(m.exact(), "model, %s: %s (a correctness check of the model run)", m.name, rule)
	}
	for _, hp := range r.hot {
		target(hp.allocs == 0, "zero allocations per request, native key parsing + counting, key_source %s: %.0f", hp.name, hp.allocs)
	}
	es, eb := medianDuration(fb.encodeSingle), medianDuration(fb.encodeBatch)
	target(es < targetFlushLimit, "%s-key flush encode < 2 ms, single: %s", keys, ms(es))
	target(eb < targetFlushLimit, "%s-key flush encode < 2 ms, batch: %s", keys, ms(eb))

	return report{table: t.String(), targets: g.String(), where: r.whereTimeGoes(), pass: pass}
}

// gcRow is the value and detail of a variant's GC row.
func (r *results) gcRow(v *variant) (string, string) {
	if !v.filter {
		return "n/a", "a floor plugin reports no GC count"
	}
	rate, ok := v.gcPerMillion(r.opts.mem1)
	if !ok {
		return "n/a", "the module sets no " + metricGCCycles + " gauge"
	}
	return fmt.Sprintf("%.2f", rate), fmt.Sprintf("once warm: the guest's %s gauge (Go runtime metrics, set at each tick), from the first tick after %s requests to the last at %s",
		metricGCCycles, count(r.opts.mem1), count(r.opts.mem2))
}

// vmGauges is the value (the guest's Go heap, if reported) and the detail
// (every reqcount.vm.* gauge) of a filter variant's VM row.
func vmGauges(v *variant) (string, string) {
	if len(v.vm) == 0 {
		return "n/a", "the module sets no " + metricVM + "* gauges"
	}
	names := make([]string, 0, len(v.vm))
	for n := range v.vm {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		val := fmt.Sprint(v.vm[n])
		if strings.HasSuffix(n, "_bytes") {
			val = mib(uint64(v.vm[n]))
		}
		parts = append(parts, n+" "+val)
	}
	value := "n/a"
	if heap, ok := v.vm["heap_bytes"]; ok {
		value = "heap " + mib(uint64(heap))
	}
	return value, metricVM + "* after the last tick: " + strings.Join(parts, ", ")
}

func phaseSummary() string {
	var parts []string
	for _, p := range phases {
		parts = append(parts, fmt.Sprintf("%s %v", p.name, p.d.Round(100*time.Millisecond)))
	}
	return strings.Join(parts, "; ")
}

// whereTimeGoes derives the cost split from the measured rows: differences
// between variants that differ by one thing each.
func (r *results) whereTimeGoes() string {
	w := r.wasm
	med := func(name string) float64 { return summarize(w.variant(name).nsPerReq).Median }
	ent := func(name string) float64 { v := w.variant(name); return v.perRequest(v.guestEntries) }
	hc := func(name string) float64 { v := w.variant(name); return v.perRequest(v.hostCalls) }
	noop, floor := med("noop"), med("authority-floor")
	fa, fh, fs := med("filter authority"), med("filter header"), med("filter static")
	perEntry := noop / ent("noop")
	read := floor - noop
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("- Guest entries set the floor. noop does nothing per request and still costs %.0f ns for %.2f entries: %.0f ns per entry on average (wazero's call, Go's export trampoline, the SDK's context maps; context create and delete are the dearer ones).",
		noop, ent("noop"), perEntry)
	p("- filter static (no header read) − noop = %+.0f ns: the filter's lean export set saves %d trivial entries per request, and its streams skip the SDK's per-stream Go maps (shared streams, filter/_sdkabi: a stream's create, lookups and delete are an idmap.Map's, not two map inserts and four deletes and lookups), which more than pays for its counting (it counts through its entry's Ref; a table.Add would be %.0f ns natively).",
		fs-noop, w.variant("noop").mod.EntriesPerRequest()-w.variant("filter static").mod.EntriesPerRequest(), r.hotNs("static"))
	p("- Reading one header costs authority-floor − noop = %.0f ns: %+.2f guest entries (the host's re-entrant proxy_on_memory_allocate for the copy), %+.2f host calls, and the garbage the copy leaves for the guest's GC.",
		read, ent("authority-floor")-ent("noop"), hc("authority-floor")-hc("noop"))
	p("- filter authority − filter static = %.0f ns: the same :authority read (≈ %.0f ns as above), leaving %.0f ns for counting by authority in wasm code: every benchmark request has the same authority, so this is the filter's last-authority compare (a memo lookup for interleaved authorities costs more; natively the memo path is %.0f ns more than static, and parsing every time would add %.0f ns natively, several times that in wasm).",
		fa-fs, read, fa-fs-read, r.hotNs("authority")-r.hotNs("static"), r.hotNs("authority parsed")-r.hotNs("authority"))
	p("- filter authority, 8 hosts − filter authority = %+.0f ns: with the authority changing on every request, the last-authority compare misses and the memo's hash lookup counts it (no parsing: every host was seen before).",
		med("filter authority, 8 hosts")-fa)
	p("- filter header − filter authority = %+.0f ns: a second header read (%+.2f guest entries, %+.2f host calls) in place of parsing an authority.",
		fh-fa, ent("filter header")-ent("filter authority"), hc("filter header")-hc("filter authority"))
	var clock []string
	for _, v := range w.variants {
		clock = append(clock, fmt.Sprintf("%s %.0f", v.name, 1e6*v.perRequest(v.hostByName["wasi_snapshot_preview1.clock_time_get"])))
	}
	p("- The guest's Go runtime reads the clock (wasi clock_time_get) when its scheduler runs and when the GC paces itself. Per million requests: %s. The noop's rate is the base the ABI's scheduler yields (every 256 streams) make; what a variant has above it is mostly GC cycles.",
		strings.Join(clock, ", "))
	var allocs []string
	for _, v := range w.variants {
		allocs = append(allocs, fmt.Sprintf("%s %.3f", v.name, v.perRequest(v.hostMallocs)))
	}
	p("- Host side: allocations of the benchmark process per request (wasmhost + wazero, not the guest): %s. Near zero means the host's own GC does not weigh on the ns figures.",
		strings.Join(allocs, ", "))
	p("- filter authority, include 20 − filter authority = %+.0f ns: the include list is matched once per key, when the key is first seen, so a seen authority costs what it costs without the list.",
		med("filter authority, include 20")-fa)
	p("- filter authority, ignore rules − filter authority = %+.0f ns: %+.2f host calls and %+.2f guest entries per request (:path and user-agent read and checked against their prefixes); without the lists the filter reads neither.",
		med("filter authority, ignore rules")-fa, hc("filter authority, ignore rules")-hc("filter authority"), ent("filter authority, ignore rules")-ent("filter authority"))
	var grow []string
	for _, v := range w.variants {
		grow = append(grow, fmt.Sprintf("%s %s → %s → %s", v.name, mib(uint64(v.startMem)), mib(uint64(v.mem[r.opts.mem1])), mib(uint64(v.mem[r.opts.mem2]))))
	}
	p("- Linear memory, which a Go heap never returns, so it bounds the live heap plus GC headroom and the runtime's own structures (at VM start → after %s → after %s requests): %s.",
		count(r.opts.mem1), count(r.opts.mem2), strings.Join(grow, "; "))
	var gcs []string
	for _, v := range w.variants {
		if rate, ok := v.gcPerMillion(r.opts.mem1); ok {
			gcs = append(gcs, fmt.Sprintf("%s %.2f", v.name, rate))
		}
	}
	if len(gcs) == 0 {
		p("- The guest's GC is not observable from the host: the module sets no %s gauge.", metricGCCycles)
	} else {
		_, gauges := vmGauges(w.variant("filter authority"))
		p("- Guest GC cycles per million requests once warm, from the filter's %s gauge: %s. Where filter authority's memory goes, by its own gauges: %s.",
			metricGCCycles, strings.Join(gcs, ", "), gauges)
	}
	return b.String()
}

func (r *results) hotNs(name string) float64 {
	for _, hp := range r.hot {
		if hp.name == name {
			return hp.nsOp
		}
	}
	return 0
}

// notesMarker starts the hand-written part of RESULTS.md: everything from it
// on is kept when the file is rewritten.
const notesMarker = "<!-- Everything below this line is hand-written and kept when reqcount-bench rewrites this file. -->"

const defaultNotes = notesMarker + "\n\n## Notes\n\n(none yet)\n"

func writeResults(path string, r *results, rep report) error {
	notes := defaultNotes
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		if i := bytes.Index(old, []byte(notesMarker)); i >= 0 {
			notes = string(old[i:])
		}
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Benchmark results")
	p("")
	p("Written by `make bench` (`go run ./bench/cmd/reqcount-bench`); bench/README.md says what each row means.")
	p("Everything above the Notes is regenerated on every run.")
	p("")
	p("- Date (UTC): %s", r.started.Format("2006-01-02 15:04:05"))
	p("- Go: %s, %s/%s (host); modules built with the same toolchain for wasip1/wasm", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	p("- CPU: %s, %d cores", cpuModel(), runtime.NumCPU())
	p("- wazero: %s; proxy-wasm-go-sdk: %s (the modules' SDK, from go.mod)", depVersion("github.com/tetratelabs/wazero"), r.sdkVersion)
	p("- Run: %d rounds × %s requests per variant after %s warm-up requests; memory checkpoints %s and %s requests; flush over %s keys, %d runs",
		r.opts.rounds, count(r.opts.n), count(r.opts.warmup), count(r.opts.mem1), count(r.opts.mem2), count(r.opts.keys), r.opts.flushRuns)
	p("- Wall time: %v", r.wall.Round(time.Second))
	p("")
	p("## Results")
	p("")
	b.WriteString(rep.table)
	p("")
	p("## Targets")
	p("")
	b.WriteString(rep.targets)
	p("")
	p("## Where the time goes")
	p("")
	b.WriteString(rep.where)
	p("")
	b.WriteString(notes)
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// cpuModel is /proc/cpuinfo's first "model name", or "unknown".
func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// requiredVersion is the version go.mod in root requires of module path, or
// "unknown". The SDK is compiled into the modules, not into this binary, so
// the build info does not have it.
func requiredVersion(root, path string) string {
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) >= 2 && f[0] == path {
			return f[1]
		}
	}
	return "unknown"
}

// depVersion is the version of module path this binary was built with.
func depVersion(path string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range info.Deps {
		if d.Path == path {
			if d.Replace != nil {
				return d.Version + " => " + d.Replace.Path + " " + d.Replace.Version
			}
			return d.Version
		}
	}
	return "unknown"
}
