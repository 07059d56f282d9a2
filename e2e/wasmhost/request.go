package wasmhost

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// Request is one HTTP exchange to drive through a worker.
type Request struct {
	// Headers are the request headers, pseudo-headers included (":authority",
	// ":path", ":method", ":scheme"), as Envoy's HTTP connection manager hands
	// them to filters. Keys are lowercased, as Envoy stores them.
	Headers [][2]string
	// ResponseHeaders are the upstream's response headers. Default
	// [[":status", "200"]].
	ResponseHeaders [][2]string
	// Body is the request body. It reaches the upstream (Result.UpstreamBody)
	// intact once the module lets the request go; while the request is held
	// it waits, buffered (Envoy's StopAllIterationAndWatermark: buffered
	// under flow control, never refused). Body callbacks are not driven: the
	// host only calls exported callbacks, and neither the filter nor the
	// probe exports proxy_on_request_body. Default none.
	Body []byte
	// RequestHasBody makes proxy_on_request_headers see end_of_stream=false.
	// It is implied by a non-empty Body. Default false: end_of_stream=true,
	// as for a GET.
	RequestHasBody bool
	// ResponseHasBody does the same for proxy_on_response_headers.
	ResponseHasBody bool
	// Cluster is the cluster of the route the request matched (Envoy's
	// route entry cluster name): property "xds.cluster_name" during the
	// stream (if Config.Clusters has it), and where the request goes once
	// let go. A cluster with no healthy host
	// (Host.SetClusterHealthy, Config.UnhealthyClusters) gets Envoy's router
	// answer: 503 "no healthy upstream", details no_healthy_upstream, flag
	// UH; a cluster missing from Config.Clusters gets 503 cluster_not_found
	// (flag NC). Default "": no route is modelled, the property is NotFound
	// and the upstream answers with ResponseHeaders (this host's behaviour
	// before routing existed; Envoy would answer 404 route_not_found).
	Cluster string
}

// LocalReply is a response the module asked for with proxy_send_local_response.
type LocalReply struct {
	Status   uint32      // HTTP status code
	Details  string      // response code details (Envoy's %RESPONSE_CODE_DETAILS%)
	Body     []byte      // response body
	Headers  [][2]string // additional response headers
	GrpcCode int32       // gRPC status, -1 for none
}

// Result is what the module did with a request, and how it ended.
type Result struct {
	// ContextID is the stream's context id.
	ContextID uint32
	// RequestAction is what proxy_on_request_headers returned (Continue if
	// the module does not export it).
	RequestAction Action
	// ResponseCalled reports whether proxy_on_response_headers ran: it does
	// not for a stream reset while held, nor for the module's own local
	// reply (a difference from Envoy, see the package doc).
	ResponseCalled bool
	// ResponseAction is what proxy_on_response_headers returned.
	ResponseAction Action
	// LocalReply is set if the module called proxy_send_local_response.
	LocalReply *LocalReply
	// RequestHeaders and ResponseHeaders are the maps after the module's
	// changes.
	RequestHeaders, ResponseHeaders [][2]string

	// Status is the HTTP status the client got: the upstream's (after the
	// module's changes to :status), Envoy's router reply (503) or the
	// module's local reply; 0 when the stream was reset.
	Status int
	// ResponseCodeDetails and ResponseFlags are what Envoy's stream info
	// holds at the end (properties response.code_details and
	// response.flags): "via_upstream" and 0 for an upstream answer,
	// "no_healthy_upstream" and 0x2 (UH) for a cluster without a healthy
	// host, "cluster_not_found" and 0x1000000 (NC) for an unknown one, the
	// module's details for its local reply, "downstream_remote_disconnect"
	// and 0x4000 (DC) added for a reset.
	ResponseCodeDetails string
	ResponseFlags       uint64
	// UpstreamReached reports whether the request reached an upstream, and
	// UpstreamBody is the body it received then (a copy of Request.Body).
	UpstreamReached bool
	UpstreamBody    []byte
	// Paused reports whether the stream was held (proxy_on_request_headers
	// returned Pause and did not resume it during that call); HeldFor is how
	// long, until it was resumed, answered or reset.
	Paused  bool
	HeldFor time.Duration
	// Reset reports that the stream ended by a client reset (Stream.Reset,
	// the end of Request's context, or the host shutting down while it was
	// held): proxy_on_log, proxy_on_done and proxy_on_delete ran for it as
	// usual.
	Reset bool
}

// Legacy response flags (Envoy's StreamInfo LegacyResponseFlag, the value
// of the response.flags property: an int64).
const (
	flagNoHealthyUpstream               = 0x2
	flagDownstreamConnectionTermination = 0x4000
	flagNoClusterFound                  = 0x1000000
)

var defaultResponseHeaders = [][2]string{{":status", "200"}}

// stream is the per-request state, owned by the worker goroutine. It exists
// in Worker.streams from proxy_on_context_create until proxy_on_delete has
// returned, as cpp-host's ContextBase is in WasmBase::contexts_ until it is
// destroyed: that is what proxy_set_effective_context can name.
type stream struct {
	id        uint32
	req, resp headerMap
	reqReady  bool // request headers visible (from proxy_on_request_headers on)
	respReady bool
	logPhase  bool
	local     *LocalReply
	continued [streamTypeMax + 1]bool
	closed    [streamTypeMax + 1]bool

	r         *Request
	handle    *Stream // nil for RequestsCycle's streams
	reqAction Action
	// paused: held after proxy_on_request_headers; queued: an action
	// (resume, local reply, close) waits for the current guest call to end.
	paused, queued bool
	pausedAt       time.Time
	res            Result
	ended          bool
}

// Stream is one HTTP stream opened with Worker.Open. Its methods are safe
// for concurrent use.
type Stream struct {
	w      *Worker
	s      *stream // touched on the worker goroutine only
	id     uint32
	paused atomic.Bool
	done   chan struct{}
	res    Result
	err    error
}

// ID returns the stream's context id.
func (st *Stream) ID() uint32 { return st.id }

// Paused reports whether the stream is held: proxy_on_request_headers
// returned Pause and nothing has resumed, answered or reset it yet.
func (st *Stream) Paused() bool { return st.paused.Load() }

// Done is closed when the stream has ended (Wait then returns at once).
func (st *Stream) Done() <-chan struct{} { return st.done }

// Wait waits for the stream to end and returns its Result, or ctx.Err() if
// ctx ends first (the stream is left as it is). It returns the worker's
// error if the VM crashed or stopped before the stream ended.
func (st *Stream) Wait(ctx context.Context) (Result, error) {
	select {
	case <-st.done:
		return st.res, st.err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// Reset resets the stream as a client would, held or not: Envoy then calls
// proxy_on_log, proxy_on_done and proxy_on_delete for it as usual (HCM
// doDeferredStreamDestroy: log, then destroyFilters' onDestroy). Resetting a
// stream that has ended does nothing.
func (st *Stream) Reset(ctx context.Context) error {
	err := st.w.do(ctx, func() error {
		if st.s == nil || st.s.ended {
			return nil
		}
		return st.w.resetStream(st.s)
	})
	if errors.Is(err, ErrClosed) {
		select {
		case <-st.done:
			return nil
		default:
		}
	}
	return err
}

// resetLater resets the stream from the worker goroutine, without waiting.
func (st *Stream) resetLater() {
	st.w.post(func() {
		if st.s != nil && !st.s.ended {
			_ = st.w.resetStream(st.s)
		}
	}, false)
}

// Open starts one HTTP stream on the worker, in Envoy's order:
// proxy_on_context_create(id, root), then proxy_on_request_headers(id, n,
// eos). If the module returned Continue (or resumed the stream during that
// call), the stream proceeds at once: routing, proxy_on_response_headers,
// proxy_on_log, proxy_on_done, proxy_on_delete, and Open returns an ended
// stream. If it returned Pause (on ABI 0.2.x Envoy turns 1 into
// StopAllIterationAndWatermark: cpp-host
// convertVmCallResultToFilterHeadersStatus), the stream stays open and held
// (headers, body and trailers wait) until the module resumes it with
// proxy_continue_stream from another callback, answers it, or the client
// resets it. Many streams can be open on one worker, each with its own
// context id and header maps. Open fails when the worker has crashed or is
// closing (Envoy sends a draining listener's new streams elsewhere).
func (w *Worker) Open(ctx context.Context, req Request) (*Stream, error) {
	st := &Stream{w: w, done: make(chan struct{})}
	r := req
	if len(req.Body) > 0 {
		// Held for as long as the module likes: the caller may reuse its
		// slice meanwhile; what the upstream gets must be what was sent.
		r.Body = append([]byte(nil), req.Body...)
	}
	err := w.do(ctx, func() error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return w.openStream(&r, st)
	})
	if err != nil {
		if ctx.Err() != nil {
			// The job may still run: a stream it opens is reset, as the
			// client that gave up would.
			st.resetLater()
		}
		return nil, err
	}
	return st, nil
}

// Request drives one HTTP stream through the module: Open, then Wait. A
// stream the module holds blocks Request until it is resumed (see Open),
// reset, the host closes (then it is reset) or ctx ends (then Request resets
// it and returns ctx.Err()). It returns an error if the VM traps (the worker
// is then crashed) or the worker is closed.
func (w *Worker) Request(ctx context.Context, req Request) (Result, error) {
	st, err := w.Open(ctx, req)
	if err != nil {
		return Result{}, err
	}
	res, err := st.Wait(ctx)
	if err != nil && ctx.Err() != nil {
		st.resetLater()
	}
	return res, err
}

// Requests drives n identical requests on the worker goroutine without a
// round trip per request, for benchmarks. Between requests it delivers
// callout replies, queue notifications and due ticks, as an Envoy worker
// interleaves them with traffic. It stops at the first error, or when ctx ends
// (checked every 256 requests). A request the module holds is reset and
// ends the run with an error: use Request or Open for those.
func (w *Worker) Requests(ctx context.Context, n int, req Request) error {
	return w.RequestsCycle(ctx, n, []Request{req})
}

// RequestsCycle is Requests over several requests, taken in turn: request i is
// reqs[i%len(reqs)]. It lets a benchmark vary what the module sees (several
// hosts, say) without a round trip per request.
func (w *Worker) RequestsCycle(ctx context.Context, n int, reqs []Request) error {
	if len(reqs) == 0 {
		return errors.New("wasmhost: RequestsCycle needs at least one request")
	}
	// Lowercase the keys once rather than per request.
	cycle := make([]Request, len(reqs))
	for i, r := range reqs {
		r.Headers = lowerKeys(r.Headers)
		r.ResponseHeaders = lowerKeys(r.ResponseHeaders)
		cycle[i] = r
	}
	return w.do(ctx, func() error {
		for i := 0; i < n; i++ {
			if err := w.runFast(&cycle[i%len(cycle)]); err != nil {
				return err
			}
			if w.pending.Load() {
				w.drain(false)
			}
			select {
			case <-w.tickC:
				w.onTimer()
			default:
			}
			if i&255 == 255 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// runFast runs one RequestsCycle stream on the worker's reusable state.
func (w *Worker) runFast(req *Request) error {
	s := &w.reuse
	if s.id != 0 && !s.ended {
		// Still held from an earlier run that failed half-way.
		return fmt.Errorf("wasmhost: RequestsCycle: stream %d is still open", s.id)
	}
	if err := w.beginStream(s, req, nil); err != nil {
		return err
	}
	if s.paused {
		id := s.id
		if err := w.resetStream(s); err != nil {
			return err
		}
		return fmt.Errorf("wasmhost: RequestsCycle: the module held stream %d (proxy_on_request_headers returned Pause); it was reset: use Request or Open", id)
	}
	return nil
}

// openStream runs on the worker goroutine for Open.
func (w *Worker) openStream(req *Request, st *Stream) error {
	if w.crashed != nil {
		return w.crashed
	}
	if w.deleted || w.pendingDone || w.draining.Load() {
		return ErrClosed
	}
	s := &stream{}
	st.s = s
	err := w.beginStream(s, req, st)
	st.id = s.id
	if err != nil && !s.ended {
		return err
	}
	return nil
}

// beginStream creates the stream's context and runs proxy_on_request_headers,
// then lets the stream proceed, ends it (local reply) or holds it.
func (w *Worker) beginStream(s *stream, req *Request, handle *Stream) error {
	if w.crashed != nil {
		return w.crashed
	}
	if w.deleted || w.pendingDone {
		return ErrClosed
	}
	id := w.nextID
	w.nextID++
	s.init(id, req, handle)
	w.streams[id] = s
	w.opened.Add(1)
	w.openStreams.Add(1)

	w.current = id
	if w.fns[cbContextCreate] != nil {
		if _, err := w.call2(cbContextCreate, id, rootID); err != nil {
			return w.streamFailed(s, err)
		}
	}
	s.reqReady = true
	s.reqAction = ActionContinue
	if w.fns[cbRequestHeaders] != nil {
		eos := !req.RequestHasBody && len(req.Body) == 0
		r, err := w.headersCall(cbRequestHeaders, id, len(s.req), eos)
		if err != nil {
			return w.streamFailed(s, err)
		}
		s.reqAction = Action(r)
	}
	if s.ended {
		return nil
	}
	switch {
	case s.local != nil:
		return w.finishLocal(s)
	case s.closed[streamRequest] || s.closed[streamResponse]:
		return w.resetStream(s)
	case s.reqAction == ActionContinue || s.continued[streamRequest]:
		return w.proceed(s)
	}
	s.paused = true
	s.pausedAt = time.Now()
	s.res.Paused = true
	w.pausedStreams.Add(1)
	w.pausedTotal.Add(1)
	if handle != nil {
		handle.paused.Store(true)
	}
	return nil
}

func (s *stream) init(id uint32, req *Request, handle *Stream) {
	s.id = id
	s.r = req
	s.handle = handle
	s.req = s.req.load(req.Headers)
	resp := req.ResponseHeaders
	if resp == nil {
		resp = defaultResponseHeaders
	}
	s.resp = s.resp.load(resp)
	s.reqReady, s.respReady, s.logPhase = false, false, false
	s.local = nil
	s.continued = [streamTypeMax + 1]bool{}
	s.closed = [streamTypeMax + 1]bool{}
	s.reqAction = ActionContinue
	s.paused, s.queued, s.ended = false, false, false
	s.pausedAt = time.Time{}
	s.res = Result{}
}

// unpause ends the held state, counting the time held.
func (w *Worker) unpause(s *stream) {
	if !s.paused {
		return
	}
	s.paused = false
	s.res.HeldFor = time.Since(s.pausedAt)
	w.pausedStreams.Add(-1)
	if s.handle != nil {
		s.handle.paused.Store(false)
	}
}

// routerReply is a response Envoy's router sends itself (Router::Filter
// sendNoHealthyUpstreamResponse, and the cluster_not_found reply).
type routerReply struct {
	status  int
	body    string
	details string
	flags   uint64
}

// route decides what answers the stream: nil for the upstream.
func (w *Worker) route(cluster string) *routerReply {
	if cluster == "" {
		return nil
	}
	if _, known := w.h.cfg.Clusters[cluster]; !known {
		// Router::Filter::decodeHeaders: no thread-local cluster →
		// cluster_not_found_response_code (503 by default), empty body.
		return &routerReply{503, "", "cluster_not_found", flagNoClusterFound}
	}
	if !w.h.clusterHealthy(cluster) {
		return &routerReply{503, "no healthy upstream", "no_healthy_upstream", flagNoHealthyUpstream}
	}
	return nil
}

// proceed lets a stream go on after the request headers: the router picks
// the route's cluster and either answers itself or forwards headers and body
// to the upstream, whose response headers then go through
// proxy_on_response_headers; then the stream ends.
func (w *Worker) proceed(s *stream) error {
	w.unpause(s)
	respEOS := !s.r.ResponseHasBody
	if rr := w.route(s.r.Cluster); rr != nil {
		hdrs := [][2]string{{":status", strconv.Itoa(rr.status)}}
		if rr.body != "" {
			hdrs = append(hdrs, [2]string{"content-length", strconv.Itoa(len(rr.body))}, [2]string{"content-type", "text/plain"})
		}
		s.resp = s.resp.load(hdrs)
		s.res.ResponseCodeDetails, s.res.ResponseFlags = rr.details, rr.flags
		respEOS = rr.body == ""
	} else {
		s.res.UpstreamReached = true
		if len(s.r.Body) > 0 && s.handle != nil {
			s.res.UpstreamBody = s.r.Body // Open's copy
		}
		s.res.ResponseCodeDetails = "via_upstream"
	}
	s.res.ResponseCalled = true
	s.respReady = true
	s.res.ResponseAction = ActionContinue
	if w.fns[cbResponseHeaders] != nil {
		r, err := w.headersCall(cbResponseHeaders, s.id, len(s.resp), respEOS)
		if err != nil {
			return w.streamFailed(s, err)
		}
		s.res.ResponseAction = Action(r)
	}
	if s.ended {
		return nil
	}
	if v, ok := s.resp.get([]byte(":status")); ok {
		s.res.Status, _ = strconv.Atoi(v)
	}
	return w.endStream(s)
}

// finishLocal ends a stream answered by the module's proxy_send_local_response.
func (w *Worker) finishLocal(s *stream) error {
	w.unpause(s)
	s.res.Status = int(s.local.Status)
	s.res.ResponseCodeDetails = s.local.Details
	return w.endStream(s)
}

// resetStream ends a stream as a client reset does.
func (w *Worker) resetStream(s *stream) error {
	if s.ended {
		return nil
	}
	w.unpause(s)
	s.res.Reset = true
	s.res.Status = 0
	// What an HTTP/1.1 client going away leaves in the stream info
	// (response.flags DC, response.code_details), unless already answered.
	s.res.ResponseFlags |= flagDownstreamConnectionTermination
	if s.res.ResponseCodeDetails == "" {
		s.res.ResponseCodeDetails = "downstream_remote_disconnect"
	}
	w.resets.Add(1)
	return w.endStream(s)
}

// endStream runs proxy_on_log, proxy_on_done and proxy_on_delete (each if
// exported), removes the context and hands the Result to the waiter.
func (w *Worker) endStream(s *stream) error {
	s.logPhase = true
	id := s.id
	for _, cb := range [...]int{cbLog, cbDone, cbDelete} {
		if w.fns[cb] == nil {
			continue
		}
		// A stream's proxy_on_done result is ignored by Envoy.
		w.current = id
		if _, err := w.call1(cb, id); err != nil {
			return w.streamFailed(s, err)
		}
	}
	s.res.ContextID = id
	s.res.RequestAction = s.reqAction
	s.res.LocalReply = s.local
	if s.handle != nil {
		// RequestsCycle (no handle) wants no Result: no copies.
		s.res.RequestHeaders = s.req.pairs()
		s.res.ResponseHeaders = s.resp.pairs()
	}
	w.closeStream(s, nil)
	return nil
}

// closeStream forgets the stream and wakes its waiter with err.
func (w *Worker) closeStream(s *stream, err error) {
	if s.ended {
		return
	}
	s.ended = true
	w.unpause(s)
	delete(w.streams, s.id)
	w.openStreams.Add(-1)
	w.requests.Add(1)
	if st := s.handle; st != nil {
		st.res, st.err = s.res, err
		close(st.done)
	}
}

// streamFailed handles a guest call that failed during a stream: a crash
// ends every stream of the VM with the crash error.
func (w *Worker) streamFailed(s *stream, err error) error {
	w.closeStream(s, err)
	if w.crashed != nil {
		w.failStreams(w.crashed)
	}
	return err
}

// failStreams ends every open stream with err, without guest calls (the VM
// crashed or stopped).
func (w *Worker) failStreams(err error) {
	w.deferred = nil
	for _, s := range w.openByAge() {
		w.closeStream(s, err)
	}
}

// openByAge returns the open streams, oldest first.
func (w *Worker) openByAge() []*stream {
	out := make([]*stream, 0, len(w.streams))
	for _, s := range w.streams {
		out = append(out, s)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].id < out[j-1].id; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// resetAll resets every open stream, oldest first: the listener's drain has
// ended and Envoy closes its connections.
func (w *Worker) resetAll() {
	for _, s := range w.openByAge() {
		if w.crashed != nil {
			w.closeStream(s, w.crashed)
			continue
		}
		_ = w.resetStream(s)
	}
}

// defer queues s for runDeferred, once.
func (w *Worker) deferStream(s *stream) {
	if s.queued {
		return
	}
	s.queued = true
	w.deferred = append(w.deferred, s)
}

// runDeferred runs what the module asked for on held streams once the guest
// call that asked has returned, as Envoy's Context::continueStream,
// sendLocalResponse and closeStream do with wasm()->addAfterVmCallAction
// (cpp-host DeferAfterCallActions runs them when the callback returns): a
// resumed stream goes on to the router at once, in the order resumed.
func (w *Worker) runDeferred() {
	if w.inDeferred {
		return
	}
	w.inDeferred = true
	defer func() { w.inDeferred = false }()
	for len(w.deferred) > 0 && w.crashed == nil {
		s := w.deferred[0]
		w.deferred[0] = nil
		w.deferred = w.deferred[1:]
		s.queued = false
		if s.ended || !s.paused {
			continue
		}
		switch {
		case s.local != nil:
			_ = w.finishLocal(s)
		case s.closed[streamRequest] || s.closed[streamResponse]:
			_ = w.resetStream(s)
		case s.continued[streamRequest]:
			w.resumed.Add(1)
			_ = w.proceed(s)
		}
	}
	w.deferred = w.deferred[:0]
}

func (w *Worker) headersCall(cb int, id uint32, n int, eos bool) (uint64, error) {
	w.current = id
	if w.h.mod.abi == ABI010 {
		return w.call2(cb, id, uint32(n))
	}
	e := uint32(0)
	if eos {
		e = 1
	}
	return w.call3(cb, id, uint32(n), e)
}

// lowerKeys returns headers with lowercase keys, copying only if needed.
func lowerKeys(headers [][2]string) [][2]string {
	for i, kv := range headers {
		if lowerASCII(kv[0]) != kv[0] {
			out := make([][2]string, len(headers))
			copy(out, headers[:i])
			for j := i; j < len(headers); j++ {
				out[j] = [2]string{lowerASCII(headers[j][0]), headers[j][1]}
			}
			return out
		}
	}
	return headers
}
