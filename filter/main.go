// Command filter is the request-count proxy-wasm plugin. Envoy loads it as an HTTP
// filter; for every request it works out the destination (service, namespace),
// counts it, and periodically sends the counts to a collector cluster as
// RequestCount messages (package messages).
//
// Files, one concern each:
//   - main.go: registration.
//   - plugin.go: configuration and the plugin (root) context.
//   - request.go: the hot path, request → key → counter.
//   - flush.go: the flush path, tick → encode → dispatch → response, and shutdown.
//   - metrics.go: the filter's own Envoy counters.
//
// The logic lives in plain-Go packages (config, key, table, flush) with no SDK import.
package main

import "github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

// The VM context is set in init, not main: a module built with -buildmode=c-shared
// runs package init functions from _initialize and never runs main. init may call no
// host function but proxy_log (Envoy allows nothing else before on_vm_start), and
// SetVMContext calls none.
func init() {
	proxywasm.SetVMContext(&vmContext{})
}

// main is required by package main and by TinyGo builds; with -buildmode=c-shared it
// never runs.
func main() {}
