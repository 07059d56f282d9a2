package filtertest

import (
	"reflect"
	"testing"

	"github.com/reqcount/reqcount/messages"
)

// HoldHost is a Host that can also start a request without waiting for it
// to end, route it to a cluster, and reset it: what the hold scenarios need.
// Run skips those scenarios on a Host that is not one.
type HoldHost interface {
	Host
	// Route makes the requests opened from now on go to cluster (Envoy's
	// xds.cluster_name for them).
	Route(cluster string)
	// Open starts a request and returns it once the plugin's request-headers
	// callback returned: held or not.
	Open(headers [][2]string, body []byte) HoldStream
}

// HoldStream is a request opened on a HoldHost.
type HoldStream interface {
	// Held reports whether the request is paused now.
	Held() bool
	// Reset resets it, as a client that goes away.
	Reset()
	// UpstreamBody returns the body the upstream received once the request
	// went on, and false when the host cannot tell.
	UpstreamBody() ([]byte, bool)
}

// Metric names of the hold scenarios.
const (
	MetricHeld      = "reqcount.hold.held"
	MetricResumed   = "reqcount.hold.resumed"
	MetricTimedOut  = "reqcount.hold.timed_out"
	MetricAbandoned = "reqcount.hold.abandoned"
	MetricOverBound = "reqcount.hold.over_bound"
)

// holdCluster is the cluster the hold scenarios route to.
const holdCluster = "outbound|80||web.shop.svc.cluster.local"

// holdCfg: flush_interval 1s (10 ticks of 100ms, a check every 200ms at
// most), web.shop held up to 2s; reports per worker, wake-ups on.
const holdCfg = `"flush_interval":"1s","wake_after":"30s","hold":["web.shop"],"hold_probe_interval":"200ms","hold_timeout":"2s"`

// answerProbes answers every open call, newest first (proxytest's ids): the
// checks of holdCluster with status (0: a reset), the reports with 200. It
// returns how many checks there were.
func answerProbes(h Host, status int) int {
	cs := h.Callouts()
	n := 0
	for i := len(cs) - 1; i >= 0; i-- {
		st := 200
		if cs[i].Cluster == holdCluster {
			st = status
			n++
		}
		h.Answer(cs[i].ID, st)
	}
	return n
}

// reported decodes the open report calls (not the checks), as the operator
// would, and returns their messages sorted.
func reported(t testing.TB, h Host) []messages.RequestCount {
	t.Helper()
	return sentBut(t, h, holdCluster)
}

// holdScenarios: the hold's rules (config hold), on hosts that can hold.
func holdScenarios() []Scenario {
	rows := []struct {
		name string
		run  func(t testing.TB, h HoldHost)
	}{
		{"held, then resumed when the check answers; then not held", func(t testing.TB, h HoldHost) {
			a := h.Open(Authority("web.shop"), nil)
			b := h.Open(Authority("web.shop"), nil)
			if !a.Held() || !b.Held() {
				t.Fatalf("held: %v, %v; want both", a.Held(), b.Held())
			}
			if n := answerProbes(h, 200); n != 1 {
				t.Fatalf("%d checks, want one in flight for the cluster", n)
			}
			if a.Held() || b.Held() {
				t.Fatal("still held after the service answered")
			}
			if c := h.Open(Authority("web.shop"), nil); c.Held() {
				t.Fatal("a request of a key known ready was held")
			}
			h.Tick()
			expectCounter(t, h, MetricHeld, 2)
			expectCounter(t, h, MetricResumed, 2)
		}},
		{"a key outside hold is never held", func(t testing.TB, h HoldHost) {
			if s := h.Open(Authority("api.shop"), nil); s.Held() {
				t.Fatal("api.shop held")
			}
		}},
		{"not yet, then ready at the next check", func(t testing.TB, h HoldHost) {
			a := h.Open(Authority("web.shop"), nil)
			answerProbes(h, 503)
			if !a.Held() {
				t.Fatal("let go after a not-yet answer")
			}
			h.Tick()
			if n := answerProbes(h, 200); n != 0 {
				t.Fatalf("%d checks within the interval", n)
			}
			h.Tick()
			if n := answerProbes(h, 200); n != 1 || a.Held() {
				t.Fatalf("after the interval: %d checks, held %v; want one check and the request let go", n, a.Held())
			}
		}},
		{"hold_timeout lets go", func(t testing.TB, h HoldHost) {
			a := h.Open(Authority("web.shop"), nil)
			for i := 0; i < 25 && a.Held(); i++ {
				answerProbes(h, 0) // resets: not yet
				h.Tick()
			}
			if a.Held() {
				t.Fatal("still held after hold_timeout")
			}
			expectCounter(t, h, MetricTimedOut, 1)
		}},
		{"a client that goes away is forgotten", func(t testing.TB, h HoldHost) {
			a := h.Open(Authority("web.shop"), nil)
			a.Reset()
			answerProbes(h, 200)
			h.Tick()
			expectCounter(t, h, MetricAbandoned, 1)
			expectCounter(t, h, MetricResumed, 0)
		}},
		// Envoy calls proxy_on_done(root) only once every stream has ended
		// (each holds the plugin's handle): its drain lets the held ones go
		// or resets them, as the e2e host does; a host that calls it earlier
		// (proxytest) sees the filter let them go. Either way none stays.
		{"at shutdown no request stays held", func(t testing.TB, h HoldHost) {
			a := h.Open(Authority("web.shop"), nil)
			h.Shutdown()
			if a.Held() {
				t.Fatal("held after the shutdown began")
			}
		}},
		{"a request body reaches the upstream intact after the hold", func(t testing.TB, h HoldHost) {
			body := []byte(`{"order":42,"items":["a","b"]}`)
			a := h.Open(append(Authority("web.shop"), [2]string{":method", "POST"}), body)
			answerProbes(h, 200)
			if a.Held() {
				t.Fatal("still held")
			}
			if got, ok := a.UpstreamBody(); ok && string(got) != string(body) {
				t.Fatalf("upstream received %q, want %q", got, body)
			}
		}},
		{"each held request is counted once", func(t testing.TB, h HoldHost) {
			for range 3 {
				h.Open(Authority("web.shop"), nil)
			}
			if got := reported(t, h); !reflect.DeepEqual(got, []messages.RequestCount{msg(1, "web", "shop")}) {
				t.Fatalf("reports %v, want the wake-up", got)
			}
			answerProbes(h, 200)
			tickN(h, 10)
			if got := reported(t, h); !reflect.DeepEqual(got, []messages.RequestCount{msg(2, "web", "shop")}) {
				t.Fatalf("reports %v, want the other two, once", got)
			}
		}},
	}
	var out []Scenario
	for _, r := range rows {
		extra := holdCfg
		out = append(out, Scenario{Name: "hold/" + r.name, Run: func(t testing.TB, h Host) {
			hh, ok := h.(HoldHost)
			if !ok {
				t.Skip("the host cannot hold requests")
			}
			start(t, h, cfg(extra+`,"aggregate":"worker"`))
			hh.Route(holdCluster)
			r.run(t, hh)
		}})
	}
	out = append(out, Scenario{Name: "hold/beyond hold_max a request passes", Run: func(t testing.TB, h Host) {
		hh, ok := h.(HoldHost)
		if !ok {
			t.Skip("the host cannot hold requests")
		}
		start(t, h, cfg(holdCfg+`,"hold_max":1,"aggregate":"worker"`))
		hh.Route(holdCluster)
		hh.Open(Authority("web.shop"), nil)
		if s := hh.Open(Authority("web.shop"), nil); s.Held() {
			t.Fatal("a second request held with hold_max 1")
		}
		h.Tick()
		expectCounter(t, h, MetricOverBound, 1)
	}})
	return out
}
