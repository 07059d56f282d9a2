// Package filtertest holds the filter's behaviour scenarios as one table, run
// against any Host: natively on the SDK's proxytest emulator (package main's tests)
// and on the compiled module in the e2e wasm host (package e2e). One table for
// both keeps the two from drifting apart.
package filtertest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/reqcount/reqcount/messages"
)

// Host runs one instance of the filter (one worker) for a scenario.
type Host interface {
	// Start starts the plugin with a configuration. It returns an error when the
	// plugin refused it; the error-level logs say why.
	Start(config string) error
	// Request passes one request with these request headers through the filter.
	Request(headers [][2]string)
	// Tick fires the plugin's timer once.
	Tick()
	// TickPeriod returns the period the plugin asked for.
	TickPeriod() time.Duration
	// Callouts returns the calls dispatched and not yet answered, in dispatch order.
	Callouts() []Callout
	// Answer answers a callout with a :status; status 0 is a reset (Envoy's zero
	// headers).
	Answer(id uint32, status int)
	// Shutdown asks the plugin to finish (proxy_on_done) and reports whether it
	// finished at once (true) or asked the host to wait for its calls (false).
	Shutdown() bool
	// PluginDone reports whether the plugin has told the host it finished after
	// a Shutdown that returned false (proxy_done).
	PluginDone() bool
	// Counter returns the value of an Envoy counter metric (0 if not defined).
	Counter(name string) uint64
	// Logs returns the log lines at a level: "error", "warn", "info".
	Logs(level string) []string
	// HeaderReads returns how many request-header reads the plugin made, and false
	// when the host cannot observe them.
	HeaderReads() (int, bool)
}

// Callout is one call the plugin dispatched.
type Callout struct {
	ID      uint32
	Cluster string
	Headers [][2]string
	Body    []byte
}

// Header returns the value of a callout header, or "".
func (c Callout) Header(name string) string {
	for _, h := range c.Headers {
		if h[0] == name {
			return h[1]
		}
	}
	return ""
}

// Scenario is one named behaviour check.
type Scenario struct {
	Name string
	Run  func(t testing.TB, h Host)
}

// Run runs every scenario as a subtest, each on a fresh Host from newHost.
func Run(t *testing.T, newHost func(t *testing.T) Host) {
	for _, s := range Scenarios() {
		t.Run(s.Name, func(t *testing.T) { s.Run(t, newHost(t)) })
	}
}

// Metric names the scenarios check (the filter's public metric names).
const (
	MetricCounted        = "reqcount.requests_counted"
	MetricUncounted      = "reqcount.requests_uncounted."
	MetricOverflow       = "reqcount.requests_overflow"
	MetricCallsDelivered = "reqcount.flush.calls_delivered"
	MetricCallsRejected  = "reqcount.flush.calls_rejected"
	MetricCallsReset     = "reqcount.flush.calls_reset"
	MetricCountsRequeued = "reqcount.flush.counts_requeued"
)

const base = `"cluster":"collector"`

// cfg builds a configuration from base plus extra JSON fields. Unless extra sets
// them, it pins flush_interval to 100ms (one tick per interval: every key is sent
// on every tick), turns wake-ups off and has each worker report alone, so that
// the scenarios about keys and flushing see one tick as one flush; the delivery
// scenarios set what they test.
func cfg(extra string) string {
	fields := base
	if !strings.Contains(extra, `"flush_interval"`) {
		fields += `,"flush_interval":"100ms"`
	}
	if !strings.Contains(extra, `"wake_after"`) {
		fields += `,"wake_after":"0s"`
	}
	if !strings.Contains(extra, `"aggregate"`) {
		fields += `,"aggregate":"worker"`
	}
	if extra != "" {
		fields += "," + extra
	}
	return "{" + fields + "}"
}

// Authority returns request headers carrying only an :authority.
func Authority(a string) [][2]string { return [][2]string{{":authority", a}} }

func start(t testing.TB, h Host, config string) {
	t.Helper()
	if err := h.Start(config); err != nil {
		t.Fatalf("start %s: %v", config, err)
	}
}

// sent decodes every unanswered callout body the way the operator does (one
// object per body in single mode) and returns the messages, sorted.
func sent(t testing.TB, h Host) []messages.RequestCount {
	t.Helper()
	return sentBut(t, h, "")
}

// sentBut is sent leaving out the callouts to cluster skip (none when "").
func sentBut(t testing.TB, h Host, skip string) []messages.RequestCount {
	t.Helper()
	var out []messages.RequestCount
	for _, c := range h.Callouts() {
		if skip != "" && c.Cluster == skip {
			continue
		}
		ms, err := messages.Decode(c.Body)
		if err != nil {
			t.Fatalf("callout %d body %q: %v", c.ID, c.Body, err)
		}
		out = append(out, ms...)
	}
	sortMsgs(out)
	return out
}

func sortMsgs(ms []messages.RequestCount) {
	sort.Slice(ms, func(i, j int) bool {
		if ms[i].Namespace != ms[j].Namespace {
			return ms[i].Namespace < ms[j].Namespace
		}
		return ms[i].Svc < ms[j].Svc
	})
}

func msg(n int, svc, ns string) messages.RequestCount {
	return messages.RequestCount{Count: n, Svc: svc, Namespace: ns}
}

func expectSent(t testing.TB, h Host, want ...messages.RequestCount) {
	t.Helper()
	got := sent(t, h)
	sortMsgs(want)
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("in-flight messages:\n got  %v\n want %v", got, want)
	}
}

// answerAll answers every unanswered callout, newest first (see the proxytest note
// in package main's tests: its callout IDs are reused otherwise).
func answerAll(h Host, status int) {
	cs := h.Callouts()
	for i := len(cs) - 1; i >= 0; i-- {
		h.Answer(cs[i].ID, status)
	}
}

func expectCounter(t testing.TB, h Host, name string, want uint64) {
	t.Helper()
	if got := h.Counter(name); got != want {
		t.Fatalf("counter %s = %d, want %d", name, got, want)
	}
}

// Scenarios returns the behaviour table.
func Scenarios() []Scenario {
	var out []Scenario
	out = append(out, configScenarios()...)
	out = append(out, keyScenarios()...)
	out = append(out, flushScenarios()...)
	out = append(out, deliveryScenarios()...)
	out = append(out, intervalScenarios()...)
	out = append(out, holdScenarios()...)
	return out
}

// BadConfigs are configurations the plugin must refuse, each with the field its
// error-level log line must name.
var BadConfigs = []struct{ Name, Config, Field string }{
	{"empty", ``, ""},
	{"not json", `cluster: x`, ""},
	{"array", `[]`, ""},
	{"missing cluster", `{}`, "cluster"},
	{"unknown field", `{"cluster":"c","clusterr":"x"}`, "clusterr"},
	{"bad flush_interval", `{"cluster":"c","flush_interval":"soon"}`, "flush_interval"},
	{"zero flush_interval", `{"cluster":"c","flush_interval":"0s"}`, "flush_interval"},
	{"negative timeout", `{"cluster":"c","timeout":"-1s"}`, "timeout"},
	{"unknown mode", `{"cluster":"c","mode":"stream"}`, "mode"},
	{"unknown key_source", `{"cluster":"c","key_source":"path"}`, "key_source"},
	{"static without service", `{"cluster":"c","key_source":"static","namespace":"shop"}`, "service"},
	{"static without namespace", `{"cluster":"c","key_source":"static","service":"web"}`, "namespace"},
	{"zero max_keys", `{"cluster":"c","max_keys":0}`, "max_keys"},
	{"negative max_keys", `{"cluster":"c","max_keys":-5}`, "max_keys"},
	{"max_keys as string", `{"cluster":"c","max_keys":"10"}`, "max_keys"},
	{"bad wake_after", `{"cluster":"c","wake_after":"soon"}`, "wake_after"},
	{"bad include pattern", `{"cluster":"c","include":["web"]}`, "include"},
	{"bad exclude pattern", `{"cluster":"c","exclude":["Web.shop"]}`, "exclude"},
	{"ignore_paths without slash", `{"cluster":"c","ignore_paths":["healthz"]}`, "ignore_paths"},
	{"empty ignore_user_agents entry", `{"cluster":"c","ignore_user_agents":[""]}`, "ignore_user_agents"},
	{"negative memo_size", `{"cluster":"c","memo_size":-1}`, "memo_size"},
}

func configScenarios() []Scenario {
	var out []Scenario
	for _, bc := range BadConfigs {
		out = append(out, Scenario{Name: "config refused/" + bc.Name, Run: func(t testing.TB, h Host) {
			if err := h.Start(bc.Config); err == nil {
				t.Fatalf("configuration %q was accepted", bc.Config)
			}
			logs := h.Logs("error")
			if len(logs) != 1 {
				t.Fatalf("want one error log line, got %q", logs)
			}
			if bc.Field != "" && !strings.Contains(logs[0], fmt.Sprintf("%q", bc.Field)) {
				t.Fatalf("error log %q does not name field %q", logs[0], bc.Field)
			}
		}})
	}
	out = append(out, Scenario{Name: "config/tick period from flush_interval", Run: func(t testing.TB, h Host) {
		start(t, h, cfg(`"flush_interval":"250ms"`)) // two ticks of 125ms
		if got := h.TickPeriod(); got != 125*time.Millisecond {
			t.Fatalf("tick period %v, want 125ms", got)
		}
	}})
	out = append(out, Scenario{Name: "config/defaults: headers, path, timeout tick", Run: func(t testing.TB, h Host) {
		start(t, h, "{"+base+"}")
		// 30s in 60 ticks of 500ms.
		if got := h.TickPeriod(); got != 500*time.Millisecond {
			t.Fatalf("default tick period %v, want 500ms", got)
		}
		h.Request(Authority("web.shop")) // a new key: woken at once, from the request
		h.Tick()
		cs := h.Callouts()
		if len(cs) != 1 {
			t.Fatalf("want 1 callout, got %d", len(cs))
		}
		c := cs[0]
		want := map[string]string{":method": "POST", ":path": "/informer/incoming-request",
			":authority": "collector", "content-type": "application/json"}
		for k, v := range want {
			if got := c.Header(k); got != v {
				t.Errorf("callout header %s = %q, want %q", k, got, v)
			}
		}
		if c.Cluster != "collector" {
			t.Errorf("callout cluster %q, want collector", c.Cluster)
		}
		if string(c.Body) != `{"count":1,"svc":"web","namespace":"shop"}` {
			t.Errorf("body %s", c.Body)
		}
	}})
	out = append(out, Scenario{Name: "config/authority and path override", Run: func(t testing.TB, h Host) {
		start(t, h, cfg(`"authority":"op.elasti:8013","path":"/count"`))
		h.Request(Authority("web"))
		h.Tick()
		cs := h.Callouts()
		if len(cs) != 1 || cs[0].Header(":authority") != "op.elasti:8013" || cs[0].Header(":path") != "/count" {
			t.Fatalf("callouts %+v", cs)
		}
	}})
	return out
}

// KeyCase is one :authority and the key it must be counted under ("" = not counted,
// with Reason the uncounted metric suffix).
type KeyCase struct {
	Authority, Svc, Namespace, Reason string
}

// AuthorityCases are the authority forms the filter accepts and rejects.
var AuthorityCases = []KeyCase{
	{"web", "web", "default", ""},
	{"web:8080", "web", "default", ""},
	{"web.shop", "web", "shop", ""},
	{"WEB.Shop:80", "web", "shop", ""},
	{"web.shop.svc", "web", "shop", ""},
	{"web.shop.svc.cluster.local", "web", "shop", ""},
	{"web.shop.svc.cluster.local.", "web", "shop", ""},
	{"web.shop.svc.cluster.local:8080", "web", "shop", ""},
	{"web.shop.", "web", "shop", ""},
	{"a-1.b-2", "a-1", "b-2", ""},
	{"", "", "", "missing"},
	{":80", "", "", "missing"},
	{"10.0.0.1", "", "", "ip_literal"},
	{"10.0.0.1:8080", "", "", "ip_literal"},
	{"[::1]:8080", "", "", "ip_literal"},
	{"[2001:db8::1]", "", "", "ip_literal"},
	{"2001:db8::1", "", "", "ip_literal"},
	{"a.b.c.d.e", "", "", "bad_shape"},
	{"web.shop.svc.other.domain", "", "", "bad_shape"},
	{"web.shop.cluster", "", "", "bad_shape"},
	{"web:http", "", "", "bad_shape"},
	{"web:", "", "", "bad_shape"},
	{"bad_name.shop", "", "", "bad_label"},
	{"-web.shop", "", "", "bad_label"},
	{"web-.shop", "", "", "bad_label"},
	{strings.Repeat("a", 64) + ".shop", "", "", "bad_label"},
	{"web.\u00e9t\u00e9", "", "", "bad_label"},
}

func keyScenarios() []Scenario {
	var out []Scenario
	for _, kc := range AuthorityCases {
		out = append(out, Scenario{Name: "key/authority " + fmt.Sprintf("%q", kc.Authority), Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			h.Request(Authority(kc.Authority))
			h.Request(Authority(kc.Authority))
			h.Tick()
			if kc.Reason == "" {
				expectSent(t, h, msg(2, kc.Svc, kc.Namespace))
				expectCounter(t, h, MetricCounted, 2)
				return
			}
			expectSent(t, h)
			expectCounter(t, h, MetricCounted, 0)
			expectCounter(t, h, MetricUncounted+kc.Reason, 2)
		}})
	}
	out = append(out,
		Scenario{Name: "key/no authority header", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			h.Request([][2]string{{"x-other", "1"}})
			h.Tick()
			expectSent(t, h)
			expectCounter(t, h, MetricUncounted+"missing", 1)
		}},
		Scenario{Name: "key/missing authority after a counted one", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			h.Request(Authority("web.shop"))
			h.Request([][2]string{{"x-other", "1"}})
			h.Request(Authority(""))
			h.Tick()
			expectSent(t, h, msg(1, "web", "shop"))
			expectCounter(t, h, MetricUncounted+"missing", 2)
		}},
		Scenario{Name: "key/default_namespace and cluster_domain", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"default_namespace":"apps","cluster_domain":"corp.example"`))
			h.Request(Authority("web"))
			h.Request(Authority("api.shop.svc.corp.example"))
			h.Request(Authority("api.shop.svc.cluster.local"))
			h.Tick()
			expectSent(t, h, msg(1, "web", "apps"), msg(1, "api", "shop"))
			expectCounter(t, h, MetricUncounted+"bad_shape", 1)
		}},
		Scenario{Name: "key/header source", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"key_source":"header","service_header":"x-svc","namespace_header":"x-ns"`))
			before, _ := h.HeaderReads()
			h.Request([][2]string{{":authority", "ignored.here"}, {"x-svc", "web"}, {"x-ns", "shop"}})
			h.Request([][2]string{{"x-svc", "web"}}) // default namespace
			h.Request([][2]string{{"x-ns", "shop"}}) // no service: not counted
			h.Request([][2]string{{"x-svc", "bad_name"}, {"x-ns", "shop"}})
			h.Tick()
			// Service then namespace, and no namespace read when the service is missing.
			if after, _ := h.HeaderReads(); after-before != 7 {
				t.Fatalf("header mode made %d header reads for 4 requests, want 7", after-before)
			}
			expectSent(t, h, msg(1, "web", "shop"), msg(1, "web", "default"))
			expectCounter(t, h, MetricUncounted+"missing", 1)
			expectCounter(t, h, MetricUncounted+"bad_label", 1)
		}},
		Scenario{Name: "key/static source reads no header", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"key_source":"static","service":"web","namespace":"shop"`))
			before, observable := h.HeaderReads()
			if !observable {
				t.Fatal("the host cannot observe header reads")
			}
			for i := 0; i < 5; i++ {
				h.Request([][2]string{{":authority", "other.ns"}, {"x-service", "x"}})
			}
			if after, _ := h.HeaderReads(); observable && after != before {
				t.Fatalf("static mode read %d request headers", after-before)
			}
			h.Tick()
			expectSent(t, h, msg(5, "web", "shop"))
		}},
		Scenario{Name: "key/max_keys cap counts overflow", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"max_keys":2`))
			for _, a := range []string{"a.ns", "b.ns", "c.ns", "a.ns", "d.ns", "b.ns"} {
				h.Request(Authority(a))
			}
			expectCounter(t, h, MetricOverflow, 0) // pushed on the tick, not per request
			h.Tick()
			expectSent(t, h, msg(2, "a", "ns"), msg(2, "b", "ns"))
			expectCounter(t, h, MetricOverflow, 2)
			expectCounter(t, h, MetricCounted, 4)
		}},
	)
	return out
}

// shutdownSendsHeld: a count made while its key is in flight is held, and still
// goes out at shutdown, once the call before it was delivered; the plugin
// finishes after that last answer. extra: configuration fields (cfg).
func shutdownSendsHeld(extra string) func(t testing.TB, h Host) {
	return func(t testing.TB, h Host) {
		start(t, h, cfg(extra))
		h.Request(Authority("web.shop"))
		h.Tick()
		h.Request(Authority("web.shop")) // held: web.shop is in flight
		if h.Shutdown() {
			t.Fatal("plugin finished at once with a call in flight")
		}
		expectSent(t, h, msg(1, "web", "shop"))
		answerAll(h, 200)
		expectSent(t, h, msg(1, "web", "shop")) // the held count, sent once the first was delivered
		if h.PluginDone() {
			t.Fatal("plugin finished with a call in flight")
		}
		answerAll(h, 200)
		if !h.PluginDone() {
			t.Fatal("plugin did not finish after its last answer")
		}
	}
}

func flushScenarios() []Scenario {
	return []Scenario{
		{Name: "flush/nothing to send sends nothing", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			h.Tick()
			h.Tick()
			expectSent(t, h)
		}},
		{Name: "flush/single mode one object per key", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			for i := 0; i < 3; i++ {
				h.Request(Authority("web.shop"))
			}
			h.Request(Authority("api.shop"))
			h.Request(Authority("web.blog"))
			h.Tick()
			cs := h.Callouts()
			if len(cs) != 3 {
				t.Fatalf("want 3 callouts (one per key), got %d", len(cs))
			}
			for _, c := range cs {
				var one messages.RequestCount
				if err := json.Unmarshal(c.Body, &one); err != nil {
					t.Fatalf("single-mode body %q is not one object: %v", c.Body, err)
				}
			}
			expectSent(t, h, msg(3, "web", "shop"), msg(1, "api", "shop"), msg(1, "web", "blog"))
			answerAll(h, 200)
			expectSent(t, h)
			h.Tick()
			expectSent(t, h)
			expectCounter(t, h, MetricCallsDelivered, 3)
		}},
		{Name: "flush/5xx puts the count back", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			h.Request(Authority("web.shop"))
			h.Request(Authority("web.shop"))
			h.Tick()
			expectSent(t, h, msg(2, "web", "shop"))
			answerAll(h, 503)
			h.Request(Authority("web.shop"))
			h.Tick()
			expectSent(t, h, msg(3, "web", "shop"))
			answerAll(h, 200)
			h.Tick()
			expectSent(t, h)
			expectCounter(t, h, MetricCallsRejected, 1)
			expectCounter(t, h, MetricCountsRequeued, 2)
			expectCounter(t, h, MetricCallsDelivered, 1)
		}},
		{Name: "flush/failures logged once per tick", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			for _, a := range []string{"a.ns", "b.ns", "c.ns"} {
				h.Request(Authority(a))
			}
			h.Tick()
			answerAll(h, 503)
			h.Tick()
			answerAll(h, 0)
			h.Tick()
			var refused, reset []string
			for _, l := range h.Logs("warn") {
				switch {
				case strings.Contains(l, "refused"):
					refused = append(refused, l)
				case strings.Contains(l, "were reset"):
					reset = append(reset, l)
				}
			}
			if len(refused) != 1 || !strings.Contains(refused[0], "refused 3 calls (last :status 503)") {
				t.Fatalf("refusal warnings %q, want one for 3 calls", refused)
			}
			if len(reset) != 1 || !strings.Contains(reset[0], "3 calls") {
				t.Fatalf("reset warnings %q, want one for 3 calls", reset)
			}
		}},
		{Name: "flush/4xx and 3xx are not delivered", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			h.Request(Authority("web.shop"))
			h.Tick()
			answerAll(h, 400)
			h.Tick()
			answerAll(h, 302)
			h.Tick()
			expectSent(t, h, msg(1, "web", "shop"))
			expectCounter(t, h, MetricCallsRejected, 2)
		}},
		{Name: "flush/reset (zero headers) puts the count back", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			h.Request(Authority("web.shop"))
			h.Tick()
			answerAll(h, 0)
			h.Tick()
			expectSent(t, h, msg(1, "web", "shop"))
			expectCounter(t, h, MetricCallsReset, 1)
		}},
		{Name: "flush/in-flight key is not sent again", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			h.Request(Authority("web.shop"))
			h.Tick()
			h.Request(Authority("web.shop"))
			h.Request(Authority("api.shop"))
			h.Tick()
			expectSent(t, h, msg(1, "web", "shop"), msg(1, "api", "shop"))
			answerAll(h, 200)
			h.Tick()
			expectSent(t, h, msg(1, "web", "shop"))
		}},
		{Name: "flush/batch mode one array per flush", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"mode":"batch"`))
			h.Request(Authority("web.shop"))
			h.Request(Authority("web.shop"))
			h.Request(Authority("api.blog"))
			h.Tick()
			cs := h.Callouts()
			if len(cs) != 1 || !strings.HasPrefix(string(cs[0].Body), "[") {
				t.Fatalf("want one array callout, got %+v", cs)
			}
			expectSent(t, h, msg(2, "web", "shop"), msg(1, "api", "blog"))
			h.Request(Authority("web.shop"))
			h.Tick() // batch in flight: nothing more is sent
			if n := len(h.Callouts()); n != 1 {
				t.Fatalf("second batch sent while one is in flight: %d callouts", n)
			}
			answerAll(h, 500)
			h.Tick()
			expectSent(t, h, msg(3, "web", "shop"), msg(1, "api", "blog"))
			answerAll(h, 200)
			h.Tick()
			expectSent(t, h)
		}},
		{Name: "flush/idle keys are dropped and come back", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"max_keys":1`))
			h.Request(Authority("a.ns"))
			h.Tick()
			answerAll(h, 200)
			h.Tick() // a.ns idle: dropped, freeing the one slot
			h.Request(Authority("b.ns"))
			h.Tick()
			expectSent(t, h, msg(1, "b", "ns"))
			expectCounter(t, h, MetricOverflow, 0)
		}},
		{Name: "flush/shutdown sends what is pending and waits for answers", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			h.Request(Authority("web.shop"))
			if h.Shutdown() {
				t.Fatal("plugin finished at once with a call in flight")
			}
			expectSent(t, h, msg(1, "web", "shop"))
			if h.PluginDone() {
				t.Fatal("plugin finished before its call was answered")
			}
			answerAll(h, 200)
			if !h.PluginDone() {
				t.Fatal("plugin did not finish after its last answer")
			}
		}},
		{Name: "flush/shutdown sends counts held behind an in-flight call", Run: shutdownSendsHeld("")},
		{Name: "flush/shutdown retries a failed call at the next ticks", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			h.Request(Authority("web.shop"))
			if h.Shutdown() {
				t.Fatal("plugin finished at once with a call in flight")
			}
			answerAll(h, 503)
			if h.PluginDone() {
				t.Fatal("plugin finished with its count undelivered and time left")
			}
			h.Tick()
			expectSent(t, h, msg(1, "web", "shop"))
			answerAll(h, 200)
			if !h.PluginDone() {
				t.Fatal("plugin did not finish once everything was delivered")
			}
			if logs := h.Logs("warn"); strings.Contains(strings.Join(logs, "\n"), "not delivered") {
				t.Fatalf("a loss logged with nothing lost: %q", logs)
			}
		}},
		{Name: "flush/shutdown gives up at its deadline", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			h.Request(Authority("web.shop"))
			if h.Shutdown() {
				t.Fatal("plugin finished at once with a call in flight")
			}
			for i := 0; i < 1000 && !h.PluginDone(); i++ {
				answerAll(h, 503)
				if !h.PluginDone() {
					h.Tick()
				}
			}
			if !h.PluginDone() {
				t.Fatal("the shutdown never ended")
			}
			if logs := h.Logs("warn"); !strings.Contains(strings.Join(logs, "\n"), "1 counted requests not delivered") {
				t.Fatalf("no warning about the undelivered count in %q", logs)
			}
		}},
		{Name: "flush/shutdown with nothing pending finishes at once", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(""))
			if !h.Shutdown() {
				t.Fatal("plugin asked to wait with nothing to send")
			}
		}},
	}
}
