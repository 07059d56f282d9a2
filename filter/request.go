package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/filter/key"
)

// httpContext counts each request once, when its headers arrive. It holds no
// per-stream state, so one value serves every stream of a worker.
type httpContext struct {
	types.DefaultHttpContext
	plugin *pluginContext
}

// getRequestHeader reads one request header. It is a variable so that the native
// tests can count the reads (proxytest cannot); the wasm host counts them itself.
var getRequestHeader = proxywasm.GetHttpRequestHeader

// tallies are the hot path's own counts, pushed to Envoy's counters on each tick.
type tallies struct {
	counted   uint64
	overflow  uint64
	uncounted [key.NumReasons]uint64
}

// OnHttpRequestHeaders is the hot path: request → key → counter. It never stops or
// changes the request.
func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	p := h.plugin
	var k []byte
	var reason key.Reason
	switch p.cfg.KeySource {
	case config.KeySourceStatic:
		k = p.staticKey // reads no header at all
	case config.KeySourceHeader:
		svc, _ := getRequestHeader(p.cfg.ServiceHeader)
		ns := ""
		if svc != "" {
			ns, _ = getRequestHeader(p.cfg.NamespaceHeader)
		}
		k, reason = p.parser.AppendHeaders(p.keyBuf[:0], svc, ns)
	default:
		authority, _ := getRequestHeader(":authority")
		p.countAuthority(authority)
		return types.ActionContinue
	}
	p.count(k, reason)
	return types.ActionContinue
}

// countAuthority counts a request by its :authority. An authority seen before
// (the common case: clients repeat the same Host) is counted through the memo with
// one map lookup; a new one is parsed, counted, and remembered.
func (p *pluginContext) countAuthority(authority string) {
	if ref, ok := p.memo.Get(authority); ok && p.table.AddRef(ref, 1) {
		p.tallies.counted++
		return
	}
	k, reason := p.parser.AppendAuthority(p.keyBuf[:0], authority)
	if reason != key.OK {
		p.tallies.uncounted[reason]++
		return
	}
	ref, ok := p.table.AddKey(k, 1)
	if !ok {
		p.tallies.overflow++
		return
	}
	p.tallies.counted++
	p.memo.Put(authority, ref)
}

// count adds one request for k, or tallies why it was not counted.
func (p *pluginContext) count(k []byte, reason key.Reason) {
	switch {
	case reason != key.OK:
		p.tallies.uncounted[reason]++
	case p.table.Add(k, 1):
		p.tallies.counted++
	default:
		p.tallies.overflow++
	}
}
