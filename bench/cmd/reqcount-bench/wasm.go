package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/messages"
)

// benchRequest is the one request every variant sees: a realistic header set,
// so that header lookups walk a map of the usual size, with the key present
// in every form the filter can read it (:authority, x-service/x-namespace).
var benchRequest = wasmhost.Request{Headers: [][2]string{
	{":authority", "web.shop.svc.cluster.local:8080"},
	{":path", "/api/v1/items?page=2&size=20"},
	{":method", "GET"},
	{":scheme", "http"},
	{"user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"},
	{"accept", "application/json"},
	{"x-service", "web"},
	{"x-namespace", "shop"},
	{"x-request-id", "3f2b9c1e-8d4a-4b7e-9a61-2c5d7e8f9a0b"},
}}

// benchKey is what the filter variants must count benchRequest as.
const benchKey = "web.shop"

// cluster is the flush cluster of every filter variant. Its address is never
// used: a custom Dispatch answers every call.
const cluster = "operator"

// Metrics of the filter the benchmark reads.
const (
	// metricVM prefixes the gauges the filter sets from the Go runtime's own
	// metrics inside the guest, at each tick (filter/vmstats.go).
	metricVM       = "reqcount.vm."
	metricGCCycles = metricVM + "gc_cycles"
	// metricGCCollected counts the cycles the filter's GC pacer ran itself.
	metricGCCollected = metricVM + "gc_collected"
	metricIgnored     = "reqcount.requests_ignored"
	metricUncounted   = "reqcount.requests_uncounted."
	metricOverflow    = "reqcount.requests_overflow"
)

// includeConfig is the include list of the "include 20" variant: twenty
// patterns in the shapes the README documents (a namespace, a service in
// any namespace, one service), the one that matches benchKey last, so the
// check walks the whole list when a key is first seen.
func includeConfig() string {
	var pats []string
	for i := range 19 {
		switch i % 3 {
		case 0:
			pats = append(pats, fmt.Sprintf(`"*.team-%02d"`, i))
		case 1:
			pats = append(pats, fmt.Sprintf(`"app-%02d.*"`, i))
		default:
			pats = append(pats, fmt.Sprintf(`"app-%02d.team-%02d"`, i, i))
		}
	}
	pats = append(pats, `"web.shop"`)
	return `{"cluster":"operator","key_source":"authority","include":[` + strings.Join(pats, ",") + `]}`
}

// ignoreConfig sets both ignore lists with the usual probe and scraper
// prefixes; benchRequest's :path and user-agent match none, so every request
// is still counted, after both checks.
const ignoreConfig = `{"cluster":"operator","key_source":"authority",` +
	`"ignore_paths":["/healthz","/readyz","/livez","/metrics","/stats/prometheus"],` +
	`"ignore_user_agents":["kube-probe/","Prometheus/","Go-http-client/","Envoy/HC"]}`

// variantSpec is one plugin configuration measured per request.
type variantSpec struct {
	name   string
	module string // key into the built modules
	config string // plugin configuration; "" for the floors
	filter bool
	// hosts, if above zero, cycles the requests over that many services in
	// :authority (svc-0.shop.svc.cluster.local:8080, …) instead of benchRequest's
	// one, so that consecutive requests differ as on a busy worker.
	hosts int
}

// requests returns what the variant drives, in turn.
func (s variantSpec) requests() []wasmhost.Request {
	if s.hosts == 0 {
		return []wasmhost.Request{benchRequest}
	}
	reqs := make([]wasmhost.Request, s.hosts)
	for i := range reqs {
		hs := append([][2]string(nil), benchRequest.Headers...)
		hs[0][1] = fmt.Sprintf("svc-%d.shop.svc.cluster.local:8080", i)
		reqs[i] = wasmhost.Request{Headers: hs}
	}
	return reqs
}

// wantKey reports whether a flushed key is one the variant's requests carry.
func (s variantSpec) wantKey(k string) bool {
	if s.hosts == 0 {
		return k == benchKey
	}
	var i int
	n, err := fmt.Sscanf(k, "svc-%d.shop", &i)
	return err == nil && n == 1 && i >= 0 && i < s.hosts && k == fmt.Sprintf("svc-%d.shop", i)
}

var variantSpecs = []variantSpec{
	{name: "noop", module: "noop"},
	{name: "authority-floor", module: "authorityfloor"},
	{name: "filter authority", module: "filter", filter: true,
		config: `{"cluster":"operator","key_source":"authority"}`},
	{name: "filter header", module: "filter", filter: true,
		config: `{"cluster":"operator","key_source":"header"}`},
	{name: "filter authority, 8 hosts", module: "filter", filter: true, hosts: 8,
		config: `{"cluster":"operator","key_source":"authority"}`},
	{name: "filter static", module: "filter", filter: true,
		config: `{"cluster":"operator","key_source":"static","service":"web","namespace":"shop"}`},
	{name: "filter authority, include 20", module: "filter", filter: true, config: includeConfig()},
	{name: "filter authority, ignore rules", module: "filter", filter: true, config: ignoreConfig},
	// hold set, for keys the bench does not send: the hot path of every other
	// key must cost what it costs without hold (issue 15).
	{name: "filter authority, hold other keys", module: "filter", filter: true,
		config: `{"cluster":"operator","key_source":"authority","hold":["*.cold","web.other"]}`},
}

// variant is a variantSpec running on its own long-lived host: one worker,
// kept for the whole run as Envoy keeps a worker's VM for the life of the
// listener, so garbage, GC and heap growth accumulate as they would there.
type variant struct {
	variantSpec
	reqs []wasmhost.Request // spec.requests(), built once
	mod  *wasmhost.Module
	host *wasmhost.Host
	w    *wasmhost.Worker

	requests int // driven so far, warm-up included

	// Per timed round.
	nsPerReq []float64

	// Summed over the timed segments only (ticks between rounds excluded).
	timedRequests uint64
	guestEntries  uint64
	hostCalls     uint64
	hostByName    map[string]uint64
	guestByName   map[string]uint64
	hostMallocs   uint64 // allocations of this (native) process during the segments

	// mem maps a request count checkpoint to MemorySize there; startMem is
	// MemorySize once the VM has started, before any request.
	mem      map[int]uint32
	startMem uint32
	// longMem is MemorySize after the long run (filter variants): what hours of
	// ticks, with their calls and garbage, leave; longCycles and longCollected
	// are the guest's GC cycles during it, all and those the filter's pacer ran.
	longMem                   uint32
	longCycles, longCollected int64
	// longPolls counts the module's calls to the host's poll_oneoff during
	// the long run, polls over the whole run (start excluded): the host is
	// Envoy 1.33-1.38's, where each would answer ENOSYS and kill the VM.
	longPolls uint64
	polls     wasmhost.PollCalls

	// ticks is how many ticks make one flush_interval: the filter sends one
	// slice of its keys per tick, so a full flush takes that many.
	ticks int
	// gc samples the guest's GC cycle count after each tick (filter
	// variants whose module reports it).
	gc []gcSample
	// vm is the guest's reqcount.vm.* gauges after the last tick.
	vm map[string]int64

	// What the filter variants flushed, decoded from the call bodies.
	delivered atomic.Int64
	badKeys   atomic.Int64
	// uncounted is the module's own tally of requests it did not count, by
	// reason (its reqcount.requests_uncounted.* and requests_overflow metrics).
	uncounted map[string]uint64
}

func okResponse() wasmhost.Response {
	return wasmhost.Response{
		Status:  200,
		Headers: [][2]string{{"content-type", "application/json"}},
		Body:    []byte(`{"message":"Request received successfully!"}`),
	}
}

// newVariant starts spec's host. Ticks are manual: the benchmark calls them
// between timed segments, never inside one. Every flush call is answered 200
// at once, and its body decoded so the run can check that the filter counted
// every request it was given.
func newVariant(ctx context.Context, spec variantSpec, mod *wasmhost.Module) (*variant, error) {
	v := &variant{variantSpec: spec, reqs: spec.requests(), mod: mod, mem: map[int]uint32{},
		hostByName: map[string]uint64{}, guestByName: map[string]uint64{}}
	cfg := wasmhost.Config{
		Workers:      1,
		PluginConfig: []byte(spec.config),
		Clusters:     map[string]string{cluster: ""},
		ManualTicks:  true,
		LogLevel:     wasmhost.LevelInfo,
		Dispatch: func(c wasmhost.Callout, reply func(wasmhost.Response)) {
			ms, err := messages.Decode(c.Body)
			if err != nil {
				v.badKeys.Add(1)
			}
			for _, m := range ms {
				if !spec.wantKey(m.Svc + "." + m.Namespace) {
					v.badKeys.Add(1)
				}
				v.delivered.Add(int64(m.Count))
			}
			reply(okResponse())
		},
	}
	// The worker goroutine New starts inherits these labels, so a CPU profile
	// (-cpuprofile) splits by variant: go tool pprof -tagfocus variant=noop.
	var h *wasmhost.Host
	var err error
	pprof.Do(ctx, pprof.Labels("variant", spec.name), func(ctx context.Context) {
		h, err = wasmhost.New(ctx, mod, cfg)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", spec.name, err)
	}
	v.host, v.w = h, h.Worker(0)
	v.startMem = v.w.MemorySize()
	if spec.filter {
		cfg, err := config.Parse([]byte(spec.config))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec.name, err)
		}
		v.ticks = ticksPerInterval(cfg.FlushInterval, v.w.TickPeriod())
	}
	return v, nil
}

// longRun ticks a filter variant ticks times, each after requests requests, as
// hours of a worker's life would (two hours of the default 500ms ticks by
// default), and records the linear memory it leaves and the GC cycles it took.
// Memory that only a long life reveals (garbage from ticks and calls, which Go
// collects late for a small heap) shows here, not at the request checkpoints.
func (v *variant) longRun(ctx context.Context, ticks, requests int) error {
	if !v.filter {
		return nil
	}
	cycles0, collected0 := v.host.Gauge(metricGCCycles), v.host.Gauge(metricGCCollected)
	polls0 := v.host.Stats().PollOneoff.AfterStart
	for range ticks {
		if requests > 0 {
			if _, err := v.drive(ctx, requests, nil); err != nil {
				return err
			}
		}
		// Not v.tick: the GC samples it keeps are for the per-request rate, and
		// these cycles come from ticks.
		if err := v.w.Tick(ctx); err != nil {
			return fmt.Errorf("%s: tick: %w", v.name, err)
		}
	}
	v.longMem = v.w.MemorySize() // after the queued replies, as v.tick does
	v.longCycles = v.host.Gauge(metricGCCycles) - cycles0
	v.longCollected = v.host.Gauge(metricGCCollected) - collected0
	v.longPolls = v.host.Stats().PollOneoff.AfterStart - polls0
	return nil
}

// gcSample is the guest's GC cycle count after a tick, with the requests
// driven by then.
type gcSample struct {
	requests int
	cycles   int64
}

// drive runs n requests on v, stopping at each memory checkpoint it crosses to
// sample MemorySize outside the timed window. It returns the time spent in
// Requests only.
func (v *variant) drive(ctx context.Context, n int, checkpoints []int) (time.Duration, error) {
	var spent time.Duration
	for n > 0 {
		step := n
		next := 0
		for _, c := range checkpoints {
			if c > v.requests && c-v.requests <= step {
				step, next = c-v.requests, c
				break
			}
		}
		start := time.Now()
		if err := v.w.RequestsCycle(ctx, step, v.reqs); err != nil {
			return spent, fmt.Errorf("%s: %w", v.name, err)
		}
		spent += time.Since(start)
		v.requests += step
		n -= step
		if next != 0 {
			v.mem[next] = v.w.MemorySize()
		}
	}
	return spent, nil
}

// timed drives one round's segment and adds what crossed the boundary to the
// variant's totals.
func (v *variant) timed(ctx context.Context, n int, checkpoints []int) error {
	runtime.GC() // every segment starts from a clean host heap
	var ms0, ms1 runtime.MemStats
	before := v.w.Stats()
	runtime.ReadMemStats(&ms0)
	spent, err := v.drive(ctx, n, checkpoints)
	runtime.ReadMemStats(&ms1)
	if err != nil {
		return err
	}
	after := v.w.Stats()
	v.nsPerReq = append(v.nsPerReq, float64(spent)/float64(n))
	v.timedRequests += after.Requests - before.Requests
	v.guestEntries += after.GuestEntries - before.GuestEntries
	for k, c := range after.HostCalls {
		d := c - before.HostCalls[k]
		v.hostCalls += d
		v.hostByName[k] += d
	}
	for k, c := range after.GuestCalls {
		v.guestByName[k] += c - before.GuestCalls[k]
	}
	v.hostMallocs += ms1.Mallocs - ms0.Mallocs
	return nil
}

// tick flushes a filter variant as its timer would, and waits until the
// answers have been delivered (MemorySize runs after the queued replies).
func (v *variant) tick(ctx context.Context) error {
	if !v.filter {
		return nil
	}
	if err := v.w.Tick(ctx); err != nil {
		return fmt.Errorf("%s: tick: %w", v.name, err)
	}
	v.w.MemorySize()
	if m, ok := v.host.Metric(wasmhost.MetricGauge, metricGCCycles); ok {
		v.gc = append(v.gc, gcSample{requests: v.requests, cycles: m.Value})
	}
	return nil
}

// gcPerMillion is the guest's GC cycles per million requests once warm:
// between the first tick at or after the first memory checkpoint and the
// last tick. ok is false when the module reports no GC count.
func (v *variant) gcPerMillion(warm int) (rate float64, ok bool) {
	first := -1
	for i, s := range v.gc {
		if s.requests >= warm {
			first = i
			break
		}
	}
	if first < 0 || first == len(v.gc)-1 {
		return 0, false
	}
	a, b := v.gc[first], v.gc[len(v.gc)-1]
	if b.requests == a.requests {
		return 0, false
	}
	return float64(b.cycles-a.cycles) / float64(b.requests-a.requests) * 1e6, true
}

// proxyCallsPerRequest is the host calls per timed request other than the
// Go runtime's WASI ones: what the filter asks of Envoy per request.
func (v *variant) proxyCallsPerRequest() float64 {
	var n uint64
	for name, c := range v.hostByName {
		if !strings.HasPrefix(name, "wasi_") {
			n += c
		}
	}
	return v.perRequest(n)
}

// check verifies that nothing went wrong in the guest (a crash or a
// warning makes the measurements meaningless, so the run fails) and, for the
// filter, records what it counted: every request driven should arrive in a
// flush message for benchKey. A shortfall is reported (a MISS in the
// targets, with the module's own tallies of why), not hidden.
func (v *variant) check(ctx context.Context) error {
	for range max(v.ticks, 1) { // one flush_interval: every slice once
		if err := v.tick(ctx); err != nil {
			return err
		}
	}
	if err := v.w.Crashed(); err != nil {
		return fmt.Errorf("%s: %w", v.name, err)
	}
	if warn := v.host.Logs(wasmhost.LevelWarn); len(warn) > 0 {
		return fmt.Errorf("%s: the module logged warnings: %q", v.name, warn)
	}
	if v.filter {
		v.uncounted = map[string]uint64{}
		v.vm = map[string]int64{}
		for _, m := range v.host.Metrics() {
			if reason, ok := strings.CutPrefix(m.Name, metricUncounted); ok && m.Value > 0 {
				v.uncounted[reason] = uint64(m.Value)
			}
			if name, ok := strings.CutPrefix(m.Name, metricVM); ok && m.Type == wasmhost.MetricGauge {
				v.vm[name] = m.Value
			}
		}
		if n := v.host.Counter(metricOverflow); n > 0 {
			v.uncounted["overflow"] = n
		}
		if n := v.host.Counter(metricIgnored); n > 0 {
			v.uncounted["ignored"] = n
		}
	}
	return nil
}

// countCheck describes what a filter variant counted against what it was
// driven, and whether they agree.
func (v *variant) countCheck() (string, bool) {
	got, bad := v.delivered.Load(), v.badKeys.Load()
	s := fmt.Sprintf("%d of %d requests counted and delivered", got, v.requests)
	if bad > 0 {
		s += fmt.Sprintf("; %d messages with a wrong key or an undecodable body", bad)
	}
	if len(v.uncounted) > 0 {
		var reasons []string
		for r, n := range v.uncounted {
			reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
		}
		sort.Strings(reasons)
		s += "; the module tallied as uncounted: " + strings.Join(reasons, ", ")
	}
	return s, got == int64(v.requests) && bad == 0
}

// perRequest divides a timed total by the timed requests.
func (v *variant) perRequest(x uint64) float64 {
	if v.timedRequests == 0 {
		return 0
	}
	return float64(x) / float64(v.timedRequests)
}

// breakdown lists per-request counts by name, largest first, for the "where
// the time goes" section.
func (v *variant) breakdown(m map[string]uint64) string {
	type kv struct {
		k string
		n uint64
	}
	var kvs []kv
	for k, n := range m {
		if n > 0 {
			kvs = append(kvs, kv{k, n})
		}
	}
	sort.Slice(kvs, func(i, j int) bool {
		if kvs[i].n != kvs[j].n {
			return kvs[i].n > kvs[j].n
		}
		return kvs[i].k < kvs[j].k
	})
	s := ""
	for i, e := range kvs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s %.3g", e.k, v.perRequest(e.n))
	}
	if s == "" {
		s = "none"
	}
	return s
}

// wasmResults is what the per-request and memory phases measured.
type wasmResults struct {
	variants []*variant
	// ratios per round, by name.
	ratios map[string][]float64
	// Memory checkpoints, ascending.
	checkpoints []int
}

// ratioSpecs are the per-round ratios reported: numerator, denominator.
var ratioSpecs = []struct{ name, num, den string }{
	{"filter authority / authority-floor", "filter authority", "authority-floor"},
	{"filter header / authority-floor", "filter header", "authority-floor"},
	{"filter authority, 8 hosts / authority-floor", "filter authority, 8 hosts", "authority-floor"},
	{"filter static / noop", "filter static", "noop"},
	{"filter authority, include 20 / authority-floor", "filter authority, include 20", "authority-floor"},
	{"filter authority, ignore rules / authority-floor", "filter authority, ignore rules", "authority-floor"},
	{"filter authority, hold other keys / authority-floor", "filter authority, hold other keys", "authority-floor"},
}

func (r *wasmResults) variant(name string) *variant {
	for _, v := range r.variants {
		if v.name == name {
			return v
		}
	}
	panic("no variant " + name)
}

// runVariants starts every variant, warms them up, runs the timed rounds
// round-robin (rotating who goes first, so no variant always follows the
// same neighbour), then drives each to the last memory checkpoint.
func runVariants(ctx context.Context, o options, mods map[string]*wasmhost.Module) (*wasmResults, error) {
	res := &wasmResults{ratios: map[string][]float64{}, checkpoints: []int{o.mem1, o.mem2}}
	defer func() {
		for _, v := range res.variants {
			_ = v.host.Close(ctx)
		}
	}()
	for _, spec := range variantSpecs {
		v, err := newVariant(ctx, spec, mods[spec.module])
		if err != nil {
			return nil, err
		}
		res.variants = append(res.variants, v)
	}

	phase := startPhase("warm-up")
	for _, v := range res.variants {
		if _, err := v.drive(ctx, o.warmup, res.checkpoints); err != nil {
			return nil, err
		}
		if err := v.tick(ctx); err != nil {
			return nil, err
		}
	}
	phase.end()

	phase = startPhase(fmt.Sprintf("rounds (%d × %s requests × %d variants)", o.rounds, count(o.n), len(res.variants)))
	for r := 0; r < o.rounds; r++ {
		for i := range res.variants {
			v := res.variants[(i+r)%len(res.variants)]
			if err := v.timed(ctx, o.n, res.checkpoints); err != nil {
				return nil, err
			}
		}
		// A flush between rounds, as Envoy's timer would make about once per
		// segment; never inside a timed segment.
		for _, v := range res.variants {
			if err := v.tick(ctx); err != nil {
				return nil, err
			}
		}
		for _, rs := range ratioSpecs {
			num, den := res.variant(rs.num).nsPerReq[r], res.variant(rs.den).nsPerReq[r]
			res.ratios[rs.name] = append(res.ratios[rs.name], num/den)
		}
		fmt.Fprintf(os.Stderr, "  round %d/%d:", r+1, o.rounds)
		for _, v := range res.variants {
			fmt.Fprintf(os.Stderr, " %s %.0f ns", v.name, v.nsPerReq[r])
		}
		fmt.Fprintln(os.Stderr)
	}
	phase.end()

	phase = startPhase(fmt.Sprintf("memory (to %s requests per variant)", count(o.mem2)))
	for {
		moved := false
		for _, v := range res.variants {
			left := o.mem2 - v.requests
			if left <= 0 {
				continue
			}
			moved = true
			if _, err := v.drive(ctx, min(left, o.n), res.checkpoints); err != nil {
				return nil, err
			}
			if err := v.tick(ctx); err != nil {
				return nil, err
			}
		}
		if !moved {
			break
		}
	}
	phase.end()

	phase = startPhase(fmt.Sprintf("long run (%s ticks per filter variant, %d requests before each)", count(o.longTicks), o.longRequests))
	for _, v := range res.variants {
		if err := v.longRun(ctx, o.longTicks, o.longRequests); err != nil {
			return nil, err
		}
	}
	phase.end()

	for _, v := range res.variants {
		v.polls = v.host.Stats().PollOneoff
		if err := v.check(ctx); err != nil {
			return nil, err
		}
	}
	return res, nil
}
