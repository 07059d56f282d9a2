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

// proxy_on_memory_allocate serves the host's copies into the guest (header
// values, configuration, call responses) from an arena: a heap block that it
// hands out front to back, never reusing a byte, and that a fresh block
// replaces once it runs low. Two reasons, both about the Go runtime running
// inside the host's malloc call:
//
//   - Envoy (proxy-wasm-cpp-host's allocMemory) lets the guest call only
//     proxy_log, fd_write and clock_time_get while malloc runs, and traps on
//     anything else. A Go heap allocation there may start or finish a GC
//     cycle, and once the runtime has a timer (the scavenger sets one) every
//     GC start and finish polls with poll_oneoff: the VM would be killed.
//     Bumping an offset in a block allocated earlier never enters the Go
//     allocator, so no GC work can happen inside malloc.
//   - Between this export returning an address and the SDK turning it back
//     into a pointer, nothing but an integer refers to the bytes. The arena
//     variable keeps the whole block alive meanwhile; afterwards the SDK's
//     pointer (an interior pointer, which Go's GC honours) does.
//
// refillArena replaces a low arena at the start of every callback that runs
// plugin code, where a GC is allowed. Blocks are never reused, so a string the SDK built
// over arena bytes stays valid for as long as it is referenced; a retired
// block is freed by the GC once nothing points into it.
const (
	arenaSize = 64 << 10
	// arenaLow is the free space such a callback starts with: more than the
	// host copies in for one callback in practice (a few header values, a
	// call response), so malloc normally never falls back to the heap.
	arenaLow = 16 << 10
	// arenaMaxBlock is the largest copy served from the arena; larger ones
	// (a big configuration, a big response body) get their own heap block,
	// with the GC caveat above. Keeping it well under arenaLow means one large
	// copy cannot empty the arena.
	arenaMaxBlock = 4 << 10
)

var (
	arena    []byte
	arenaOff int
	// bigKeep holds the last large blocks handed out, for the window
	// described above.
	bigKeep [4]unsafe.Pointer
	bigNext int
	// allocZero answers zero-byte requests: a valid address that no one
	// reads or writes (the SDK's make([]byte, 0) then &buf[0] would panic).
	allocZero byte
)

func init() { arena = make([]byte, arenaSize) }

// refillArena gives the arena at least arenaLow free bytes. Called at the
// start of every callback that runs plugin code (so all but
// proxy_on_memory_allocate, proxy_on_delete and the ABI version marker).
func refillArena() {
	if len(arena)-arenaOff < arenaLow {
		arena, arenaOff = make([]byte, arenaSize), 0
	}
}

//go:wasmexport proxy_on_memory_allocate
func exportOnMemoryAllocate(size uint32) *byte {
	if size == 0 {
		return &allocZero
	}
	n := (int(size) + 7) &^ 7 // keep blocks 8-byte aligned
	if n <= arenaMaxBlock && len(arena)-arenaOff >= n {
		p := &arena[arenaOff]
		arenaOff += n
		return p
	}
	buf := make([]byte, size)
	bigKeep[bigNext] = unsafe.Pointer(&buf[0])
	bigNext = (bigNext + 1) % len(bigKeep)
	return &buf[0]
}

//go:wasmexport proxy_on_context_create
func exportOnContextCreate(contextID, parentContextID uint32) {
	refillArena()
	proxyOnContextCreate(contextID, parentContextID)
}

//go:wasmexport proxy_on_vm_start
func exportOnVMStart(pluginContextID, vmConfigurationSize uint32) bool {
	refillArena()
	return bool(proxyOnVMStart(pluginContextID, int(vmConfigurationSize)))
}

//go:wasmexport proxy_on_configure
func exportOnConfigure(pluginContextID, pluginConfigurationSize uint32) bool {
	refillArena()
	return bool(proxyOnConfigure(pluginContextID, int(pluginConfigurationSize)))
}

//go:wasmexport proxy_on_request_headers
func exportOnRequestHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	refillArena()
	return uint32(proxyOnRequestHeaders(contextID, int(numHeaders), endOfStream != 0))
}

//go:wasmexport proxy_on_tick
func exportOnTick(pluginContextID uint32) {
	refillArena()
	proxyOnTick(pluginContextID)
	runtime.Gosched() // see yieldEvery
}

//go:wasmexport proxy_on_http_call_response
func exportOnHttpCallResponse(pluginContextID, calloutID, numHeaders, bodySize, numTrailers uint32) {
	refillArena()
	proxyOnHttpCallResponse(pluginContextID, calloutID, int(numHeaders), int(bodySize), int(numTrailers))
}

//go:wasmexport proxy_on_done
func exportOnDone(contextID uint32) bool {
	refillArena()
	return proxyOnDone(contextID)
}

//go:wasmexport proxy_on_delete
func exportOnDelete(contextID uint32) {
	// No refillArena: the SDK runs no plugin code here, so nothing is copied in.
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
