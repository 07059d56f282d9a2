// Package ingest takes the filter's RequestCount messages over HTTP, on the
// scale-to-zero operator's contract, and adds them to a store.
//
//   - POST only (405 otherwise), on one path (404 otherwise), default
//     /informer/incoming-request.
//   - The body is one RequestCount object (the filter's mode: single, what the
//     operator takes) or a JSON array of them (mode: batch), read with
//     messages.Decode: every message validated, nothing after the value.
//   - 200 with the operator's own answer, {"message":"Request received
//     successfully!"}, once every message of the body is counted.
//   - A body over the size limit is a 413, a malformed one a 400, each with
//     the reason in plain text, and nothing of it is counted. A body naming
//     more new targets than the store has room for is a 503 (nothing counted;
//     the filter keeps the counts and sends them again).
//
// Every answer is counted in reqcount_scaler_http_requests_total by code, and
// every refusal in reqcount_scaler_http_rejected_total by reason.
package ingest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/reqcount/reqcount/messages"
	"github.com/reqcount/reqcount/scaler/store"
)

// DefaultPath is the operator's request-count path, the filter's default.
const DefaultPath = "/informer/incoming-request"

// DefaultMaxBody bounds a body: a batch of the filter's max_keys (10 000)
// messages of the longest names is under 1.5 MiB.
const DefaultMaxBody = 4 << 20

// SuccessBody is the 200 answer, byte for byte the operator's.
const SuccessBody = `{"message":"Request received successfully!"}`

// Options configures a Handler.
type Options struct {
	// Path is the one path served. Default DefaultPath.
	Path string
	// MaxBody bounds a request body, in bytes. Default DefaultMaxBody.
	MaxBody int64
	// Registerer, if set, gets the handler's metrics.
	Registerer prometheus.Registerer
}

// Handler is the request-count endpoint. Create one with New.
type Handler struct {
	st      *store.Store
	path    string
	maxBody int64

	requests *prometheus.CounterVec // by code
	rejected *prometheus.CounterVec // by reason
	msgs     prometheus.Counter
	counts   prometheus.Counter
}

// New returns a Handler adding to st.
func New(st *store.Store, opts Options) *Handler {
	if opts.Path == "" {
		opts.Path = DefaultPath
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	h := &Handler{
		st:      st,
		path:    opts.Path,
		maxBody: opts.MaxBody,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reqcount_scaler_http_requests_total",
			Help: "Requests to the request-count endpoint, by HTTP status answered.",
		}, []string{"code"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reqcount_scaler_http_rejected_total",
			Help: "Requests refused with nothing counted, by reason: method, path, size, body, full.",
		}, []string{"reason"}),
		msgs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "reqcount_scaler_messages_total",
			Help: "RequestCount messages counted.",
		}),
		counts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "reqcount_scaler_requests_counted_total",
			Help: "Sum of the counts of the RequestCount messages counted: the requests the filters saw.",
		}),
	}
	for _, r := range []string{"method", "path", "size", "body", "full"} {
		h.rejected.WithLabelValues(r)
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(h.requests, h.rejected, h.msgs, h.counts)
	}
	return h
}

// Path returns the path served.
func (h *Handler) Path() string { return h.path }

// ServeHTTP implements the contract in the package comment.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path != h.path:
		h.refuse(w, http.StatusNotFound, "path", fmt.Sprintf("not found: the request-count endpoint is POST %s", h.path))
		return
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", http.MethodPost)
		h.refuse(w, http.StatusMethodNotAllowed, "method", "method not allowed: use POST")
		return
	case r.ContentLength > h.maxBody:
		h.refuse(w, http.StatusRequestEntityTooLarge, "size", fmt.Sprintf("body of %d bytes is over the limit of %d", r.ContentLength, h.maxBody))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.refuse(w, http.StatusRequestEntityTooLarge, "size", fmt.Sprintf("body is over the limit of %d bytes", h.maxBody))
			return
		}
		h.refuse(w, http.StatusBadRequest, "body", "reading the body: "+err.Error())
		return
	}
	msgs, err := messages.Decode(body)
	if err != nil {
		h.refuse(w, http.StatusBadRequest, "body", err.Error())
		return
	}
	if err := h.st.Add(msgs); err != nil {
		// store.ErrFull, its only error.
		h.refuse(w, http.StatusServiceUnavailable, "full", "the scaler holds its -max-targets targets, all reported within -max-window; nothing of this body was counted")
		return
	}
	var total float64
	for _, m := range msgs {
		total += float64(m.Count)
	}
	h.msgs.Add(float64(len(msgs)))
	h.counts.Add(total)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, SuccessBody)
	h.requests.WithLabelValues("200").Inc()
}

// refuse answers code with reason in plain text and counts it.
func (h *Handler) refuse(w http.ResponseWriter, code int, label, reason string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, reason+"\n")
	h.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	h.rejected.WithLabelValues(label).Inc()
}
