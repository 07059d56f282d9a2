// Command noop is the floor of the benchmarks: a proxy-wasm plugin on the SDK
// that creates its VM, plugin and HTTP contexts and does nothing per request.
// Whatever a request costs here is the price of the SDK, the Go runtime and
// the host's guest entries, before any work of the filter.
//
// Build it (the SDK's usual export set, no lean tag) with
//
//	filter/_sdkabi/build.sh -o build/noop.wasm ./bench/noop
package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"
)

// init, not main, sets the VM context: a -buildmode=c-shared module runs
// package init functions in _initialize but never calls main.
func init() { proxywasm.SetVMContext(&vmContext{}) }

func main() {}

type vmContext struct{ types.DefaultVMContext }

func (*vmContext) NewPluginContext(uint32) types.PluginContext { return &pluginContext{} }

type pluginContext struct{ types.DefaultPluginContext }

func (*pluginContext) NewHttpContext(uint32) types.HttpContext { return &httpContext{} }

// httpContext overrides no callback: every one answers the SDK's default.
type httpContext struct{ types.DefaultHttpContext }
