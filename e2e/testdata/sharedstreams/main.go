// Command sharedstreams is a test plugin for the wasm glue's shared streams
// (filter/_sdkabi/streams_wasip1.go): its plugin context hands every HTTP stream
// the same context (SharedHttpContext), as the filter does, but it is built with
// the SDK's full export set, so every stream callback goes through the glue.
// e2e/sharedstreams_test.go drives it and reads its counters:
//
//	shared.request_headers, shared.response_headers, shared.stream_done
//	                          one per stream callback the shared context received
//	shared.request_n          the sum of the x-n request header over all streams
//	                          (each stream reads its own headers)
//	shared.dispatched         calls dispatched from a stream (x-dispatch: 1),
//	                          without switching the effective context first
//	shared.answered           answers to them, which arrive on the root context
//	shared.new_http_context   NewHttpContext calls: 0 if the glue shares streams
//
// Built with filter/_sdkabi/build.sh (the SDK's full export set).
package main

import (
	"strconv"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

func init() { proxywasm.SetVMContext(&vmContext{}) }

func main() {}

type vmContext struct{ types.DefaultVMContext }

func (*vmContext) NewPluginContext(uint32) types.PluginContext {
	p := &pluginContext{}
	p.stream.p = p
	return p
}

// counters are the plugin's metrics, in the order of counterNames.
const (
	requestHeaders = iota
	responseHeaders
	streamDone
	requestN
	dispatched
	answered
	newHTTPContext
	numCounters
)

var counterNames = [numCounters]string{
	"shared.request_headers", "shared.response_headers", "shared.stream_done", "shared.request_n",
	"shared.dispatched", "shared.answered", "shared.new_http_context",
}

type pluginContext struct {
	types.DefaultPluginContext
	counters [numCounters]proxywasm.MetricCounter
	stream   httpContext
}

func (p *pluginContext) OnPluginStart(int) types.OnPluginStartStatus {
	for i, name := range counterNames {
		p.counters[i] = proxywasm.DefineCounterMetric(name)
	}
	return types.OnPluginStartStatusOK
}

// SharedHttpContext is the glue's opt-in: every stream uses p.stream.
func (p *pluginContext) SharedHttpContext() types.HttpContext { return &p.stream }

// NewHttpContext is what the SDK would call per stream; the glue must not.
func (p *pluginContext) NewHttpContext(uint32) types.HttpContext {
	p.counters[newHTTPContext].Increment(1)
	return &httpContext{p: p}
}

type httpContext struct {
	types.DefaultHttpContext
	p *pluginContext
}

func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	c := &h.p.counters
	c[requestHeaders].Increment(1)
	if v, err := proxywasm.GetHttpRequestHeader("x-n"); err == nil {
		if n, err := strconv.ParseUint(v, 10, 64); err == nil && n > 0 { // Envoy refuses an increment of 0
			c[requestN].Increment(n)
		}
	}
	if v, _ := proxywasm.GetHttpRequestHeader("x-dispatch"); v == "1" {
		_, err := proxywasm.DispatchHttpCall("c", [][2]string{{":method", "POST"}, {":path", "/"}, {":authority", "c"}}, []byte("x"), nil, 1000,
			func(int, int, int) { c[answered].Increment(1) })
		if err == nil {
			c[dispatched].Increment(1)
		}
	}
	return types.ActionContinue
}

func (h *httpContext) OnHttpResponseHeaders(int, bool) types.Action {
	h.p.counters[responseHeaders].Increment(1)
	return types.ActionContinue
}

func (h *httpContext) OnHttpStreamDone() { h.p.counters[streamDone].Increment(1) }
