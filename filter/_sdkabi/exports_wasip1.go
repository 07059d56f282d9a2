//go:build wasip1

// This file is not part of the reqcount module: build.sh copies it into a
// build-time copy of github.com/tetratelabs/proxy-wasm-go-sdk v0.24.0
// (proxywasm/internal). See README.md.

package internal

import (
	"runtime"
	"unsafe"
)

// The callbacks the request-count filter needs, exported in every build
// (including -tags proxywasm_lean). Each is a thin wrapper over the SDK's own
// callback (which TinyGo would export through its //export comment) that
// converts the ABI's i32 words to the SDK's Go types: sizes and counts become
// int, an i32 end_of_stream becomes a bool (any non-zero is true, rather than
// trusting the host to pass exactly 0 or 1), and results go back as uint32.
//
// A panic in the SDK or the Go runtime is a trap in the host. The SDK panics
// on ids it does not know: proxy_on_context_create for an unknown root, or
// when the plugin context makes neither an HTTP nor a TCP context; callbacks
// for unknown contexts (proxy_on_configure, proxy_on_tick,
// proxy_on_request_headers, ...); proxy_on_http_call_response for an unknown
// root or callout token; proxy_on_delete of an unknown context. A host that
// follows the ABI's lifecycle sends none of those.

//go:wasmexport proxy_abi_version_0_2_0
func exportABIVersion() { proxyABIVersion() }

// allocKeep holds the last blocks handed to the host by
// proxy_on_memory_allocate. From the moment this export returns a block's
// address until the host call that asked for it returns and the SDK turns the
// address the host wrote back into a *byte, the block is referenced only by an
// integer. If the host enters the guest again in that window (for instance to
// allocate a second block) and that entry runs a GC, the block could be freed
// and reused while the host is still to copy into it. proxy-wasm-cpp-host
// allocates at most once per host call; a few slots are a cheap margin for
// hosts that allocate more. Once the SDK holds the *byte (or a string or slice
// over it) the GC sees the block again, and the slot only delays its
// collection until it is overwritten.
var (
	allocKeep [4]unsafe.Pointer
	allocNext int
	// allocZero answers zero-byte requests: a valid address that no one
	// reads or writes (the SDK's make([]byte, 0) then &buf[0] would panic).
	allocZero byte
)

//go:wasmexport proxy_on_memory_allocate
func exportOnMemoryAllocate(size uint32) *byte {
	if size == 0 {
		return &allocZero
	}
	buf := make([]byte, size)
	allocKeep[allocNext] = unsafe.Pointer(&buf[0])
	allocNext = (allocNext + 1) % len(allocKeep)
	return &buf[0]
}

//go:wasmexport proxy_on_context_create
func exportOnContextCreate(contextID, parentContextID uint32) {
	proxyOnContextCreate(contextID, parentContextID)
}

//go:wasmexport proxy_on_vm_start
func exportOnVMStart(pluginContextID, vmConfigurationSize uint32) bool {
	return bool(proxyOnVMStart(pluginContextID, int(vmConfigurationSize)))
}

//go:wasmexport proxy_on_configure
func exportOnConfigure(pluginContextID, pluginConfigurationSize uint32) bool {
	return bool(proxyOnConfigure(pluginContextID, int(pluginConfigurationSize)))
}

//go:wasmexport proxy_on_request_headers
func exportOnRequestHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	return uint32(proxyOnRequestHeaders(contextID, int(numHeaders), endOfStream != 0))
}

//go:wasmexport proxy_on_tick
func exportOnTick(pluginContextID uint32) {
	proxyOnTick(pluginContextID)
	runtime.Gosched() // see yieldEvery
}

//go:wasmexport proxy_on_http_call_response
func exportOnHttpCallResponse(pluginContextID, calloutID, numHeaders, bodySize, numTrailers uint32) {
	proxyOnHttpCallResponse(pluginContextID, calloutID, int(numHeaders), int(bodySize), int(numTrailers))
}

//go:wasmexport proxy_on_done
func exportOnDone(contextID uint32) bool { return proxyOnDone(contextID) }

//go:wasmexport proxy_on_delete
func exportOnDelete(contextID uint32) {
	proxyOnDelete(contextID)
	deletes++
	if deletes%yieldEvery == 0 {
		runtime.Gosched()
	}
}

// yieldEvery is how many proxy_on_delete calls pass between two yields to the
// Go scheduler (proxy_on_tick always yields too).
//
// Why yield at all: in a c-shared wasip1 module the Go runtime runs only
// inside export calls, on one goroutine that never blocks, so the scheduler
// never runs the GC's background mark workers. A GC cycle then advances only
// through allocation assists, and once the GC CPU limiter turns on (GC work
// above about half the guest's time, easily reached under allocation bursts)
// assists stop too, the limiter itself is re-evaluated only by the scheduler
// (there is no sysmon on wasm), and the cycle never ends: from then on
// nothing is freed and linear memory grows until the VM fails. Seen with Go
// 1.26 on wazero: GC stuck at cycle ~110 with /gc/limiter/last-enabled equal
// to the current cycle, and unstuck by a Gosched. runtime.Gosched lets the
// scheduler update the limiter and run the mark workers, then resumes this
// goroutine; with nothing else runnable it costs one trip through the
// scheduler, so doing it once every yieldEvery streams is cheap and bounds
// what a stuck cycle can pile up.
const yieldEvery = 256

var deletes uint32
