package main

import (
	"math"
	"math/rand/v2"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/filter/flush"
	"github.com/reqcount/reqcount/filter/key"
	"github.com/reqcount/reqcount/filter/streamhook"
	"github.com/reqcount/reqcount/filter/table"
)

// vmContext makes one pluginContext per root context Envoy creates.
type vmContext struct {
	types.DefaultVMContext
}

// NewPluginContext is called by Envoy for each root context.
func (*vmContext) NewPluginContext(contextID uint32) types.PluginContext {
	p := &pluginContext{rootID: contextID}
	p.stream.plugin = p
	return p
}

// pluginContext is the per-worker state: configuration, counts and flushes.
type pluginContext struct {
	types.DefaultPluginContext

	// rootID is this root context's id: wake-ups are dispatched as its calls.
	rootID  uint32
	cfg     config.Config
	started bool
	parser  key.Parser
	table   *table.Table
	memo    *table.Memo // authority as sent → entry; see countAuthority
	// lastAuthority and lastRef are the last authority counted and its entry.
	lastAuthority authorityCopy
	lastRef       table.Ref
	flusher       *flush.Flusher
	// now is Entry.Last for a request now: 1 + the flusher's tick count.
	now uint32
	// ignoring is set when ignore_paths or ignore_user_agents are: only then are
	// :path and user-agent read.
	ignoring bool
	// wakeTicks is wake_after in ticks (0: no wake-ups): a key whose last request
	// is more than wakeTicks ticks old is sent at once on its next one.
	wakeTicks uint32

	// staticKey is the key counted in static mode, staticRef its entry.
	staticKey []byte
	staticRef table.Ref
	// keyBuf is where a request's key is written: reused, so counting a known key
	// allocates nothing.
	keyBuf [key.MaxLen]byte
	// stream is the one HTTP context handed out for every stream: the filter keeps no
	// per-stream state, so there is nothing to allocate per request.
	stream httpContext

	// series are the per-service counters (series.go).
	series series
	// tallies are counted locally on the hot path and pushed to Envoy's counters once
	// per tick, which keeps host calls off the hot path.
	tallies tallies
	metrics metrics
	// callHdrs are the headers of every report (flush.go).
	callHdrs callHeaders
	// calls pools the answer callbacks of the worker's own calls (flush.go).
	calls    calls
	draining bool
	// drainBy is the tick count by which a draining worker stops retrying
	// what failed and waiting for its outbox to be delivered (drainTicks).
	drainBy uint32
	// finished is set once the shutdown is over (or proxy_done was called).
	finished bool
	// agg is the aggregate: envoy side, nil with aggregate: worker.
	agg *aggregator
	// logged is the flusher's stats at the last failure log (logFailedCalls).
	logged flush.Stats

	// hold is the held requests and their checks (hold.go), nil without
	// hold; pause tells the request callback to hold its stream.
	hold  *holdSide
	pause bool
}

// OnPluginStart reads and validates the configuration. A refused configuration
// fails the start with one error-level log line naming the field and why.
func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	data, err := proxywasm.GetPluginConfiguration()
	if err != nil && err != types.ErrorStatusNotFound {
		proxywasm.LogErrorf("reqcount: cannot read the plugin configuration: %v", err)
		return types.OnPluginStartStatusFailed
	}
	cfg, err := config.Parse(data)
	if err != nil {
		proxywasm.LogErrorf("reqcount: %v", err)
		return types.OnPluginStartStatusFailed
	}
	if err := p.metrics.define(cfg.Slices()); err != nil {
		proxywasm.LogErrorf("reqcount: cannot define metrics: %v", err)
		return types.OnPluginStartStatusFailed
	}
	if err := proxywasm.SetTickPeriodMilliSeconds(uint32(tickPeriod(cfg) / time.Millisecond)); err != nil {
		proxywasm.LogErrorf("reqcount: cannot set the tick period to %v: %v", tickPeriod(cfg), err)
		return types.OnPluginStartStatusFailed
	}
	p.start(cfg)
	// The first push takes the GC pacer's first estimate (gcpace.go) before any
	// tick, and sets the reqcount.vm.* gauges from the start.
	p.pushMetrics()
	if p.agg != nil {
		proxywasm.LogInfof("reqcount: aggregate envoy: worker %s", p.agg.worker.ID)
	}
	proxywasm.LogInfof("reqcount: started: cluster %q, path %q, mode %s, key_source %s, flush_interval %v (%d ticks of %v), "+
		"wake_after %v, aggregate %s, timeout %v, max_keys %d, include %d patterns, exclude %d, ignore_paths %d, ignore_user_agents %d",
		cfg.Cluster, cfg.Path, cfg.Mode, cfg.KeySource, cfg.FlushInterval, cfg.Slices(), cfg.TickPeriod(),
		cfg.WakeAfter, cfg.Aggregate, cfg.Timeout, cfg.MaxKeys, len(cfg.Include), len(cfg.Exclude), len(cfg.IgnorePaths), len(cfg.IgnoreUserAgents))
	return types.OnPluginStartStatusOK
}

// start builds the worker's state from a valid configuration.
func (p *pluginContext) start(cfg config.Config) {
	p.cfg = cfg
	p.parser = key.NewParser(cfg.DefaultNamespace, cfg.ClusterDomain)
	p.table = table.New(cfg.MaxKeys)
	if cfg.MemoSize > 0 {
		p.memo = table.NewMemo(cfg.MemoSize)
	}
	if cfg.KeySource == config.KeySourceStatic {
		p.staticKey, _ = p.parser.AppendHeaders(nil, cfg.Service, cfg.Namespace)
	}
	p.callHdrs.set([][2]string{
		{":method", "POST"},
		{":path", cfg.Path},
		{":authority", cfg.Authority},
		{"content-type", "application/json"},
	})
	p.ignoring = len(cfg.IgnorePaths) > 0 || len(cfg.IgnoreUserAgents) > 0
	if cfg.WakeAfter > 0 {
		p.wakeTicks = uint32(min(math.Ceil(float64(cfg.WakeAfter)/float64(cfg.TickPeriod())), math.MaxUint32/2))
	}
	p.calls.settle = p.onResponse
	p.flusher = flush.New(p.table, flush.Options{
		Batch:        cfg.Mode == config.ModeBatch,
		AbandonAfter: abandonAfter(cfg),
		Slices:       cfg.Slices(),
		Phase:        randomPhase(cfg.Slices()),
		IdleTicks:    p.wakeTicks,
		Meter:        p.meter,
		WakeOnly:     cfg.Aggregate == config.AggregateEnvoy,
	}, p.dispatch)
	if cfg.Aggregate == config.AggregateEnvoy {
		p.agg = newAggregator(p, cfg)
	}
	p.series = newSeries(cfg.MaxKeys)
	p.startHold(cfg)
	p.now = p.flusher.Now() + 1
	p.started = true
}

// randomPhase picks the worker's slice phase in [0, n): workers (and sidecars)
// started together then report each key at different times. A variable so that
// native tests can fix it.
var randomPhase = func(n int) int { return rand.IntN(n) }

// drainTicks is how long a shutting-down worker keeps sending what failed:
// as long as a lease holder of aggregate: envoy waits for its reservations
// (two of them and a lease, each longer than two timeouts), so a collector
// that fails for a while at shutdown does not lose the counts; never for
// ever, so the shutdown ends. Without the retry, a worker stopped while the
// collector failed lost its last reports (e2e TestSimAggregate, worker mode;
// filtertest "flush/shutdown retries a failed call").
func drainTicks(cfg config.Config) uint32 {
	tick := max(cfg.TickPeriod().Milliseconds(), 1)
	return uint32(2*(reserveMs(cfg)+leaseMs(cfg))/tick) + 2
}

// abandonAfter is how many ticks a call may go unanswered: twice the timeout plus two
// ticks. Envoy answers every call by its timeout, so this never fires under Envoy.
func abandonAfter(cfg config.Config) uint64 {
	ticks := math.Ceil(float64(2*cfg.Timeout) / float64(cfg.TickPeriod()))
	return uint64(ticks) + 2
}

// NewHttpContext hands every stream the same context: see pluginContext.stream.
// The filter's build of the SDK does not call it (SharedHttpContext); the
// SDK's native test host does, and with hold each stream then gets a wrapper
// that tells the shared context its id (streamhook), as the build's glue does.
func (p *pluginContext) NewHttpContext(id uint32) types.HttpContext {
	if !p.started {
		return nil // Envoy does not create streams for a plugin that failed to start
	}
	if p.hold != nil {
		return &idStream{p: p, id: id}
	}
	return &p.stream
}

// idStream is a stream of the SDK's native host with hold set: it passes
// the stream's id to the shared context, and its end to streamhook.
type idStream struct {
	types.DefaultHttpContext
	p  *pluginContext
	id uint32
}

func (s *idStream) OnHttpRequestHeaders(n int, eos bool) types.Action {
	streamhook.Current = s.id
	return s.p.stream.OnHttpRequestHeaders(n, eos)
}

func (s *idStream) OnHttpStreamDone() { streamhook.Ended(s.id) }

// SharedHttpContext tells the filter's build of the SDK (filter/_sdkabi,
// streams_wasip1.go) that every stream uses the same context and keeps no state
// of its own, so that it keeps no per-stream bookkeeping either: NewHttpContext
// is then not called, and the stream context checks that the plugin started.
func (p *pluginContext) SharedHttpContext() types.HttpContext { return &p.stream }
