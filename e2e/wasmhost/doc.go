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
//	st, err := h.Worker(0).Open(ctx, req)             // may be held (st.Paused())
//	res, err = st.Wait(ctx)                           // or st.Reset(ctx)
//	h.SetClusterHealthy("svc", false)                 // Request.Cluster "svc" → 503
//	err = h.Close(ctx)                                // drain, resets, proxy_on_done, proxy_on_delete
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
//   - Streams (Worker.Open; Worker.Request is Open then Wait): many open at
//     once per worker, each with its own context id and header maps. Pause
//     (1) from proxy_on_request_headers holds the stream (ABI 0.2.x: cpp-host
//     convertVmCallResultToFilterHeadersStatus makes it
//     StopAllIterationAndWatermark): headers and body wait; the body is kept
//     whole, as Envoy buffers it under flow control (watermarks stop reading
//     from the client, nothing is refused or lost), and reaches the upstream
//     intact once let go (Result.UpstreamBody). While held the stream's
//     request headers stay readable and writable through its context.
//     A client reset (Stream.Reset, the end of Request's ctx) ends a stream,
//     held or not, with proxy_on_log, proxy_on_done, proxy_on_delete.
//   - Resuming, as cpp-host src/exports.cc and Envoy's
//     source/extensions/common/wasm/context.cc: proxy_set_effective_context
//     accepts the root, 0, and any stream the VM still has (from its
//     proxy_on_context_create until its proxy_on_delete returned; another
//     worker's streams are unknown) and answers BadArgument otherwise,
//     changing nothing; host calls then act on that context (a context that
//     has gone falls back to the called one: contextOrEffectiveContext).
//     proxy_continue_stream on the root context does nothing and answers Ok
//     (no decoder callbacks), Upstream is Unimplemented; on a held stream
//     Envoy defers continueDecoding() until the VM call returns
//     (addAfterVmCallAction), and so does this host: the stream proceeds
//     after the tick, call answer or callback that resumed it returns,
//     streams in the order resumed. proxy_send_local_response and
//     proxy_close_stream on a held stream are deferred the same way.
//   - Routing (Request.Cluster, the route entry's cluster): property
//     xds.cluster_name during the stream is that name if the cluster is
//     known (the stream info's upstream cluster info, which the connection
//     manager sets from the route before the filters run:
//     ActiveStream::setRoute), NotFound without a route or for an unknown
//     cluster. The top-level cluster_name is NotFound, as on every Envoy
//     that runs upstream-Go modules (1.33 on: the wasm PROPERTY_TOKENS lost
//     it; older Envoys answered the upstream host's cluster, else the route
//     entry's). A cluster with no healthy host (Config.UnhealthyClusters,
//     Host.SetClusterHealthy) gets the router's own reply
//     (Router::Filter::sendNoHealthyUpstreamResponse): 503, body "no
//     healthy upstream", details no_healthy_upstream, flag UH; a cluster not
//     in Config.Clusters 503 cluster_not_found, flag NC. The module sees it
//     in proxy_on_response_headers, with properties response.code,
//     response.code_details and response.flags (an int64 of Envoy's legacy
//     response flags, UH 0x2, NC 0x1000000; "via_upstream" and 0 for an
//     upstream answer).
//   - Shutdown with open streams (Close, Worker.Stop): the plugin's removal
//     refuses new streams; open ones go on for Config.DrainTimeout (Envoy's
//     listener drain), ticks and callouts still delivered, so the module
//     can let held requests go; then the rest are reset, and only then does
//     the root get proxy_on_done: every Envoy stream context holds the
//     plugin handle (Context::plugin_handle_), and the root's onDone comes
//     from ~PluginHandleBase (WasmBase::startShutdown). A module therefore
//     never sees proxy_on_done(root) while it holds a stream: it must
//     release held requests from ticks or answers. Worker.StopAsync and
//     Worker.Kill do not drain (Kill ends streams without guest calls).
//   - Host calls answer with Envoy's status codes: NotFound for a missing
//     header (ABI 0.2.x), BadArgument for a map that does not exist in the
//     current context (but proxy_get_header_map_pairs reads it as empty, and
//     a reset call's answer has no response headers or body),
//     InvalidMemoryAccess for bad pointers, and so on.
//     Copies into the guest use malloc exactly as cpp-host does (none for
//     empty data).
//   - proxy_http_call: BadArgument for an unknown cluster, a negative timeout
//     (the u32 read as signed) or a missing :path/:method/:authority;
//     InternalFailure, with no answer ever, for a cluster with no healthy
//     host: the async client's router replies 503 inline, so
//     AsyncClientImpl::send returns nullptr and Context::httpCall fails
//     (Envoy's WasmHttpFilterTest.AsyncCallBadCluster); no dispatcher,
//     default or custom, sees such a call. Otherwise the
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
//   - Linear memory is reserved up to its maximum as address space and
//     memory.grow only makes pages accessible (on Linux), as V8, Wasmtime
//     and WAMR hold it: a grow never copies the memory, which wazero's
//     default (a Go slice) does, milliseconds at a few MiB.
//   - Config.TimeCallbacks times each guest call in wall time and in the
//     worker thread's CPU time (Stats.GuestTime, Stats.GuestCPU).
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
//   - Body and trailer callbacks are not driven (neither the filter nor the
//     probe exports them); the body is only carried to the upstream.
//     proxy_on_response_headers is not called for the module's own local
//     replies (Envoy runs them through the encoder filters); it is for the
//     router's 503s.
//   - A stream runs to its end at once when it proceeds: the upstream
//     answers with Request.ResponseHeaders at once, and log, done and delete
//     follow in the same step (Envoy's upstream answers later, and its
//     stream destruction is deferred). No route or stream timeouts (Envoy's
//     route timeout starts when the filter lets the request go; while held,
//     stream_idle_timeout applies): the caller resets. Any return of
//     proxy_on_request_headers but Continue holds the stream (Envoy lets
//     ContinueAndEndStream go). Envoy forgets the request headers once a
//     stream continues (Context::continueStream, decodeHeaders); this host
//     keeps them readable.
//   - Request.Cluster "" (the default) is no route: the upstream answers as
//     before routing existed, where Envoy would answer 404 route_not_found.
//     Clusters have no hosts: one is healthy or not (SetClusterHealthy).
//   - response.code is readable from proxy_on_response_headers on, for the
//     upstream's answers too (Envoy sets it for local replies before
//     encoding; for upstream answers this host has not checked when).
//   - WASI comes from wazero (no preopened directories, so file calls fail
//     with EBADF where Envoy often answers ENOTSUP), except fd_write (Envoy's
//     logging), proc_exit (a crash here; Envoy logs and returns, which
//     leaves a Go runtime broken anyway) and poll_oneoff (as above, never
//     waiting). wasi_unstable gets the
//     wasi_snapshot_preview1 implementations.
//   - gRPC calls and proxy_set_buffer_bytes answer Unimplemented and log a
//     warning; no foreign functions exist (NotFound).
//   - Properties: only plugin_root_id, plugin_name, plugin_vm_id,
//     xds.cluster_name and response.code, response.code_details,
//     response.flags (streams, see above; a reset leaves DC, 0x4000, and
//     downstream_remote_disconnect),
//     Config.Properties and what the module set itself.
//   - Envoy's stats prefix custom metrics with "wasmcustom."; here they keep
//     the module's names (Host.Metrics). Package e2e/admin serves them under
//     Envoy's full names, as Envoy's /stats and /stats/prometheus do.
package wasmhost
