// Package collector is a stand-in for the scale-to-zero operator's request-count
// endpoint: a real net/http server that speaks the operator's contract, counts what
// it accepts, and can be told to misbehave.
//
// It is what the filter talks to in end-to-end tests, in `make run` and in the
// real-Envoy test. The contract it implements (see the messages package):
//
//   - POST only: any other method is answered 405, as the operator does.
//   - One path, /informer/incoming-request by default: any other is answered 404.
//   - The body is read exactly as the operator reads it, with
//     json.NewDecoder(body).Decode(&one): an array is a 400, and anything after the
//     first object is silently ignored. Unlike the operator, the collector notices
//     such trailing data and counts it in [Stats.Trailing], so a test can prove the
//     filter never puts more than one object in a body.
//   - Each message must pass [messages.RequestCount.Validate] (count >= 1, svc and
//     namespace DNS-1123 labels), else 400. The operator checks less; being
//     stricter here makes a filter bug visible instead of silently scaling nothing.
//   - Success is 200 with {"message":"Request received successfully!"}.
//
// With [Options.Batch] it also accepts a JSON array of messages in one body, the
// filter's batch mode. Faults for tests: [Collector.FailWith], [Collector.Delay],
// and [Collector.Pause] / [Collector.Resume] to refuse connections for a while.
//
// A Collector is an [http.Handler], so it also runs under net/http/httptest.
package collector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/reqcount/reqcount/messages"
)

// DefaultPath is the path the operator serves request counts on.
const DefaultPath = "/informer/incoming-request"

// SuccessBody is the body of a 200 answer, byte for byte the operator's.
const SuccessBody = `{"message":"Request received successfully!"}`

// MaxBodySize bounds a request body. The filter's bodies are tens of bytes (a
// batch of max_keys messages is at most a few MiB); anything larger is answered 413.
const MaxBodySize = 8 << 20

// Options configures a Collector. The zero value is the operator's contract.
type Options struct {
	// Batch makes the collector also accept a JSON array of messages in one body
	// (the filter's batch mode). Default false: like the operator, an array is a 400.
	Batch bool
	// Out, if set, receives one line of compact JSON per accepted message, e.g.
	// {"count":1,"svc":"web","namespace":"shop"}. Default nil: print nothing.
	Out io.Writer
	// Path is the only path served. Default DefaultPath.
	Path string
	// OnMessage, if set, is called with every accepted message, after the
	// request was answered, on the request's goroutine: what an operator does
	// with it (make run's scale-up from zero). Default nil.
	OnMessage func(messages.RequestCount)
}

// Key identifies a counted target: a Kubernetes service and its namespace.
type Key struct {
	Svc, Namespace string
}

// Stats counts what the collector has seen. Every request is counted in Requests
// when it arrives and, once handled, in exactly one of Accepted, Rejected,
// Injected or Abandoned; all but the abandoned ones also in ByStatus.
type Stats struct {
	// Requests is the number of HTTP requests that reached the handler.
	Requests int
	// Accepted is the number of requests answered 200, whose messages were counted.
	Accepted int
	// Messages is the number of RequestCount objects accepted: one per accepted
	// request in single mode, the array length for a batch.
	Messages int
	// Rejected is the number of requests refused for their method (405), path
	// (404), size (413) or body (400).
	Rejected int
	// Injected is the number of requests answered with the FailWith status.
	Injected int
	// Abandoned is the number of requests dropped while delayed because the client
	// went away or the collector was paused or closed. Nothing was counted for them.
	Abandoned int
	// Trailing is the number of bodies with data after their first JSON value. The
	// operator silently drops such data, so a correct sender keeps this at 0.
	Trailing int
	// ByStatus counts answers by HTTP status code.
	ByStatus map[int]int
}

// Collector is an operator stand-in. Create one with New; it is safe for
// concurrent use. Serve it with Start, or mount it as an http.Handler.
type Collector struct {
	batch bool
	path  string

	outMu sync.Mutex // serialises lines written to out
	out   io.Writer
	onMsg func(messages.RequestCount)

	mu       sync.Mutex
	totals   map[Key]int
	received []messages.RequestCount
	stats    Stats
	changed  chan struct{} // closed and replaced whenever stats change (see notifyLocked)
	failWith int
	delay    time.Duration

	// Serving state, also under mu.
	addr    string        // the address Start bound, kept for Resume
	srv     *http.Server  // nil when not started or paused
	served  chan struct{} // closed when srv's Serve returns
	stop    chan struct{} // closed by Pause and Close: delayed handlers give up
	closed  bool
	started bool
}

// New returns a collector configured by opts. It serves nothing until Start.
func New(opts Options) *Collector {
	path := opts.Path
	if path == "" {
		path = DefaultPath
	}
	return &Collector{
		batch:   opts.Batch,
		path:    path,
		out:     opts.Out,
		onMsg:   opts.OnMessage,
		totals:  make(map[Key]int),
		stats:   Stats{ByStatus: make(map[int]int)},
		changed: make(chan struct{}),
		stop:    make(chan struct{}),
	}
}

// Start listens on addr and serves in the background until Close. An addr with
// port 0, such as "127.0.0.1:0", picks a free port: read it back with Addr. The
// port is kept, so that Resume listens on the same one.
func (c *Collector) Start(addr string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("collector: Start after Close")
	}
	if c.started {
		return errors.New("collector: already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	c.started = true
	c.addr = ln.Addr().String()
	c.serveLocked(ln)
	return nil
}

// serveLocked serves on ln with a fresh http.Server: a closed http.Server cannot
// be started again, and Pause closes it.
func (c *Collector) serveLocked(ln net.Listener) {
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	c.srv, c.served = srv, served
	go func() {
		defer close(served)
		_ = srv.Serve(ln) // always an error once closed; nothing to report
	}()
}

// Addr returns the host:port the collector listens on, or "" before Start.
func (c *Collector) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addr
}

// URL returns the full URL of the collector's endpoint, e.g.
// http://127.0.0.1:8013/informer/incoming-request, or "" before Start.
func (c *Collector) URL() string {
	addr := c.Addr()
	if addr == "" {
		return ""
	}
	return "http://" + addr + c.path
}

// Pause stops accepting connections and closes the open ones, so that clients
// see "connection refused" until Resume. Requests held by Delay are abandoned.
// Pausing a paused or unstarted collector does nothing.
func (c *Collector) Pause() {
	c.mu.Lock()
	srv, served := c.srv, c.served
	if srv != nil {
		c.srv, c.served = nil, nil
		close(c.stop)
		c.stop = make(chan struct{})
	}
	c.mu.Unlock()
	if srv != nil {
		_ = srv.Close() // closes the listener and every connection
		<-served
	}
}

// Resume listens again on the address Start bound, after Pause. It fails if the
// collector was never started, is closed, or the port was taken meanwhile.
// Resuming a collector that is not paused does nothing.
func (c *Collector) Resume() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return errors.New("collector: Resume after Close")
	case !c.started:
		return errors.New("collector: Resume before Start")
	case c.srv != nil:
		return nil
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("collector: resume: %w", err)
	}
	c.serveLocked(ln)
	return nil
}

// Close stops serving, closes every connection and releases requests held by
// Delay. It is safe to call more than once.
func (c *Collector) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.stop)
	srv, served := c.srv, c.served
	c.srv, c.served = nil, nil
	c.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Close()
	<-served
	return err
}

// FailWith makes the collector answer every request with status, without
// checking or counting it (Stats.Injected), as an operator in trouble would. 0 makes it
// healthy again. Statuses outside 100..599 are treated as 0.
func (c *Collector) FailWith(status int) {
	if status < 100 || status > 599 {
		status = 0
	}
	c.mu.Lock()
	c.failWith = status
	c.mu.Unlock()
}

// Delay makes the collector wait d before answering each request that arrives
// from now on, as a slow operator would; 0 (the default) answers at once. A
// delayed request is abandoned (Stats.Abandoned, nothing counted, no answer: the
// handler panics with http.ErrAbortHandler, which net/http turns into a closed
// connection) as soon as its client goes away or the collector is paused or closed.
func (c *Collector) Delay(d time.Duration) {
	c.mu.Lock()
	c.delay = max(d, 0)
	c.mu.Unlock()
}

// Totals returns the sum of accepted counts per key. The map is a copy.
func (c *Collector) Totals() map[Key]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.totals)
}

// Received returns every accepted message in arrival order. The slice is a copy.
func (c *Collector) Received() []messages.RequestCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]messages.RequestCount(nil), c.received...)
}

// Stats returns a copy of the collector's counters.
func (c *Collector) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.ByStatus = maps.Clone(c.stats.ByStatus)
	return s
}

// WaitFor blocks until cond, called with copies of Totals and Stats now and after
// every change to them (a request arriving, a request answered), returns true, or ctx is done. It returns nil
// once cond holds, else ctx's error. Tests use it instead of sleeping.
func (c *Collector) WaitFor(ctx context.Context, cond func(totals map[Key]int, stats Stats) bool) error {
	for {
		// The channel and the copies are taken together, so a change made after
		// them closes the channel this loop waits on: none is missed.
		c.mu.Lock()
		changed := c.changed
		totals := maps.Clone(c.totals)
		stats := c.stats
		stats.ByStatus = maps.Clone(c.stats.ByStatus)
		c.mu.Unlock()
		if cond(totals, stats) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ServeHTTP answers one request under the operator's contract (see the package doc).
func (c *Collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.stats.Requests++
	c.notifyLocked() // WaitFor may be waiting for a request to arrive, e.g. to cancel it
	delay, stop := c.delay, c.stop
	c.mu.Unlock()

	// The body is read before any delay: net/http notices that a client went away
	// (and cancels r.Context) only once the body has been read to the end.
	body, readErr := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodySize))
	if delay > 0 && !wait(r.Context(), delay, stop) {
		c.finish(0, result{abandoned: true})
		// No answer at all: the client is gone, or the collector is being paused
		// or closed and must look dead. net/http closes the connection.
		panic(http.ErrAbortHandler)
	}

	// Read after the delay, so a test can fail or heal the collector while a
	// request is held.
	c.mu.Lock()
	failWith := c.failWith
	c.mu.Unlock()
	if failWith != 0 {
		http.Error(w, "collector: injected failure", failWith)
		c.finish(failWith, result{injected: true})
		return
	}

	// Path before method, as with the operator's mux: an unknown path is a 404
	// whatever the method.
	if r.URL.Path != c.path {
		http.NotFound(w, r)
		c.finish(http.StatusNotFound, result{})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		c.finish(http.StatusMethodNotAllowed, result{})
		return
	}
	if readErr != nil {
		status := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](readErr); ok {
			status = http.StatusRequestEntityTooLarge
		}
		http.Error(w, "collector: reading body: "+readErr.Error(), status)
		c.finish(status, result{})
		return
	}
	msgs, trailing, err := c.decode(body)
	if err != nil {
		http.Error(w, "collector: "+err.Error(), http.StatusBadRequest)
		c.finish(http.StatusBadRequest, result{trailing: trailing})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, SuccessBody)
	c.finish(http.StatusOK, result{accepted: msgs, trailing: trailing})
}

// wait sleeps for d and reports true, or reports false as soon as ctx is done or
// stop is closed.
func wait(ctx context.Context, d time.Duration, stop <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

// decode reads body the way the operator does, plus arrays in batch mode. It
// reports whether non-space data followed the first JSON value.
func (c *Collector) decode(body []byte) (msgs []messages.RequestCount, trailing bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if c.batch && firstByte(body) == '[' {
		err = dec.Decode(&msgs)
		if err == nil && len(msgs) == 0 {
			err = messages.ErrNoMessages
		}
	} else {
		// Exactly the operator's read: one object, the rest of the body ignored.
		var one messages.RequestCount
		err = dec.Decode(&one)
		msgs = []messages.RequestCount{one}
	}
	if err != nil {
		return nil, false, err
	}
	trailing = len(bytes.TrimSpace(body[dec.InputOffset():])) > 0
	for i, m := range msgs {
		if err := m.Validate(); err != nil {
			if len(msgs) > 1 {
				return nil, trailing, fmt.Errorf("message %d: %w", i, err)
			}
			return nil, trailing, err
		}
	}
	return msgs, trailing, nil
}

// firstByte returns the first non-space byte of b, or 0.
func firstByte(b []byte) byte {
	if b = bytes.TrimSpace(b); len(b) > 0 {
		return b[0]
	}
	return 0
}

// result is the outcome of one request, for finish.
type result struct {
	accepted  []messages.RequestCount
	trailing  bool
	injected  bool
	abandoned bool
}

// finish records the outcome of one request and wakes WaitFor. status is 0 for a
// request that got no answer.
func (c *Collector) finish(status int, res result) {
	var line []byte
	if c.out != nil {
		for _, m := range res.accepted {
			line = append(messages.AppendJSON(line, m), '\n')
		}
	}

	c.mu.Lock()
	if status != 0 {
		c.stats.ByStatus[status]++
	}
	if res.trailing {
		c.stats.Trailing++
	}
	switch {
	case res.abandoned:
		c.stats.Abandoned++
	case res.injected:
		c.stats.Injected++
	case status == http.StatusOK:
		c.stats.Accepted++
		c.stats.Messages += len(res.accepted)
		for _, m := range res.accepted {
			c.totals[Key{Svc: m.Svc, Namespace: m.Namespace}] += m.Count
		}
		c.received = append(c.received, res.accepted...)
	default:
		c.stats.Rejected++
	}
	c.notifyLocked()
	c.mu.Unlock()

	if len(line) > 0 {
		c.outMu.Lock()
		_, _ = c.out.Write(line) // a broken Out must not fail the request
		c.outMu.Unlock()
	}
	if c.onMsg != nil && status == http.StatusOK && !res.injected {
		for _, m := range res.accepted {
			c.onMsg(m)
		}
	}
}

// notifyLocked wakes every WaitFor. c.mu must be held.
func (c *Collector) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}
