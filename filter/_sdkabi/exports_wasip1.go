//go:build wasip1

// This file is not part of the reqcount module: build.sh copies it into a
// build-time copy of github.com/tetratelabs/proxy-wasm-go-sdk v0.24.0
// (proxywasm/internal). See README.md.

package internal

import (
	"runtime"

	"github.com/reqcount/reqcount/filter/streamhook"
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
// values, configuration, call responses) from an arena: a block allocated
// once, handed out front to back during a callback, and handed out again from
// its start in the next one. Three rules, all about the Go runtime running
// inside the host's malloc call, or about the bytes it hands out:
//
//   - Nothing on the Go heap inside malloc. Envoy (proxy-wasm-cpp-host's
//     allocMemory) lets the guest call only proxy_log, fd_write and
//     clock_time_get while malloc runs, and traps on anything else. A Go heap
//     allocation there may start or finish a GC cycle, and once the runtime has
//     a timer (the scavenger sets one) every GC start and finish polls with
//     poll_oneoff: the VM would be killed (e2e/flush_large_test.go and
//     e2e/bigcopy_test.go reproduced it). The built module now answers its
//     own poll_oneoff (filter/wasmrewrite), so such a poll no longer reaches
//     the host; the rule stays so the glue does not rest on the rewrite, and
//     because a GC inside a copy is worker time nobody budgeted. So malloc only bumps an offset, and
//     when the arena is full it answers 0: the host's copy then fails
//     (InvalidMemoryAccess, as cpp-host's copyToPointerSize does) and the SDK
//     call returns an error, never a trap. It never writes a pointer either
//     (switching blocks is an index), so not even a write barrier runs there.
//   - Room made before, where a GC is allowed. The callbacks that are told a
//     size before any copy (proxy_on_vm_start, proxy_on_configure,
//     proxy_on_http_call_response's body) reserve a block that large for the
//     callback before entering the SDK (reserveArena); when it runs out, malloc
//     goes on in the home block. Copies nobody announces (header values, a
//     call's response headers) share the home block: arenaSize bytes per
//     callback, more than Envoy's default request header limit (60 KiB).
//   - Reuse: a copy lives until its callback returns. startCallback rewinds the
//     arena at the start of every callback that runs plugin code, so the
//     per-request header copies leave no garbage and the Go heap stops
//     growing. The price is a rule for plugin code: a string or slice the SDK
//     returns from a host read (GetHttpRequestHeader, GetHttpCallResponseHeaders,
//     GetPluginConfiguration, GetHttpCallResponseBody, GetProperty, shared data,
//     queues) aliases the arena, so whatever must outlive the callback is
//     copied first. The SDK itself keeps none of them across callbacks (it
//     returns them to the plugin and forgets them). e2e/aliasing_test.go checks
//     the filter keeps that rule.
//
// Between this export returning an address and the SDK turning it back into a
// pointer, nothing but an integer refers to the bytes: the blocks are package
// variables, so they stay alive regardless.
const (
	// arenaSize is the home block: what one callback can have copied in
	// without announcing a size.
	arenaSize = 64 << 10
	// arenaSlack is added to an announced size: the callback's other copies
	// (a few header values, a property) go there too.
	arenaSlack = 4 << 10
)

// The arena's blocks, indexed by arenaBlock.
const (
	blockHome     = iota // arenaSize bytes, for the life of the VM
	blockReserved        // one callback's announced size; nil otherwise
	numBlocks
)

var (
	arenaBlocks [numBlocks][]byte
	arenaOffs   [numBlocks]int // each block's first free byte
	arenaBlock  int            // the block malloc serves from
	// inCallback is true while a callback that rewound the arena runs. A host
	// that called back into the guest from inside a host call (Envoy defers
	// such re-entries, but nothing in the ABI forbids them) must not rewind
	// the arena under the outer callback's copies.
	inCallback bool
	// allocZero answers zero-byte requests: a valid address that no one
	// reads or writes (the SDK's make([]byte, 0) then &buf[0] would panic).
	allocZero byte
)

func init() { arenaBlocks[blockHome] = make([]byte, arenaSize) }

// missed is the largest copy malloc could not serve since the last host call
// that copies data in, or 0.
var missed int

// growForMissed is called after a host call that copies data in failed: if the
// failure was malloc finding no room (it never allocates), it gives the arena a
// block large enough, here, outside malloc, where the Go allocator may run, and
// reports that the call should be made once more. Shared-data values, buffers
// and header maps have no size announced in advance (a lease holder's view of a
// large outbox, say), so this is how a copy larger than the home block succeeds.
// The block replaced, if any, stays alive while anything points into it.
func growForMissed() bool {
	n := missed
	missed = 0
	if n == 0 || !inCallback {
		return false
	}
	arenaBlocks[blockReserved] = make([]byte, n+arenaSlack)
	arenaBlock, arenaOffs[blockReserved] = blockReserved, 0
	return true
}

// startCallback rewinds the arena for a callback that runs plugin code (all but
// proxy_on_memory_allocate, proxy_on_delete and the ABI version marker), and
// reports whether it did: the caller passes that to endCallback.
func startCallback() bool {
	if inCallback {
		return false
	}
	inCallback = true
	arenaBlock, arenaOffs = blockHome, [numBlocks]int{}
	return true
}

// endCallback closes what startCallback opened: a reserved block is let go
// (the GC frees it once the plugin holds nothing in it).
func endCallback(started bool) {
	if started {
		inCallback = false
		arenaBlocks[blockReserved] = nil
		arenaBlock, arenaOffs = blockHome, [numBlocks]int{}
	}
}

// reserveArena makes sure the callback's copies can take size bytes (an
// announced configuration or body) before the SDK asks the host for them.
// Called after startCallback, outside malloc: it may allocate.
func reserveArena(size uint32) {
	if !inCallback || int(size)+arenaSlack <= len(arenaBlocks[blockHome])-arenaOffs[blockHome] {
		return
	}
	if arenaBlocks[blockReserved] != nil {
		return // re-entered: the outer callback's reservation is in use
	}
	arenaBlocks[blockReserved] = make([]byte, int(size)+arenaSlack)
	arenaBlock, arenaOffs[blockReserved] = blockReserved, 0
}

//go:wasmexport proxy_on_memory_allocate
func exportOnMemoryAllocate(size uint32) *byte {
	if size == 0 {
		return &allocZero
	}
	n := (int(size) + 7) &^ 7 // keep blocks 8-byte aligned
	b := arenaBlock
	if n > len(arenaBlocks[b])-arenaOffs[b] {
		// A used-up reservation goes on in the home block (each block keeps
		// its own offset); a full home block fails the copy, and the SDK call
		// that asked for it returns an error.
		if b = blockHome; n > len(arenaBlocks[b])-arenaOffs[b] {
			missed = max(missed, n) // see growForMissed
			return nil
		}
		arenaBlock = b
	}
	p := &arenaBlocks[b][arenaOffs[b]]
	arenaOffs[b] += n
	return p
}

//go:wasmexport proxy_on_context_create
func exportOnContextCreate(contextID, parentContextID uint32) {
	if parentContextID != 0 && createStream(contextID, parentContextID) {
		return // a shared stream: no plugin code runs (streams_wasip1.go)
	}
	s := startCallback()
	proxyOnContextCreate(contextID, parentContextID)
	if parentContextID == 0 {
		rootCreated(contextID)
	}
	endCallback(s)
}

//go:wasmexport proxy_on_vm_start
func exportOnVMStart(pluginContextID, vmConfigurationSize uint32) bool {
	s := startCallback()
	reserveArena(vmConfigurationSize)
	ok := bool(proxyOnVMStart(pluginContextID, int(vmConfigurationSize)))
	endCallback(s)
	return ok
}

//go:wasmexport proxy_on_configure
func exportOnConfigure(pluginContextID, pluginConfigurationSize uint32) bool {
	s := startCallback()
	reserveArena(pluginConfigurationSize)
	ok := bool(proxyOnConfigure(pluginContextID, int(pluginConfigurationSize)))
	endCallback(s)
	return ok
}

//go:wasmexport proxy_on_request_headers
func exportOnRequestHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	s := startCallback()
	var a uint32
	if c, ok := sharedStream(contextID); ok {
		streamhook.Current = contextID
		a = uint32(c.OnHttpRequestHeaders(int(numHeaders), endOfStream != 0))
	} else {
		a = uint32(proxyOnRequestHeaders(contextID, int(numHeaders), endOfStream != 0))
	}
	endCallback(s)
	return a
}

//go:wasmexport proxy_on_tick
func exportOnTick(pluginContextID uint32) {
	s := startCallback()
	proxyOnTick(pluginContextID)
	endCallback(s)
	runtime.Gosched() // see yieldEvery
}

//go:wasmexport proxy_on_http_call_response
func exportOnHttpCallResponse(pluginContextID, calloutID, numHeaders, bodySize, numTrailers uint32) {
	s := startCallback()
	reserveArena(bodySize)
	rec := calloutRecord(pluginContextID, calloutID) // reused once the SDK is done with it (callhook_wasip1.go)
	proxyOnHttpCallResponse(pluginContextID, calloutID, int(numHeaders), int(bodySize), int(numTrailers))
	recycleCallout(rec)
	endCallback(s)
}

//go:wasmexport proxy_on_done
func exportOnDone(contextID uint32) bool {
	if _, ok := streamRoots.Get(contextID); ok {
		if streamhook.Watched.Len() > 0 {
			// A stream the plugin watches (it held it, or may need to see
			// its response): its end runs plugin code.
			if _, watched := streamhook.Watched.Get(contextID); watched {
				s := startCallback()
				streamhook.Ended(contextID)
				endCallback(s)
			}
		}
		return true // a shared stream: done at once, as the SDK answers for any stream
	}
	s := startCallback()
	ok := proxyOnDone(contextID)
	endCallback(s)
	return ok
}

//go:wasmexport proxy_on_delete
func exportOnDelete(contextID uint32) {
	// No startCallback: the SDK runs no plugin code here, so nothing is copied in.
	if !deleteContext(contextID) {
		proxyOnDelete(contextID)
	}
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
