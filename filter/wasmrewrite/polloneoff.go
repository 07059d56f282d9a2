// Package wasmrewrite rewrites a compiled WebAssembly module at its boundary
// with the host. Its one use: the filter answers its own poll_oneoff.
//
// # Why
//
// Go's runtime calls WASI poll_oneoff from inside the module whenever the
// host cannot see it coming: once any runtime timer exists (the background
// scavenger arms one when it sleeps after returning memory), netpoll is
// initialized, and from then on every start-the-world (the end of every GC
// cycle, so in any callback that allocates) calls netpoll(0), which polls
// with one clock subscription and throws on any error but EINTR
// (runtime/netpoll_wasip1.go); runtime.usleep throws on any error at all
// (runtime/os_wasip1.go). The proxy-wasm-cpp-host of Envoy 1.33 to 1.38
// (PR #427) answers every poll_oneoff with ENOSYS, so on those Envoys the
// VM dies ("fatal error: poll_oneoff failed", errno 52) after a few GC
// cycles under load: the plugin fails on that worker. cpp-host #533 answers
// success with zero events instead; Envoys with it survive.
//
// The cause is in Go's runtime, which the project cannot change, and the
// host is whatever Envoy the user runs. So the fix is at the boundary: the
// built module no longer imports poll_oneoff; its calls go to a function of
// the module's own that answers exactly as #533 does (write 0 to *nevents,
// return success; EFAULT when *nevents is outside memory), without waiting.
// That is what Go needs: netpoll(0) asks for no wait; runtime.usleep
// returning at once is tolerated by its callers (spin-wait loops that
// re-check what they wait for); and the one blocking poll, netpoll(delay)
// in findRunnable, happens only when no goroutine can run, which the filter
// never reaches (each callback's goroutine runs to completion; the SDK's
// Gosched at the end of a tick leaves it runnable). It is also exactly what
// Envoys with #533 answer, so the module behaves identically on both
// cpp-hosts, and imports nothing either lacks.
//
// The e2e test that breaks without it: TestPollOneoffENOSYS (e2e/), which
// drives the bench's heaviest loads on the host's ENOSYS mode (the default
// of e2e/wasmhost) and asserts no trap and no poll_oneoff call after start.
//
// # How
//
// ReplaceImports removes the import and appends the function, renumbering
// every function index in the module (imports come first in the index
// space): call, return_call and ref.func in every body, element segments,
// global initializers, exports, the start function and the name section.
// Indices keep the width of their original LEB128 encoding where they fit
// (Go's linker pads call targets to five bytes), so bodies keep their size.
// The instruction decoder knows WebAssembly 2.0 plus tail calls and fails
// on any other opcode rather than skip an index it cannot see.
package wasmrewrite

// pollOneoffImports are the names the Go runtime may import poll_oneoff
// under (Envoy provides both WASI module names).
var pollOneoffImports = []Import{
	{Module: "wasi_snapshot_preview1", Name: "poll_oneoff"},
	{Module: "wasi_unstable", Name: "poll_oneoff"},
}

// Value types.
const (
	i32 = 0x7f
	i64 = 0x7e
)

// errnoFault is WASI's EFAULT.
const errnoFault = 21

// PollOneoff is the module's own poll_oneoff(in, out, nsubscriptions,
// nevents_ptr) -> errno, as cpp-host #533 answers it (src/exports.cc
// wasi_unstable_poll_oneoff): *nevents_ptr = 0 and success, or EFAULT when
// the four bytes at nevents_ptr are not all inside memory 0.
var PollOneoff = Func{
	Params:  []byte{i32, i32, i32, i32},
	Results: []byte{i32},
	Name:    "poll_oneoff (the module's own: github.com/reqcount/reqcount/filter/wasmrewrite)",
	Body: []byte{
		0x00,       // no locals
		0x20, 0x03, // local.get 3 (nevents_ptr)
		0xad,       // i64.extend_i32_u
		0x42, 0x04, // i64.const 4
		0x7c,       // i64.add
		0x3f, 0x00, // memory.size 0 (pages)
		0xad,       // i64.extend_i32_u
		0x42, 0x10, // i64.const 16
		0x86,       // i64.shl (bytes)
		0x56,       // i64.gt_u
		0x04, 0x40, // if
		0x41, errnoFault, // i32.const EFAULT
		0x0f,       // return
		0x0b,       // end
		0x20, 0x03, // local.get 3
		0x41, 0x00, // i32.const 0
		0x36, 0x02, 0x00, // i32.store align=4 offset=0
		0x41, 0x00, // i32.const 0 (success)
		0x0b, // end
	},
}

// OwnPollOneoff returns wasm with its poll_oneoff imports (under either
// WASI module name) replaced by PollOneoff. A module that imports no
// poll_oneoff comes back unchanged, with an empty Result.Replaced.
func OwnPollOneoff(wasm []byte) ([]byte, Result, error) {
	out, res, err := ReplaceImports(wasm, pollOneoffImports, PollOneoff)
	if err == nil && len(res.Replaced) == 0 {
		out = wasm
	}
	return out, res, err
}
