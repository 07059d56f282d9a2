package main

import (
	"strings"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/filter/key"
	"github.com/reqcount/reqcount/filter/merge"
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
	counted  uint64
	overflow uint64
	excluded uint64
	ignored  uint64
	// seriesOverflow and seriesFailed count requests not added to a per-service
	// series: beyond max_keys series, or refused by the host.
	seriesOverflow, seriesFailed uint64
	// sharedErrors counts shared-data operations that failed (aggregate: envoy;
	// each is retried on the next tick).
	sharedErrors uint64
	// takenOver: merge.Leader.TakenOver, as of the last collect.
	takenOver uint64
	// wakeFailures counts wake-ups that could not be dispatched (their counts
	// wait for the key's next report).
	wakeFailures uint64
	uncounted    [key.NumReasons]uint64
}

// OnHttpRequestHeaders is the hot path: request → key → counter. It never
// changes the request, and stops it only to hold it (a key of hold whose
// destination this worker does not know to be ready: hold.go). A wake-up, if
// the key wakes, is dispatched last.
func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	p := h.plugin
	if !p.started {
		return types.ActionContinue // a stream of a plugin that failed to start: Envoy sends none
	}
	if p.ignoring && p.ignored() {
		p.tallies.ignored++
		return types.ActionContinue
	}
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
	if p.pause {
		p.pause = false
		return types.ActionPause // held (hold.go)
	}
	return types.ActionContinue
}

// ignored reports whether the request's :path or user-agent starts with one of
// the configured prefixes. Only called when some are configured: otherwise the
// filter reads no header beyond its key's.
func (p *pluginContext) ignored() bool {
	if len(p.cfg.IgnorePaths) > 0 {
		if path, err := getRequestHeader(":path"); err == nil && hasAnyPrefix(path, p.cfg.IgnorePaths) {
			return true
		}
	}
	if len(p.cfg.IgnoreUserAgents) > 0 {
		if ua, err := getRequestHeader("user-agent"); err == nil && hasAnyPrefix(ua, p.cfg.IgnoreUserAgents) {
			return true
		}
	}
	return false
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
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
	var ref table.Ref
	ok := false
	if p.memo != nil {
		ref, ok = p.memo.Get(authority)
	}
	if !ok || !p.countRef(ref) {
		k, reason := p.parser.AppendAuthority(p.keyBuf[:0], authority)
		if ref, ok = p.count(k, reason); !ok {
			return
		}
		if p.memo != nil {
			p.memo.Put(authority, ref) // Put copies authority
		}
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
// the entry counted into (excluded keys have one too), and false if the request
// was not counted for a reason that is not the key's (bad key, full table).
func (p *pluginContext) count(k []byte, reason key.Reason) (table.Ref, bool) {
	if reason != key.OK {
		p.tallies.uncounted[reason]++
		return table.Ref{}, false
	}
	return p.countKey(k)
}

// countKey adds one request for k, adding k to the table if new (and deciding
// then, once per key, whether include/exclude let it be counted); a full table
// tallies an overflow and returns false.
func (p *pluginContext) countKey(k []byte) (table.Ref, bool) {
	ref, e, added, ok := p.table.Ensure(k)
	if !ok {
		if p.counts(k) {
			p.tallies.overflow++
		} else {
			p.tallies.excluded++
		}
		return ref, false
	}
	if added {
		e.Excluded = !p.counts(k)
		setHold(e, p.holdState(k, e.Excluded))
		if p.agg != nil {
			e.Group = int32(merge.ShardOf(e.Key, p.agg.slices))
		}
	}
	p.countEntry(ref, e)
	return ref, true
}

// counts applies include and exclude to key k.
func (p *pluginContext) counts(k []byte) bool {
	if len(p.cfg.Include) == 0 && len(p.cfg.Exclude) == 0 {
		return true
	}
	svc, ns := key.Split(string(k))
	return p.cfg.Counts(svc, ns)
}

// countRef adds one request to the entry ref names and returns true, or returns
// false, counting nothing, if that entry is gone. Small enough to be inlined
// into the hot path, with bump: a key counted since the last tick costs no call.
func (p *pluginContext) countRef(ref table.Ref) bool {
	e := p.table.Get(ref)
	return e != nil && (p.bump(e) || p.countEntry(ref, e))
}

// bump counts one request into e if e was counted since the last tick already
// (so it is not excluded, does not wake, and is not to be held): the common
// case. It returns false, counting nothing, otherwise.
func (p *pluginContext) bump(e *table.Entry) bool {
	if e.Last != p.now || e.Slow {
		return false
	}
	e.Pending++
	e.Unmetered++
	p.tallies.counted++
	return true
}

// countEntry counts one request into e (an excluded key's requests are only
// tallied), and wakes the key if it was silent for longer than wake_after: never
// counted before, or its last request more than wakeTicks ticks ago. It returns
// true (the request was taken), for countRef.
func (p *pluginContext) countEntry(ref table.Ref, e *table.Entry) bool {
	if e.Excluded {
		e.Last = p.now
		p.tallies.excluded++
		return true
	}
	wake := p.wakeTicks > 0 && (e.Last == 0 || p.now-e.Last > p.wakeTicks)
	e.Pending++
	e.Unmetered++
	e.Last = p.now
	p.tallies.counted++
	if e.Hold != holdNone {
		// Before the wake-up, which makes the root the effective context:
		// the hold reads the stream's properties.
		p.holdOrWatch(ref, e, wake)
	}
	if wake {
		p.wake(ref)
	}
	return true
}
