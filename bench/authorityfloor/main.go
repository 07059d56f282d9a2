// Command authorityfloor is a benchmark floor: a proxy-wasm plugin on the SDK
// that reads the :authority request header and does nothing else. The filter
// reads it too to derive its key, so the difference from bench/noop is the
// price of one header read (a host call, a re-entrant
// proxy_on_memory_allocate and the garbage it leaves) before any counting.
//
// Build it (the SDK's usual export set, no lean tag) with
//
//	filter/_sdkabi/build.sh -o build/authorityfloor.wasm ./bench/authorityfloor
package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

// init, not main, sets the VM context: a -buildmode=c-shared module runs
// package init functions in _initialize but never calls main.
func init() { proxywasm.SetVMContext(&vmContext{}) }

func main() {}

// sink keeps the header read from being optimized away.
var sink string

type vmContext struct{ types.DefaultVMContext }

func (*vmContext) NewPluginContext(uint32) types.PluginContext { return &pluginContext{} }

type pluginContext struct{ types.DefaultPluginContext }

func (*pluginContext) NewHttpContext(uint32) types.HttpContext { return &httpContext{} }

type httpContext struct{ types.DefaultHttpContext }

func (*httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	sink, _ = proxywasm.GetHttpRequestHeader(":authority")
	return types.ActionContinue
}
