package e2e_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/filter/filtertest"
	"github.com/reqcount/reqcount/messages"
)

// TestScenarios runs the filter's behaviour table (package filtertest, the same
// table package main runs natively on proxytest) on the compiled module in the
// wasm host: one worker, ticks fired by the scenario, and callouts held by the
// driver until the scenario answers them.
func TestScenarios(t *testing.T) {
	filterModule(t) // fail once, up front, when the module is missing
	filtertest.Run(t, func(t *testing.T) filtertest.Host { return &wasmDriver{t: t} })
}

// scenarioCluster is the cluster the scenarios configure; holdScenarioCluster
// the one filtertest's hold scenarios route their requests to.
const (
	scenarioCluster     = "collector"
	holdScenarioCluster = "outbound|80||web.shop.svc.cluster.local"
)

// wasmDriver adapts the wasm host to filtertest.Host.
type wasmDriver struct {
	t    *testing.T
	host *wasmhost.Host // nil until started, and after a refused start
	logs logCapture

	mu       sync.Mutex
	pending  []heldCall // dispatched, unanswered, in dispatch order
	draining bool       // the test is over: answer every call at once

	// Shutdown runs Host.Close in the background, since Close returns only once
	// the plugin has finished: closed is closed then, with its error in
	// closeErr. Cancelling stopCtx forces the end.
	closed   chan struct{}
	closeErr error
	stopCtx  context.CancelFunc

	// route is the cluster the requests Open starts are routed to.
	route string
}

// Route sets the cluster of the requests opened from now on.
func (d *wasmDriver) Route(cluster string) { d.route = cluster }

// Open starts a request on the worker and returns once its request-headers
// callback returned (held or not).
func (d *wasmDriver) Open(headers [][2]string, body []byte) filtertest.HoldStream {
	d.t.Helper()
	st, err := d.worker().Open(boundedCtx(d.t), wasmhost.Request{Headers: headers, Body: body, Cluster: d.route})
	if err != nil {
		d.t.Fatalf("open %v: %v", headers, err)
	}
	return &wasmStream{d: d, st: st}
}

// wasmStream is a request opened on the wasm host.
type wasmStream struct {
	d  *wasmDriver
	st *wasmhost.Stream
}

// Held reports whether the stream is paused, once the worker has run what
// was posted to it (answers, resumes).
func (s *wasmStream) Held() bool {
	syncWorker(s.d.worker())
	return s.st.Paused()
}

func (s *wasmStream) Reset() {
	if err := s.st.Reset(boundedCtx(s.d.t)); err != nil {
		s.d.t.Fatalf("reset stream %d: %v", s.st.ID(), err)
	}
	syncWorker(s.d.worker())
}

// UpstreamBody waits for the stream to end and returns what the upstream
// received.
func (s *wasmStream) UpstreamBody() ([]byte, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := s.st.Wait(ctx)
	if err != nil {
		s.d.t.Fatalf("stream %d: %v", s.st.ID(), err)
	}
	return res.UpstreamBody, true
}

// heldCall is a callout the driver holds until Answer.
type heldCall struct {
	call  wasmhost.Callout
	reply func(wasmhost.Response)
}

func (d *wasmDriver) worker() *wasmhost.Worker {
	d.t.Helper()
	if d.host == nil {
		d.t.Fatal("scenario drives a plugin that is not running")
	}
	return d.host.Worker(0)
}

func (d *wasmDriver) Start(config string) error {
	h, err := wasmhost.New(boundedCtx(d.t), filterModule(d.t), wasmhost.Config{
		Workers:      1,
		PluginConfig: []byte(config),
		// The address is not used: dispatch below answers every call. The
		// hold scenarios' requests route to (and check) the second.
		Clusters:    map[string]string{scenarioCluster: "", holdScenarioCluster: ""},
		Dispatch:    d.dispatch,
		ManualTicks: true,
		LogOutput:   &d.logs,
	})
	if err != nil {
		// New returns no Host, so the scenario reads the logs captured from
		// LogOutput; the host promises them in its error too.
		for _, line := range d.logs.messages("error") {
			if !strings.Contains(err.Error(), line) {
				d.t.Errorf("wasmhost.New error %q leaves out the module's error log %q", err, line)
			}
		}
		return err
	}
	d.host = h
	d.t.Cleanup(d.finish)
	return nil
}

// dispatch records a callout. It runs on the worker goroutine inside
// proxy_http_call, so it only takes a lock.
func (d *wasmDriver) dispatch(c wasmhost.Callout, reply func(wasmhost.Response)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.draining {
		reply(wasmhost.Response{Status: 200})
		return
	}
	d.pending = append(d.pending, heldCall{call: c, reply: reply})
}

func (d *wasmDriver) Request(headers [][2]string) {
	d.t.Helper()
	res, err := d.worker().Request(boundedCtx(d.t), wasmhost.Request{Headers: headers})
	if err != nil {
		d.t.Fatalf("request %v: %v", headers, err)
	}
	if res.RequestAction != wasmhost.ActionContinue {
		d.t.Fatalf("request headers: action %v, want continue", res.RequestAction)
	}
}

func (d *wasmDriver) Tick() {
	d.t.Helper()
	if err := d.worker().Tick(boundedCtx(d.t)); err != nil {
		d.t.Fatalf("tick: %v", err)
	}
}

func (d *wasmDriver) TickPeriod() time.Duration { return d.worker().TickPeriod() }

func (d *wasmDriver) Callouts() []filtertest.Callout {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]filtertest.Callout, 0, len(d.pending))
	for _, p := range d.pending {
		out = append(out, filtertest.Callout{ID: p.call.Token, Cluster: p.call.Cluster, Headers: p.call.Headers, Body: p.call.Body})
	}
	return out
}

// Answer replies to a held callout and returns once the module has run
// proxy_on_http_call_response for it.
func (d *wasmDriver) Answer(id uint32, status int) {
	d.t.Helper()
	d.mu.Lock()
	var held *heldCall
	for i, p := range d.pending {
		if p.call.Token == id {
			held = &p
			d.pending = append(d.pending[:i:i], d.pending[i+1:]...)
			break
		}
	}
	d.mu.Unlock()
	if held == nil {
		d.t.Fatalf("no unanswered callout %d", id)
	}
	w := d.worker()
	before := w.Stats().GuestCalls["proxy_on_http_call_response"]
	resp := wasmhost.Reset() // zero headers
	if status != 0 {
		resp = wasmhost.Response{Status: status}
	}
	held.reply(resp)
	syncWorker(w)
	// Proof that the barrier held, rather than trust in it.
	if after := w.Stats().GuestCalls["proxy_on_http_call_response"]; after != before+1 {
		d.t.Fatalf("answer to callout %d: proxy_on_http_call_response ran %d times, want 1", id, after-before)
	}
}

// Shutdown starts Host.Close (proxy_on_done on the root) and reports whether
// the plugin finished at once: proxy_on_delete followed proxy_on_done in the
// same step instead of waiting for proxy_done.
func (d *wasmDriver) Shutdown() bool {
	d.t.Helper()
	w := d.worker()
	if d.closed != nil {
		d.t.Fatal("Shutdown called twice")
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.closed, d.stopCtx = make(chan struct{}), cancel
	go func() {
		defer close(d.closed)
		d.closeErr = d.host.Close(ctx)
	}()

	// Close posts proxy_on_done from a goroutine of its own: wait (bounded) for it
	// to begin, then for the worker to finish that step.
	deadline := time.Now().Add(waitLimit)
	for rootCalls(w, "proxy_on_done") == 0 {
		select {
		case <-d.closed:
			// Close may have called proxy_on_done and returned since the check
			// above: look once more before calling it a failure.
			if rootCalls(w, "proxy_on_done") == 0 {
				d.t.Fatalf("Close returned without calling proxy_on_done: %v", d.closeErr)
			}
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("proxy_on_done not called within %v of Close", waitLimit)
		}
		time.Sleep(time.Millisecond)
	}
	syncWorker(w)
	return rootCalls(w, "proxy_on_delete") == 1
}

// PluginDone reports whether the plugin called proxy_done and the host then
// deleted the root context.
func (d *wasmDriver) PluginDone() bool {
	w := d.worker()
	return w.Stats().HostCalls["proxy_done"] > 0 && rootCalls(w, "proxy_on_delete") == 1
}

func (d *wasmDriver) Counter(name string) uint64 {
	if d.host == nil {
		return 0
	}
	return d.host.Counter(name)
}

func (d *wasmDriver) Logs(level string) []string {
	if d.host == nil {
		return d.logs.messages(level)
	}
	for l := wasmhost.LevelTrace; l <= wasmhost.LevelCritical; l++ {
		if l.String() == level {
			return d.host.Logs(l)
		}
	}
	d.t.Fatalf("unknown log level %q", level)
	return nil
}

// HeaderReads counts the host calls that read request headers.
func (d *wasmDriver) HeaderReads() (int, bool) {
	s := d.worker().Stats()
	return int(s.HostCalls["proxy_get_header_map_value"] + s.HostCalls["proxy_get_header_map_pairs"]), true
}

// finish ends the host when the scenario is over: every held call and any the
// shutdown makes are answered 200, so the plugin can finish on its own, and
// Close must then succeed with no crash.
func (d *wasmDriver) finish() {
	d.mu.Lock()
	d.draining = true
	held := d.pending
	d.pending = nil
	d.mu.Unlock()
	for _, p := range held {
		p.reply(wasmhost.Response{Status: 200})
	}
	if d.closed == nil {
		closeHost(d.t, d.host)
		return
	}
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	select {
	case <-d.closed:
		if d.closeErr != nil {
			d.t.Errorf("close: %v", d.closeErr)
		}
	case <-timer.C:
		d.stopCtx()
		<-d.closed
		d.t.Errorf("plugin did not finish within %v of its shutdown: %v", waitLimit, d.closeErr)
	}
	d.stopCtx()
	if s := d.host.Stats(); len(s.Crashes) > 0 {
		d.t.Errorf("crashed: %v", s.Crashes)
	}
}

// logCapture keeps the lines the host writes to Config.LogOutput, one Write per
// line ("[worker N] level: message\n"), so that the logs of a start the plugin
// refused stay readable: New returns no Host then.
type logCapture struct {
	mu    sync.Mutex
	lines [][2]string // level, message
}

func (c *logCapture) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	_, rest, ok := strings.Cut(line, "] ")
	level, msg, ok2 := strings.Cut(rest, ": ")
	if !ok || !ok2 {
		return 0, errors.New("log line not in the form \"[worker N] level: message\"")
	}
	c.mu.Lock()
	c.lines = append(c.lines, [2]string{level, msg})
	c.mu.Unlock()
	return len(p), nil
}

func (c *logCapture) messages(level string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, l := range c.lines {
		if l[0] == level {
			out = append(out, l[1])
		}
	}
	return out
}

// TestShutdownSendsHeldCounts: a count made while its key's call is in flight
// is held back (nothing is sent twice), and must still go out when the plugin
// shuts down: after that call's answer, before the plugin reports it is done.
// Otherwise the last requests of every busy key are lost at each shutdown (the
// filter logs "shutting down with N counted requests not delivered"). The
// worker's own flusher is tested (aggregate: worker); aggregate: envoy has its
// scenario in filtertest.
func TestShutdownSendsHeldCounts(t *testing.T) {
	for _, mode := range []string{"single", "batch"} {
		t.Run(mode, func(t *testing.T) {
			d := &wasmDriver{t: t}
			if err := d.Start(`{"cluster":"collector","aggregate":"worker","mode":"` + mode + `"}`); err != nil {
				t.Fatal(err)
			}
			d.Request(filtertest.Authority("web.shop"))
			d.Tick()
			d.Request(filtertest.Authority("web.shop")) // held: web.shop is in flight
			if d.Shutdown() {
				t.Fatal("plugin finished at once with a call in flight")
			}
			cs := d.Callouts()
			if len(cs) != 1 {
				t.Fatalf("want the 1 call in flight, got %d", len(cs))
			}
			d.Answer(cs[0].ID, 200)

			cs = d.Callouts()
			if len(cs) != 1 {
				t.Fatalf("after the answer, want 1 call with the held count, got %d (plugin done: %v, warnings: %q)",
					len(cs), d.PluginDone(), d.Logs("warn"))
			}
			if d.PluginDone() {
				t.Fatal("plugin finished with a call in flight")
			}
			msgs, err := messages.Decode(cs[0].Body)
			if want := []messages.RequestCount{{Count: 1, Svc: "web", Namespace: "shop"}}; err != nil || !slices.Equal(msgs, want) {
				t.Fatalf("held count sent as %s (%v), want %v", cs[0].Body, err, want)
			}
			d.Answer(cs[0].ID, 200)
			if !d.PluginDone() {
				t.Fatal("plugin did not finish after its last answer")
			}
			if w := d.Logs("warn"); len(w) > 0 {
				t.Fatalf("warnings: %q", w)
			}
		})
	}
}
