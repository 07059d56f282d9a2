package wasmhost

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// Callout is an accepted proxy_http_call, as a dispatcher sees it.
type Callout struct {
	// Worker is the index of the worker whose root context made the call.
	Worker int
	// Token is the callout token the module received.
	Token uint32
	// Cluster is the upstream cluster named by the module.
	Cluster string
	// Headers are the request headers, pseudo-headers included, in the
	// module's order.
	Headers [][2]string
	// Body and Trailers are the request body and trailers.
	Body     []byte
	Trailers [][2]string
	// Timeout is the module's timeout; 0 means none (Envoy's router treats a
	// zero timeout as disabled).
	Timeout time.Duration
}

// Header returns the first value of key in c.Headers.
func (c Callout) Header(key string) string {
	for _, kv := range c.Headers {
		if strings.EqualFold(kv[0], key) {
			return kv[1]
		}
	}
	return ""
}

// Response is the answer to a callout. Status 0 means the stream was reset:
// the module then gets proxy_on_http_call_response(root, token, 0, 0, 0),
// whatever Headers or Body say. Otherwise the module sees ":status" first,
// then Headers (keys lowercased), Body and Trailers.
type Response struct {
	Status   int
	Headers  [][2]string
	Body     []byte
	Trailers [][2]string
}

// The Envoy-generated answers the default dispatcher produces; custom
// dispatchers can reply with them too.

// UpstreamTimeout is Envoy's local reply when a callout's timeout expires
// before the upstream's response headers: 504 "upstream request timeout".
func UpstreamTimeout() Response { return localReply(504, "upstream request timeout") }

// ConnectFailure is Envoy's local reply when it cannot connect to the
// cluster: 503.
func ConnectFailure() Response {
	return localReply(503, "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure")
}

// ResetBeforeHeaders is Envoy's local reply when the upstream connection
// closes before response headers: 503.
func ResetBeforeHeaders() Response {
	return localReply(503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination")
}

// NoHealthyUpstream is Envoy's local reply when the cluster has no host to
// send to: 503 "no healthy upstream". The default dispatcher answers it for
// a cluster mapped to an empty address.
func NoHealthyUpstream() Response { return localReply(503, "no healthy upstream") }

// Reset is a reset after the response started: the module sees zero headers.
func Reset() Response { return Response{} }

func localReply(code int, body string) Response {
	return Response{
		Status: code,
		Headers: [][2]string{
			{"content-length", strconv.Itoa(len(body))},
			{"content-type", "text/plain"},
		},
		Body: []byte(body),
	}
}

type pendingCallout struct {
	once   sync.Once
	cancel context.CancelFunc
}

func (w *Worker) callHeaderValid(headers [][2]string) bool {
	var path, method, authority bool
	for _, kv := range headers {
		switch kv[0] {
		case ":path":
			path = true
		case ":method":
			method = true
		case ":authority":
			authority = true
		}
	}
	return path && method && authority
}

// proxy_http_call(upstream, upstream_size, headers, headers_size, body,
// body_size, trailers, trailers_size, timeout_ms, *token), as Envoy's
// Context::httpCall: the timeout is a u32 read as a signed int (negative is
// BadArgument), the cluster must be known, and :path, :method and :authority
// must be present, else BadArgument. The callout belongs to the root context.
func proxyHTTPCall(w *Worker, _ api.Module, stack []uint64) {
	upstream, ok1 := w.read(stack[0], stack[1])
	hdrs, ok2 := w.read(stack[2], stack[3])
	body, ok3 := w.read(stack[4], stack[5])
	trls, ok4 := w.read(stack[6], stack[7])
	tokenPtr := u32(stack[9])
	// cpp-host writes a zero token first to check the pointer.
	if !ok1 || !ok2 || !ok3 || !ok4 || !w.mem.WriteUint32Le(tokenPtr, 0) {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	timeout := int32(u32(stack[8]))
	if timeout < 0 {
		status(stack, StatusBadArgument)
		return
	}
	cluster := string(upstream)
	addr, known := w.h.cfg.Clusters[cluster]
	if !known {
		status(stack, StatusBadArgument)
		return
	}
	headers, _ := parsePairs(hdrs)
	trailers, _ := parsePairs(trls)
	if !w.callHeaderValid(headers) {
		status(stack, StatusBadArgument)
		return
	}
	// Envoy's tokens for HTTP callouts are odd (gRPC ones are even).
	token := w.nextToken
	w.nextToken += 2
	if !w.h.clusterHealthy(cluster) {
		// No healthy host: the async client's router answers 503 "no
		// healthy upstream" inline, inside AsyncClientImpl::send, which then
		// returns nullptr (the request "immediately failed"); Context::httpCall
		// erases the handler and returns InternalFailure, and the inline
		// onSuccess, deferred by onHttpCallSuccess because a VM call is
		// running, finds no handler: the module never gets an answer (Envoy
		// test WasmHttpFilterTest.AsyncCallBadCluster). The token is used up;
		// no dispatcher, default or custom, sees the call.
		status(stack, StatusInternalFailure)
		return
	}
	w.mem.WriteUint32Le(tokenPtr, token)

	c := Callout{
		Worker:   w.idx,
		Token:    token,
		Cluster:  cluster,
		Headers:  headers,
		Body:     append([]byte(nil), body...),
		Trailers: trailers,
		Timeout:  time.Duration(timeout) * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(w.h.dispatchCtx)
	p := &pendingCallout{cancel: cancel}
	w.callouts[token] = p
	reply := func(r Response) {
		p.once.Do(func() {
			w.post(func() { w.deliver(token, r) }, true)
		})
	}
	if w.h.cfg.Dispatch != nil {
		w.h.cfg.Dispatch(c, reply)
	} else {
		w.h.dispatchWG.Add(1)
		go func() {
			defer w.h.dispatchWG.Done()
			defer cancel()
			r, ok := w.h.send(ctx, addr, c)
			if ok {
				reply(r)
			}
		}()
	}
	status(stack, StatusOK)
}

// deliver calls proxy_on_http_call_response for a callout still pending.
func (w *Worker) deliver(token uint32, r Response) {
	p, ok := w.callouts[token]
	if !ok || w.crashed != nil || w.deleted {
		return
	}
	delete(w.callouts, token)
	p.cancel()
	if w.fns[cbHTTPCallResponse] == nil {
		return
	}
	if r.Status == 0 {
		r = Response{}
		w.callStatus, w.callStatusMsg = 11, "reset" // WasmResult::BrokenConnection
	} else {
		w.callStatus, w.callStatusMsg = 0, ""
	}
	w.callHeaders = w.callHeaders[:0]
	if r.Status != 0 {
		w.callHeaders = append(w.callHeaders, header{":status", strconv.Itoa(r.Status)})
		for _, kv := range r.Headers {
			w.callHeaders = w.callHeaders.add(kv[0], kv[1])
		}
	}
	w.callTrailers = w.callTrailers.load(r.Trailers)
	w.callResp = &r
	w.current = rootID
	w.stack[0], w.stack[1], w.stack[2], w.stack[3], w.stack[4] =
		rootID, uint64(token), uint64(len(w.callHeaders)), uint64(len(r.Body)), uint64(len(w.callTrailers))
	// Streams resumed from the answer go on once it is cleared, as
	// Envoy's after-VM-call actions run after onHttpCallSuccess's own.
	w.holdDeferred = true
	_, _ = w.call(cbHTTPCallResponse)
	w.holdDeferred = false
	w.callResp = nil
	w.callStatus, w.callStatusMsg = 0, ""
	w.runDeferred()
}

// send performs a callout over real HTTP/1.1 to addr and maps failures the
// way Envoy's router reports them to an async client. ok is false when the
// host is shutting down (no reply is due then).
func (h *Host) send(ctx context.Context, addr string, c Callout) (Response, bool) {
	if addr == "" {
		return NoHealthyUpstream(), true
	}
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, c.Header(":method"), "http://"+addr+c.Header(":path"), bytes.NewReader(c.Body))
	if err != nil {
		// Envoy would have refused such headers when building the request.
		return localReply(400, err.Error()), true
	}
	req.Host = c.Header(":authority")
	// Envoy sends no User-Agent of its own; Go would add one unless the
	// header is present and empty.
	req.Header["User-Agent"] = []string{""}
	for _, kv := range c.Headers {
		if strings.HasPrefix(kv[0], ":") || strings.EqualFold(kv[0], "content-length") || strings.EqualFold(kv[0], "host") {
			continue
		}
		if strings.EqualFold(kv[0], "user-agent") {
			req.Header.Del("User-Agent")
		}
		req.Header.Add(kv[0], kv[1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return h.failure(ctx, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		if h.dispatchCtx.Err() != nil {
			return Response{}, false
		}
		// Headers were already forwarded: Envoy can only reset the stream.
		return Reset(), true
	}
	out := Response{Status: resp.StatusCode, Body: body}
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range resp.Header[k] {
			out.Headers = append(out.Headers, [2]string{strings.ToLower(k), v})
		}
	}
	if resp.ContentLength >= 0 && resp.Header.Get("Content-Length") == "" {
		out.Headers = append(out.Headers, [2]string{"content-length", strconv.FormatInt(resp.ContentLength, 10)})
	}
	for k, vs := range resp.Trailer {
		for _, v := range vs {
			out.Trailers = append(out.Trailers, [2]string{strings.ToLower(k), v})
		}
	}
	return out, true
}

func (h *Host) failure(ctx context.Context, err error) (Response, bool) {
	if h.dispatchCtx.Err() != nil {
		return Response{}, false
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return UpstreamTimeout(), true
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return ConnectFailure(), true
	}
	return ResetBeforeHeaders(), true
}
