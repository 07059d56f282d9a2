// Package wasmhost runs a compiled proxy-wasm module the way Envoy does, on
// wazero, so the project's tests, `make run` and benchmarks can drive
// build/filter.wasm without Envoy (which cannot be installed here) and
// without the SDK's proxytest runner (which cannot start modules built by
// upstream Go: it never calls _initialize).
//
// # Use
//
//	mod, err := wasmhost.Compile(ctx, wasmBytes)      // load-time checks
//	h, err := wasmhost.New(ctx, mod, wasmhost.Config{ // start every worker
//		Workers:      2,
//		PluginConfig: []byte(`{"cluster":"operator"}`),
//		Clusters:     map[string]string{"operator": "127.0.0.1:8013"},
//	})
//	res, err := h.Worker(0).Request(ctx, wasmhost.Request{Headers: ...})
//	err = h.Close(ctx)                                // proxy_on_done, proxy_on_delete
//
// # What follows Envoy (proxy-wasm-cpp-host), and where it matters
//
//   - Two cpp-host WASI surfaces (type WASI): Envoy 1.33 to 1.38's (cpp-host
//     #427, the default: Compile) with 18 WASI functions and poll_oneoff
//     answering ENOSYS, on which Go's runtime throws; and #533's
//     (CompileWASI(…, WASI533)) with every WASI function of FACTS §2 and
//     poll_oneoff answering success with zero events, also inside malloc.
//     Every poll_oneoff call is counted by phase (Stats.PollOneoff).
//   - Load: the ABI version comes from the proxy_abi_version_* export; only
//     the env and WASI functions Envoy provides may be imported, with Envoy's
//     signatures; the module must export malloc or proxy_on_memory_allocate;
//     callbacks must have Envoy's signatures. Anything else fails Compile,
//     naming the import or export, as Envoy fails to load the module.
//   - Start: _initialize (then main or __main_void) or _start, during which
//     only logging, memory growth and the WASI calls of that cpp-host's
//     start-time allow list may be called (#427's has no poll_oneoff); any
//     other call traps with "restricted_callback", failing the start.
//     Likewise only proxy_log, fd_write and clock_time_get (and on #533
//     poll_oneoff) may be called while the host is inside malloc. Then proxy_on_context_create(root, 0),
//     proxy_on_vm_start and proxy_on_configure; false from either fails New
//     with the module's error logs.
//   - One instance of one compiled module per worker, each driven by a single
//     goroutine, so calls into one instance never overlap; workers run in
//     parallel. Metrics and shared data are process-wide, as in Envoy.
//   - Callbacks are called only if exported (looked up once); the per-stream
//     order is context_create, request_headers, response_headers, log, done,
//     delete. Stats counts every guest entry, allocations included.
//   - Host calls answer with Envoy's status codes: NotFound for a missing
//     header (ABI 0.2.x), BadArgument for a map that does not exist in the
//     current context, InvalidMemoryAccess for bad pointers, and so on.
//     Copies into the guest use malloc exactly as cpp-host does (none for
//     empty data).
//   - proxy_http_call: BadArgument for an unknown cluster, a negative timeout
//     (the u32 read as signed) or a missing :path/:method/:authority; the
//     answer arrives as proxy_on_http_call_response on the root context, with
//     Envoy's local replies for failures (504 on timeout, 503 on connect
//     failure or a close before headers) and zero headers for a reset after
//     the headers.
//   - Shutdown: proxy_on_done(root); false defers proxy_on_delete until the
//     module calls proxy_done, with callouts and ticks still delivered.
//   - stdout and stderr (fd_write) become info and error logs, one line per
//     write; a trap fails only its worker, and every later call to it
//     returns ErrCrashed.
//   - A VM that ends (Worker.Kill: died; Worker.Stop or StopAsync: removed
//     with proxy_on_done's drain) can be recreated with Host.Restart, as
//     Envoy recreates a worker's VM: a fresh instance (new memory, the whole
//     start again) that finds shared data, metrics and queues as the others
//     left them, and gets no answer meant for the old one. Host.Worker(i)
//     is then the new instance; Host.Stats still counts the old ones.
//   - Randomness: WASI random_get reads crypto/rand, different bytes for
//     every VM, as Envoy's does. Config.RandomSeed makes it a deterministic
//     stream, the same for every VM (wazero's fixed-seed case: a module
//     whose worker ids come only from random_get gets one id for all
//     workers); with Config.RandomPerVM each VM gets its own deterministic
//     stream, so a simulation can replay a run exactly.
//
// # Where it differs
//
//   - No configuration canary and no main-thread VM: Envoy starts the module
//     once more than it has workers; this host starts exactly Workers.
//   - Streams are synchronous: a request paused by proxy_on_request_headers
//     (and not resumed within that callback) or answered locally is ended as
//     a client reset would end it; body and trailer callbacks are not driven,
//     and proxy_on_response_headers is not called for local replies.
//   - WASI comes from wazero (no preopened directories, so file calls fail
//     with EBADF where Envoy often answers ENOTSUP), except fd_write (Envoy's
//     logging), proc_exit (a crash here; Envoy logs and returns, which
//     leaves a Go runtime broken anyway) and poll_oneoff (as above, never
//     waiting). wasi_unstable gets the
//     wasi_snapshot_preview1 implementations.
//   - gRPC calls and proxy_set_buffer_bytes answer Unimplemented and log a
//     warning; no foreign functions exist (NotFound).
//   - Properties: only plugin_root_id, plugin_name, plugin_vm_id,
//     Config.Properties and what the module set itself.
//   - Envoy's stats prefix custom metrics with "wasmcustom."; here they keep
//     the module's names (Host.Metrics). Package e2e/admin serves them under
//     Envoy's full names, as Envoy's /stats and /stats/prometheus do.
package wasmhost
