package main

import (
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/filter/key"
	"github.com/reqcount/reqcount/filter/table"
)

// hotPathCase is one way a request reaches the counter, as OnHttpRequestHeaders
// does it, minus the SDK's header read (a host call, which these tests avoid).
type hotPathCase struct {
	name   string
	config string
	// request counts one request the way the hot path does for this key_source.
	request func(p *pluginContext)
	// tally reads the counter the request must land in.
	tally func(p *pluginContext) uint64
	// key is the table key counted, "" when the request is not counted.
	key string
}

func tallyCounted(p *pluginContext) uint64 { return p.tallies.counted }
func tallyUncounted(r key.Reason) func(p *pluginContext) uint64 {
	return func(p *pluginContext) uint64 { return p.tallies.uncounted[r] }
}

func viaAuthority(a string) func(p *pluginContext) {
	return func(p *pluginContext) { p.countAuthority(a) }
}

// viaAuthorityParsed counts without the memo: parse every time.
func viaAuthorityParsed(a string) func(p *pluginContext) {
	return func(p *pluginContext) {
		k, r := p.parser.AppendAuthority(p.keyBuf[:0], a)
		p.count(k, r)
	}
}

func viaHeaders(svc, ns string) func(p *pluginContext) {
	return func(p *pluginContext) {
		k, r := p.parser.AppendHeaders(p.keyBuf[:0], svc, ns)
		p.count(k, r)
	}
}

// viaStatic runs the real hot path: static mode reads no header.
func viaStatic(p *pluginContext) { p.stream.OnHttpRequestHeaders(0, true) }

var hotPathCases = []hotPathCase{
	{"authority short", `{"cluster":"c"}`, viaAuthority("web.shop"), tallyCounted, "web.shop"},
	{"authority bare", `{"cluster":"c"}`, viaAuthority("web"), tallyCounted, "web.default"},
	{"authority FQDN", `{"cluster":"c"}`, viaAuthority("web.shop.svc.cluster.local:8080"), tallyCounted, "web.shop"},
	{"authority upper case", `{"cluster":"c"}`, viaAuthority("WEB.Shop:80"), tallyCounted, "web.shop"},
	{"authority parsed every time", `{"cluster":"c"}`, viaAuthorityParsed("web.shop.svc.cluster.local:8080"), tallyCounted, "web.shop"},
	{"authority rejected", `{"cluster":"c"}`, viaAuthority("10.0.0.1:8080"), tallyUncounted(key.IPLiteral), ""},
	{"authority missing", `{"cluster":"c"}`, viaAuthority(""), tallyUncounted(key.Missing), ""},
	{"header", `{"cluster":"c","key_source":"header"}`, viaHeaders("web", "shop"), tallyCounted, "web.shop"},
	{"header default namespace", `{"cluster":"c","key_source":"header"}`, viaHeaders("web", ""), tallyCounted, "web.default"},
	{"header bad label", `{"cluster":"c","key_source":"header"}`, viaHeaders("bad_name", "shop"), tallyUncounted(key.BadLabel), ""},
	{"static", `{"cluster":"c","key_source":"static","service":"web","namespace":"shop"}`, viaStatic, tallyCounted, "web.shop"},
}

func startPlugin(t testing.TB, cfgJSON string) *pluginContext {
	t.Helper()
	cfg, err := config.Parse([]byte(cfgJSON))
	if err != nil {
		t.Fatalf("config %s: %v", cfgJSON, err)
	}
	// No host here to dispatch a wake-up to: the scenarios (filtertest) cover
	// wake-ups on proxytest and on the compiled module.
	cfg.WakeAfter = 0
	p := (&vmContext{}).NewPluginContext(1).(*pluginContext)
	p.start(cfg)
	return p
}

// TestHotPathDoesNotAllocate checks that counting a request for a key already
// seen allocates nothing, for every key source; and that the requests measured
// were really counted, so that the check cannot pass by counting nothing.
func TestHotPathDoesNotAllocate(t *testing.T) {
	for _, tc := range hotPathCases {
		t.Run(tc.name, func(t *testing.T) {
			p := startPlugin(t, tc.config)
			tc.request(p) // the first request of a key adds it to the table: that allocates
			const runs = 1000
			if n := testing.AllocsPerRun(runs, func() { tc.request(p) }); n != 0 {
				t.Fatalf("%v allocations per request", n)
			}
			const want = 1 + 1 + runs // first request, AllocsPerRun's warm-up, the runs
			if got := tc.tally(p); got != want {
				t.Fatalf("tally %d, want %d", got, want)
			}
			if tc.key == "" {
				if p.table.Len() != 0 || p.tallies.counted != 0 {
					t.Fatalf("rejected request counted: %d keys, %d counted", p.table.Len(), p.tallies.counted)
				}
				return
			}
			s, ok := p.table.Lookup(tc.key)
			if !ok || p.table.At(s).Pending != want || p.table.Len() != 1 {
				t.Fatalf("table: %s found %v, %d keys", tc.key, ok, p.table.Len())
			}
		})
	}
}

// TestHotPathOverflowDoesNotAllocate checks a full table refuses a new key
// without allocating, and tallies it as overflow.
func TestHotPathOverflowDoesNotAllocate(t *testing.T) {
	p := startPlugin(t, `{"cluster":"c","max_keys":1}`)
	viaAuthority("a.ns")(p)
	other := viaAuthority("b.ns")
	if n := testing.AllocsPerRun(1000, func() { other(p) }); n != 0 {
		t.Fatalf("%v allocations per overflowing request", n)
	}
	if p.tallies.overflow != 1001 || p.tallies.counted != 1 || p.table.Len() != 1 {
		t.Fatalf("tallies %+v, %d keys", p.tallies, p.table.Len())
	}
}

// TestAuthorityMemo checks the memo's way through the hot path: spellings of one
// key share its entry, an entry removed by a flush is not counted through a stale
// memo entry, and a flood of distinct authorities keeps the memo bounded.
func TestAuthorityMemo(t *testing.T) {
	p := startPlugin(t, `{"cluster":"c","max_keys":2}`)
	for _, a := range []string{"web.shop", "web.shop:80", "WEB.shop", "web.shop", "web.shop:80"} {
		p.countAuthority(a)
	}
	s, ok := p.table.Lookup("web.shop")
	if !ok || p.table.At(s).Pending != 5 || p.table.Len() != 1 || p.memo.Len() != 3 {
		t.Fatalf("found %v, %d keys, memo %d", ok, p.table.Len(), p.memo.Len())
	}

	// The entry goes (delivered, then idle for a tick) and its slot is reused by
	// another key: the memo's Ref for web.shop must not count into it.
	p.table.Remove(s)
	p.countAuthority("api.blog")
	p.countAuthority("web.shop")
	for k, want := range map[string]uint64{"api.blog": 1, "web.shop": 1} {
		s, ok := p.table.Lookup(k)
		if !ok || p.table.At(s).Pending != want {
			t.Fatalf("%s: found %v, pending %d, want %d", k, ok, p.table.At(s).Pending, want)
		}
	}

	// The last authority's entry goes and the same authority comes next: the
	// last-authority shortcut must not count into the removed entry.
	s, _ = p.table.Lookup("web.shop")
	p.table.Remove(s)
	p.countAuthority("web.shop")
	if s, ok := p.table.Lookup("web.shop"); !ok || p.table.At(s).Pending != 1 {
		t.Fatalf("web.shop after removal: found %v", ok)
	}

	// A missing authority is "", as is the last authority of a fresh worker: the
	// shortcut must not count it into the first key's entry.
	p = startPlugin(t, `{"cluster":"c"}`)
	p.countAuthority("web.shop")
	p.lastAuthority, p.lastRef = authorityCopy{}, table.Ref{} // as before any request
	p.countAuthority("")
	if s, _ := p.table.Lookup("web.shop"); p.table.At(s).Pending != 1 || p.tallies.uncounted[key.Missing] != 1 {
		t.Fatalf("missing authority: web.shop pending %d, uncounted %d", p.table.At(s).Pending, p.tallies.uncounted[key.Missing])
	}

	// Distinct authorities beyond the memo's bound: it starts over, never grows past it.
	p = startPlugin(t, `{"cluster":"c","max_keys":1}`)
	bound := p.cfg.MemoSize
	for i := 0; i < 3*bound; i++ {
		p.countAuthority("web.shop:" + strconv.Itoa(i+1))
		if p.memo.Len() > bound {
			t.Fatalf("memo holds %d, bound %d", p.memo.Len(), bound)
		}
	}
	if s, _ := p.table.Lookup("web.shop"); p.table.At(s).Pending != uint64(3*bound) {
		t.Fatalf("pending %d, want %d", p.table.At(s).Pending, 3*bound)
	}
}

// TestAuthorityReusedBytes feeds countAuthority authorities that alias one
// buffer, rewritten before each call, as the wasm arena is rewound before each
// callback (filter/_sdkabi): nothing the hot path keeps may alias it. Every
// request must land in its own key, whatever came before it.
func TestAuthorityReusedBytes(t *testing.T) {
	p := startPlugin(t, `{"cluster":"c"}`)
	buf := make([]byte, 512)
	host := func(a string) string { // the host's copy into reused guest memory
		n := copy(buf, a)
		clear(buf[n:])
		return unsafe.String(&buf[0], n)
	}
	long := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + ".svc.cluster.local:" + strings.Repeat("0", 200)
	want := map[string]uint64{}
	seq := []struct{ authority, key string }{
		{"web.shop", "web.shop"}, {"web.shop", "web.shop"}, {"api.blog", "api.blog"},
		{"web.shop", "web.shop"}, {"web.shoq", "web.shoq"}, {"web.shoq", "web.shoq"},
		{long, ""}, {long, ""}, {"web.shop", "web.shop"}, {"", ""}, {"web.shop", "web.shop"},
	}
	for round := 0; round < 3; round++ {
		for _, r := range seq {
			p.countAuthority(host(r.authority))
			if r.key != "" {
				want[r.key]++
			}
		}
	}
	for k, n := range want {
		s, ok := p.table.Lookup(k)
		if !ok || p.table.At(s).Pending != n {
			t.Fatalf("%s: found %v, want %d", k, ok, n)
		}
	}
	if p.table.Len() != len(want) {
		t.Fatalf("%d keys, want %d", p.table.Len(), len(want))
	}
}

func BenchmarkHotPath(b *testing.B) {
	for _, bc := range []struct {
		name    string
		config  string
		request func(p *pluginContext)
	}{
		{"authority short", `{"cluster":"c"}`, viaAuthority("web.shop")},
		{"authority FQDN", `{"cluster":"c"}`, viaAuthority("web.shop.svc.cluster.local:8080")},
		{"authority FQDN parsed every time", `{"cluster":"c"}`, viaAuthorityParsed("web.shop.svc.cluster.local:8080")},
		{"header", `{"cluster":"c","key_source":"header"}`, viaHeaders("web", "shop")},
		{"static", `{"cluster":"c","key_source":"static","service":"web","namespace":"shop"}`, viaStatic},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := startPlugin(b, bc.config)
			bc.request(p)
			b.ReportAllocs()
			for b.Loop() {
				bc.request(p)
			}
		})
	}
}

// TestStreamOfUnstartedPlugin: the shared stream context (SharedHttpContext) is
// handed out before the plugin starts; a stream of a plugin that failed to start
// (Envoy creates none) passes through untouched instead of crashing the VM.
func TestStreamOfUnstartedPlugin(t *testing.T) {
	p := (&vmContext{}).NewPluginContext(1).(*pluginContext)
	if got := p.SharedHttpContext().OnHttpRequestHeaders(0, true); got != types.ActionContinue {
		t.Errorf("OnHttpRequestHeaders = %v, want ActionContinue", got)
	}
	if p.NewHttpContext(2) != nil {
		t.Error("NewHttpContext of an unstarted plugin is not nil")
	}
}
