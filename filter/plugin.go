package main

import (
	"math"
	"time"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/filter/flush"
	"github.com/reqcount/reqcount/filter/key"
	"github.com/reqcount/reqcount/filter/table"
)

// vmContext makes one pluginContext per root context Envoy creates.
type vmContext struct {
	types.DefaultVMContext
}

// NewPluginContext is called by Envoy for each root context.
func (*vmContext) NewPluginContext(uint32) types.PluginContext {
	p := &pluginContext{}
	p.stream.plugin = p
	return p
}

// pluginContext is the per-worker state: configuration, counts and flushes.
type pluginContext struct {
	types.DefaultPluginContext

	cfg     config.Config
	started bool
	parser  key.Parser
	table   *table.Table
	memo    *table.Memo // authority as sent → entry; see countAuthority
	// lastAuthority and lastRef are the last authority counted and its entry.
	lastAuthority authorityCopy
	lastRef       table.Ref
	flusher       *flush.Flusher

	// staticKey is the key counted in static mode, staticRef its entry.
	staticKey []byte
	staticRef table.Ref
	// keyBuf is where a request's key is written: reused, so counting a known key
	// allocates nothing.
	keyBuf [key.MaxLen]byte
	// stream is the one HTTP context handed out for every stream: the filter keeps no
	// per-stream state, so there is nothing to allocate per request.
	stream httpContext

	// tallies are counted locally on the hot path and pushed to Envoy's counters once
	// per tick, which keeps host calls off the hot path.
	tallies  tallies
	metrics  metrics
	callHdrs [][2]string
	draining bool
	// logged is the flusher's stats at the last failure log (logFailedCalls).
	logged flush.Stats
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
	if err := p.metrics.define(); err != nil {
		proxywasm.LogErrorf("reqcount: cannot define metrics: %v", err)
		return types.OnPluginStartStatusFailed
	}
	if err := proxywasm.SetTickPeriodMilliSeconds(uint32(cfg.FlushInterval / time.Millisecond)); err != nil {
		proxywasm.LogErrorf("reqcount: cannot set the tick period to %v: %v", cfg.FlushInterval, err)
		return types.OnPluginStartStatusFailed
	}
	p.start(cfg)
	proxywasm.LogInfof("reqcount: started: cluster %q, path %q, mode %s, key_source %s, flush_interval %v, timeout %v, max_keys %d",
		cfg.Cluster, cfg.Path, cfg.Mode, cfg.KeySource, cfg.FlushInterval, cfg.Timeout, cfg.MaxKeys)
	return types.OnPluginStartStatusOK
}

// start builds the worker's state from a valid configuration.
func (p *pluginContext) start(cfg config.Config) {
	p.cfg = cfg
	p.parser = key.NewParser(cfg.DefaultNamespace, cfg.ClusterDomain)
	p.table = table.New(cfg.MaxKeys)
	p.memo = table.NewMemo(memoSize(cfg.MaxKeys))
	if cfg.KeySource == config.KeySourceStatic {
		p.staticKey, _ = p.parser.AppendHeaders(nil, cfg.Service, cfg.Namespace)
	}
	p.callHdrs = [][2]string{
		{":method", "POST"},
		{":path", cfg.Path},
		{":authority", cfg.Authority},
		{"content-type", "application/json"},
	}
	p.flusher = flush.New(p.table, flush.Options{
		Batch:        cfg.Mode == config.ModeBatch,
		AbandonAfter: abandonAfter(cfg),
	}, p.dispatch)
	p.started = true
}

// memoSize bounds the authority memo: a few spellings per key (web, web.shop,
// web.shop.svc.cluster.local:8080…), at most 4096 strings, so that a flood of
// distinct authorities costs a bounded amount of memory.
func memoSize(maxKeys int) int {
	return min(4*maxKeys, 4096)
}

// abandonAfter is how many ticks a call may go unanswered: twice the timeout plus two
// ticks. Envoy answers every call by its timeout, so this never fires under Envoy.
func abandonAfter(cfg config.Config) uint64 {
	ticks := math.Ceil(float64(2*cfg.Timeout) / float64(cfg.FlushInterval))
	return uint64(ticks) + 2
}

// NewHttpContext hands every stream the same context: see pluginContext.stream.
func (p *pluginContext) NewHttpContext(uint32) types.HttpContext {
	if !p.started {
		return nil // Envoy does not create streams for a plugin that failed to start
	}
	return &p.stream
}
