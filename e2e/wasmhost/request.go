package wasmhost

import (
	"context"
	"errors"
)

// Request is one header-only HTTP exchange to drive through a worker.
type Request struct {
	// Headers are the request headers, pseudo-headers included (":authority",
	// ":path", ":method", ":scheme"), as Envoy's HTTP connection manager hands
	// them to filters. Keys are lowercased, as Envoy stores them.
	Headers [][2]string
	// ResponseHeaders are the upstream's response headers. Default
	// [[":status", "200"]].
	ResponseHeaders [][2]string
	// RequestHasBody makes proxy_on_request_headers see end_of_stream=false.
	// Default false: end_of_stream=true, as for a GET. Body callbacks are not
	// driven.
	RequestHasBody bool
	// ResponseHasBody does the same for proxy_on_response_headers.
	ResponseHasBody bool
}

// LocalReply is a response the module asked for with proxy_send_local_response.
type LocalReply struct {
	Status   uint32      // HTTP status code
	Details  string      // response code details (Envoy's %RESPONSE_CODE_DETAILS%)
	Body     []byte      // response body
	Headers  [][2]string // additional response headers
	GrpcCode int32       // gRPC status, -1 for none
}

// Result is what the module did with a request.
type Result struct {
	// ContextID is the stream's context id.
	ContextID uint32
	// RequestAction is what proxy_on_request_headers returned (Continue if
	// the module does not export it).
	RequestAction Action
	// ResponseCalled reports whether proxy_on_response_headers ran: it does
	// not when the request was paused (and not resumed with
	// proxy_continue_stream during the same callback) or answered locally.
	// This host does not hold paused streams: it ends them as a client reset
	// would (proxy_on_log, proxy_on_done, proxy_on_delete).
	ResponseCalled bool
	// ResponseAction is what proxy_on_response_headers returned.
	ResponseAction Action
	// LocalReply is set if the module called proxy_send_local_response.
	LocalReply *LocalReply
	// RequestHeaders and ResponseHeaders are the maps after the module's
	// changes.
	RequestHeaders, ResponseHeaders [][2]string
}

var defaultResponseHeaders = [][2]string{{":status", "200"}}

// stream is the per-request state; one per worker, reused.
type stream struct {
	id        uint32
	req, resp headerMap
	reqReady  bool // request headers visible (from proxy_on_request_headers on)
	respReady bool
	logPhase  bool
	local     *LocalReply
	continued [streamTypeMax + 1]bool
	closed    [streamTypeMax + 1]bool
}

func (s *stream) reset(id uint32, req *Request) {
	s.id = id
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
}

// Request drives one HTTP stream through the module, in Envoy's order:
// proxy_on_context_create(id, root), proxy_on_request_headers(id, n, eos),
// proxy_on_response_headers(id, n, eos), proxy_on_log(id), proxy_on_done(id),
// proxy_on_delete(id); each only if the module exports it. It returns an
// error if the VM traps (the worker is then crashed) or the worker is closed.
func (w *Worker) Request(ctx context.Context, req Request) (Result, error) {
	var res Result
	err := w.do(ctx, func() error { return w.runRequest(&req, &res) })
	return res, err
}

// Requests drives n identical requests on the worker goroutine without a
// round trip per request, for benchmarks. Between requests it delivers
// callout replies, queue notifications and due ticks, as an Envoy worker
// interleaves them with traffic. It stops at the first error, or when ctx ends
// (checked every 256 requests).
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
			if err := w.runRequest(&cycle[i%len(cycle)], nil); err != nil {
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

func (w *Worker) runRequest(req *Request, res *Result) error {
	if w.crashed != nil {
		return w.crashed
	}
	if w.deleted || w.pendingDone {
		return ErrClosed
	}
	id := w.nextID
	w.nextID++
	s := &w.stream
	s.reset(id, req)
	w.inStream = true
	defer func() { w.inStream = false }()
	w.requests.Add(1)

	w.current = id
	if w.fns[cbContextCreate] != nil {
		if _, err := w.call2(cbContextCreate, id, rootID); err != nil {
			return err
		}
	}
	s.reqReady = true
	reqAction := ActionContinue
	if w.fns[cbRequestHeaders] != nil {
		r, err := w.headersCall(cbRequestHeaders, id, len(s.req), !req.RequestHasBody)
		if err != nil {
			return err
		}
		reqAction = Action(r)
	}
	respCalled := false
	respAction := ActionContinue
	if s.local == nil && (reqAction == ActionContinue || s.continued[streamRequest]) {
		respCalled = true
		s.respReady = true
		if w.fns[cbResponseHeaders] != nil {
			w.current = id
			r, err := w.headersCall(cbResponseHeaders, id, len(s.resp), !req.ResponseHasBody)
			if err != nil {
				return err
			}
			respAction = Action(r)
		}
	}
	s.logPhase = true
	if w.fns[cbLog] != nil {
		w.current = id
		if _, err := w.call1(cbLog, id); err != nil {
			return err
		}
	}
	if w.fns[cbDone] != nil {
		// A stream's proxy_on_done result is ignored by Envoy.
		w.current = id
		if _, err := w.call1(cbDone, id); err != nil {
			return err
		}
	}
	if w.fns[cbDelete] != nil {
		w.current = id
		if _, err := w.call1(cbDelete, id); err != nil {
			return err
		}
	}
	if res != nil {
		*res = Result{
			ContextID:       id,
			RequestAction:   reqAction,
			ResponseCalled:  respCalled,
			ResponseAction:  respAction,
			LocalReply:      s.local,
			RequestHeaders:  s.req.pairs(),
			ResponseHeaders: s.resp.pairs(),
		}
	}
	return nil
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
