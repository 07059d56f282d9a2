package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/filter/key"
	"github.com/reqcount/reqcount/filter/table"
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
	switch p.cfg.KeySource {
	case config.KeySourceStatic:
		// Reads no header at all. The entry's Ref spares the map lookup; it goes
		// stale when a flush drops the idle entry, and is renewed then.
		if !p.countRef(p.staticRef) {
			p.staticRef, _ = p.countKey(p.staticKey)
		}
	case config.KeySourceHeader:
		svc, _ := getRequestHeader(p.cfg.ServiceHeader)
		ns := ""
		if svc != "" {
			ns, _ = getRequestHeader(p.cfg.NamespaceHeader)
		}
		p.count(p.parser.AppendHeaders(p.keyBuf[:0], svc, ns))
	default:
		authority, _ := getRequestHeader(":authority")
		p.countAuthority(authority)
	}
	return types.ActionContinue
}

// countAuthority counts a request by its :authority. An authority seen before
// (the common case: clients repeat the same Host) is counted through the memo with
// one map lookup; a new one is parsed, counted, and remembered.
func (p *pluginContext) countAuthority(authority string) {
	// Consecutive requests often carry the same authority: a string compare is
	// cheaper than the memo's hash. The authority aliases host-copied bytes that
	// the next callback overwrites (filter/_sdkabi), so it is remembered as a copy.
	if p.lastAuthority.is(authority) && p.countRef(p.lastRef) {
		return
	}
	ref, ok := p.memo.Get(authority)
	if !ok || !p.countRef(ref) {
		k, reason := p.parser.AppendAuthority(p.keyBuf[:0], authority)
		if ref, ok = p.count(k, reason); !ok {
			return
		}
		p.memo.Put(authority, ref) // Put copies authority
	}
	if p.lastAuthority.set(authority) {
		p.lastRef = ref
	} else {
		p.lastRef = table.Ref{} // too long to remember: matches no entry
	}
}

// authorityCopy holds a copy of an authority in bytes the plugin owns, so that
// it can be compared with the next request's without allocating.
type authorityCopy struct {
	n   int
	buf [authorityCopyMax]byte
}

// authorityCopyMax is the longest authority remembered: a DNS name (253) and a
// port. A longer one is not a key anyway.
const authorityCopyMax = 253 + len(":65535")

// is reports whether the copy holds s.
func (a *authorityCopy) is(s string) bool { return string(a.buf[:a.n]) == s }

// set copies s, or empties the copy and returns false if s is too long.
func (a *authorityCopy) set(s string) bool {
	if len(s) > len(a.buf) {
		a.n = 0
		return false
	}
	a.n = copy(a.buf[:], s)
	return true
}

// count adds one request for k, or tallies why it was not counted. It returns
// the entry counted into, and false if the request was not counted.
func (p *pluginContext) count(k []byte, reason key.Reason) (table.Ref, bool) {
	if reason != key.OK {
		p.tallies.uncounted[reason]++
		return table.Ref{}, false
	}
	return p.countKey(k)
}

// countKey adds one request for k, adding k to the table if new; a full table
// tallies an overflow and returns false.
func (p *pluginContext) countKey(k []byte) (table.Ref, bool) {
	ref, ok := p.table.AddKey(k, 1)
	if ok {
		p.tallies.counted++
	} else {
		p.tallies.overflow++
	}
	return ref, ok
}

// countRef adds one request to the entry ref names and returns true, or returns
// false, counting nothing, if that entry is gone.
func (p *pluginContext) countRef(ref table.Ref) bool {
	if !p.table.AddRef(ref, 1) {
		return false
	}
	p.tallies.counted++
	return true
}
