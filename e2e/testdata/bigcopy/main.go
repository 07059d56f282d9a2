// Command bigcopy is a test plugin for the wasm glue's allocator
// (filter/_sdkabi): it has the host copy large values into it while it keeps
// the Go heap busy, and logs what it received so that e2e/bigcopy_test.go can
// check every byte. Built with filter/_sdkabi/build.sh (the SDK's full export
// set).
//
// Its plugin configuration is one line of options, then anything (padding that
// makes it large):
//
//	churn=N    allocate N KiB of garbage in every callback (heap pressure)
//	tick=MS    set the tick period; each tick dispatches one call to cluster "c"
//
// It logs, at info level:
//
//	config LEN SUM                   in proxy_on_configure (SUM: FNV-1a 64, hex)
//	headers OK FAILED SUM PAIRS PSUM on request headers: every x-big-* header read
//	                                 one by one (OK read, FAILED refused), SUM over
//	                                 the values read in order; then all headers at
//	                                 once (PAIRS: how many, PSUM over k=v in order,
//	                                 or "-" if that read failed)
//	response STATUS BODYLEN SUM      on a call's answer
//	response failed ERR              when the body could not be read
package main

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

func init() { proxywasm.SetVMContext(&vmContext{}) }

func main() {}

type vmContext struct{ types.DefaultVMContext }

func (*vmContext) NewPluginContext(uint32) types.PluginContext { return &pluginContext{} }

type pluginContext struct {
	types.DefaultPluginContext
	churnKiB int
}

// garbage keeps the last allocations alive for a while, so that the heap is
// always near its GC goal and the next allocation is likely to start a cycle.
var (
	garbage [64][]byte
	next    int
)

func (p *pluginContext) churn() {
	for n := 0; n < p.churnKiB; {
		size := 1 + (next*7)%32 // 1 to 32 KiB
		garbage[next%len(garbage)] = make([]byte, size<<10)
		next++
		n += size
	}
}

func sum(parts ...string) string {
	h := fnv.New64a()
	for _, s := range parts {
		h.Write([]byte(s))
	}
	return strconv.FormatUint(h.Sum64(), 16)
}

func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	data, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		proxywasm.LogErrorf("config failed %v", err)
		return types.OnPluginStartStatusFailed
	}
	proxywasm.LogInfof("config %d %s", len(data), sum(string(data)))
	opts, _, _ := strings.Cut(string(data), "\n")
	for _, o := range strings.Fields(opts) {
		k, v, _ := strings.Cut(o, "=")
		n, _ := strconv.Atoi(v)
		switch k {
		case "churn":
			p.churnKiB = n
		case "tick":
			if err := proxywasm.SetTickPeriodMilliSeconds(uint32(n)); err != nil {
				proxywasm.LogErrorf("tick failed %v", err)
				return types.OnPluginStartStatusFailed
			}
		}
	}
	p.churn()
	return types.OnPluginStartStatusOK
}

func (p *pluginContext) NewHttpContext(uint32) types.HttpContext { return &httpContext{p: p} }

func (p *pluginContext) OnTick() {
	p.churn()
	hs := [][2]string{{":method", "GET"}, {":path", "/"}, {":authority", "c"}}
	if _, err := proxywasm.DispatchHttpCall("c", hs, nil, nil, 5000, p.onResponse); err != nil {
		proxywasm.LogErrorf("dispatch failed %v", err)
	}
}

func (p *pluginContext) onResponse(numHeaders, bodySize, _ int) {
	p.churn()
	status := "-"
	if hs, err := proxywasm.GetHttpCallResponseHeaders(); err == nil {
		for _, h := range hs {
			if h[0] == ":status" {
				status = h[1]
			}
		}
	}
	p.churn()
	body, err := proxywasm.GetHttpCallResponseBody(0, bodySize)
	if err != nil {
		proxywasm.LogInfof("response failed %v", err)
		return
	}
	proxywasm.LogInfof("response %s %d %s", status, len(body), sum(string(body)))
}

type httpContext struct {
	types.DefaultHttpContext
	p *pluginContext
}

func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	var ok, failed int
	var vals []string
	for i := 0; ; i++ {
		h.p.churn()
		v, err := proxywasm.GetHttpRequestHeader("x-big-" + strconv.Itoa(i))
		if err == types.ErrorStatusNotFound {
			break
		}
		if err != nil {
			failed++
			continue
		}
		ok++
		vals = append(vals, v)
	}
	pairs, psum := "-", "-"
	if hs, err := proxywasm.GetHttpRequestHeaders(); err == nil {
		var kv []string
		for _, h := range hs {
			kv = append(kv, h[0]+"="+h[1])
		}
		pairs, psum = strconv.Itoa(len(hs)), sum(kv...)
	}
	proxywasm.LogInfo(fmt.Sprintf("headers %d %d %s %s %s", ok, failed, sum(vals...), pairs, psum))
	return types.ActionContinue
}
