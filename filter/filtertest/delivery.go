package filtertest

import (
	"fmt"
	"testing"
)

// Metric names of the delivery scenarios.
const (
	MetricWakeups        = "reqcount.flush.wakeups_sent"
	MetricExcluded       = "reqcount.requests_uncounted.excluded"
	MetricIgnored        = "reqcount.requests_ignored"
	MetricDelivered      = "reqcount.flush.counts_delivered"
	MetricSeriesOverflow = "reqcount.series_overflow"
)

// SeriesName is the per-service counter of (svc, ns), as the filter defines it.
func SeriesName(svc, ns string) string {
	return "reqcount.destination_service_name=.=" + svc + ";.;destination_service_namespace=.=" + ns + ";.;requests_total"
}

// tickN fires the plugin's timer n times.
func tickN(h Host, n int) {
	for i := 0; i < n; i++ {
		h.Tick()
	}
}

// wakeCfg: flush_interval 1s in 10 ticks of 100ms, wake_after 1s (10 ticks).
const wakeCfg = `"flush_interval":"1s","wake_after":"1s"`

// deliveryScenarios: wake-ups, the spread of reports over an interval,
// include/exclude and ignored requests.
func deliveryScenarios() []Scenario {
	return []Scenario{
		{Name: "wake/new key sent from the request, answered after the stream ended", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(wakeCfg))
			h.Request(Authority("web.shop")) // the host ends the stream before it returns
			cs := h.Callouts()
			if len(cs) != 1 {
				t.Fatalf("want the wake-up dispatched before any tick, got %d callouts", len(cs))
			}
			expectSent(t, h, msg(1, "web", "shop"))
			answerAll(h, 200)                       // on the root context: the stream is gone
			expectCounter(t, h, MetricDelivered, 0) // pushed at the next tick
			h.Tick()
			expectCounter(t, h, MetricDelivered, 1)
			expectCounter(t, h, MetricWakeups, 1)
			expectCounter(t, h, MetricCallsDelivered, 1)
		}},
		{Name: "wake/failed wake-up puts the count back for the next report", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(wakeCfg))
			h.Request(Authority("web.shop"))
			answerAll(h, 503)
			h.Request(Authority("web.shop")) // awake now: no second wake-up
			expectSent(t, h)
			tickN(h, 10) // one interval: the key's slice comes once
			expectSent(t, h, msg(2, "web", "shop"))
			answerAll(h, 0) // a reset too
			tickN(h, 10)
			expectSent(t, h, msg(2, "web", "shop"))
			answerAll(h, 200)
			h.Tick()
			expectCounter(t, h, MetricCountsRequeued, 3)
			expectCounter(t, h, MetricDelivered, 2)
		}},
		{Name: "wake/no second wake-up while one is in flight", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(wakeCfg))
			for i := 0; i < 5; i++ {
				h.Request(Authority("web.shop"))
			}
			expectSent(t, h, msg(1, "web", "shop"))
			answerAll(h, 200)
			tickN(h, 10)
			expectSent(t, h, msg(4, "web", "shop")) // the rest, with the regular report
			expectCounter(t, h, MetricWakeups, 1)
		}},
		{Name: "wake/after wake_after of silence and not before", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(wakeCfg))
			h.Request(Authority("web.shop"))
			answerAll(h, 200)
			tickN(h, 10) // 10 ticks of 100ms: not yet known to be 1s of silence
			h.Request(Authority("web.shop"))
			expectSent(t, h)
			tickN(h, 10) // its report goes out at its slice
			expectSent(t, h, msg(1, "web", "shop"))
			answerAll(h, 200)
			tickN(h, 11) // more than 10 ticks since the last request: more than 1s
			h.Request(Authority("web.shop"))
			expectSent(t, h, msg(1, "web", "shop"))
			answerAll(h, 200)
			h.Tick()
			expectCounter(t, h, MetricWakeups, 2)
			expectCounter(t, h, MetricDelivered, 3)
		}},
		{Name: "wake/a key dropped as idle wakes again only after wake_after", Run: func(t testing.TB, h Host) {
			// flush_interval 1s, wake_after 3s: an idle key stays known for 3s.
			start(t, h, cfg(`"flush_interval":"1s","wake_after":"3s","max_keys":1`))
			h.Request(Authority("a.ns"))
			answerAll(h, 200)
			tickN(h, 20) // 2s of silence: a.ns is still held, and not woken
			h.Request(Authority("a.ns"))
			expectSent(t, h)
			tickN(h, 31) // its report, then > 3s of silence: dropped
			answerAll(h, 200)
			tickN(h, 10)
			h.Request(Authority("b.ns")) // the one slot is free again: b.ns wakes
			expectSent(t, h, msg(1, "b", "ns"))
			expectCounter(t, h, MetricOverflow, 0)
		}},
		{Name: "wake/off with wake_after 0s", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"flush_interval":"1s","wake_after":"0s"`))
			h.Request(Authority("web.shop"))
			expectSent(t, h)
			tickN(h, 10)
			expectSent(t, h, msg(1, "web", "shop"))
			expectCounter(t, h, MetricWakeups, 0)
		}},
		{Name: "wake/batch mode sends a one-element array", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(wakeCfg+`,"mode":"batch"`))
			h.Request(Authority("web.shop"))
			cs := h.Callouts()
			if len(cs) != 1 || string(cs[0].Body) != `[{"count":1,"svc":"web","namespace":"shop"}]` {
				t.Fatalf("callouts %+v", cs)
			}
		}},
		{Name: "spread/each key once per interval, a slice per tick", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"flush_interval":"1s"`)) // 10 ticks of 100ms, no wake-ups
			const keys = 40
			for round := 0; round < 3; round++ {
				for i := 0; i < keys; i++ {
					h.Request(Authority(fmt.Sprintf("k%d.ns", i)))
				}
				seen := map[string]int{}
				for tick := 0; tick < 10; tick++ {
					h.Tick()
					ms := sent(t, h)
					if len(ms) == keys {
						t.Fatalf("round %d tick %d sent every key at once", round, tick)
					}
					for _, m := range ms {
						seen[m.Svc]++
						if m.Count != 1 {
							t.Fatalf("%s count %d, want 1", m.Svc, m.Count)
						}
					}
					answerAll(h, 200)
				}
				if len(seen) != keys {
					t.Fatalf("round %d: %d keys reported in one interval, want %d", round, len(seen), keys)
				}
				for k, n := range seen {
					if n != 1 {
						t.Fatalf("round %d: %s reported %d times in one interval", round, k, n)
					}
				}
			}
			h.Tick() // metrics are pushed on ticks
			expectCounter(t, h, MetricDelivered, 3*keys)
		}},
		{Name: "series/per-service counter advances at the key's slice", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"flush_interval":"1s","wake_after":"1s"`)) // 10 ticks; wake-ups on
			for i := 0; i < 3; i++ {
				h.Request(Authority("web.shop"))
			}
			h.Request(Authority("api.blog"))
			expectCounter(t, h, SeriesName("web", "shop"), 0) // no host call per request
			answerAll(h, 200)
			tickN(h, 10)
			expectCounter(t, h, SeriesName("web", "shop"), 3)
			expectCounter(t, h, SeriesName("api", "blog"), 1)
			answerAll(h, 503) // delivery failures do not touch the series: it counts requests
			h.Request(Authority("web.shop"))
			tickN(h, 10)
			expectCounter(t, h, SeriesName("web", "shop"), 4)
			h.Request(Authority("web.shop"))
			if h.Shutdown() {
				t.Fatal("finished at once with counts to send")
			}
			expectCounter(t, h, SeriesName("web", "shop"), 5) // brought up to date at shutdown
		}},
		{Name: "series/at most max_keys series per worker", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"max_keys":1`))
			h.Request(Authority("a.ns"))
			h.Tick()
			answerAll(h, 200)
			h.Tick() // a.ns idle: dropped from the table; its series stays (Envoy keeps stats)
			h.Request(Authority("b.ns"))
			h.Request(Authority("b.ns"))
			h.Tick()
			expectSent(t, h, msg(2, "b", "ns"))
			expectCounter(t, h, SeriesName("a", "ns"), 1)
			expectCounter(t, h, SeriesName("b", "ns"), 0)
			h.Tick()
			expectCounter(t, h, MetricSeriesOverflow, 2)
		}},
		{Name: "aggregate/envoy: one worker reports through shared data", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"aggregate":"envoy"`))
			for i := 0; i < 3; i++ {
				h.Request(Authority("web.shop"))
			}
			h.Request(Authority("api.shop"))
			h.Tick() // published, collected and sent by the lease holder in one tick
			expectSent(t, h, msg(3, "web", "shop"), msg(1, "api", "shop"))
			h.Request(Authority("web.shop"))
			h.Tick() // web.shop and api.shop are in flight: nothing sent twice
			expectSent(t, h, msg(3, "web", "shop"), msg(1, "api", "shop"))
			answerAll(h, 200)
			h.Tick()
			expectSent(t, h, msg(1, "web", "shop"))
			answerAll(h, 503)
			h.Tick()
			expectSent(t, h, msg(1, "web", "shop"))
			answerAll(h, 200)
			h.Tick()
			expectSent(t, h)
			expectCounter(t, h, MetricDelivered, 5)
			expectCounter(t, h, MetricCountsRequeued, 1)
		}},
		{Name: "aggregate/envoy: shutdown reports what was counted and waits", Run: shutdownSendsHeld(`"aggregate":"envoy"`)},
		{Name: "aggregate/envoy: wake-up claimed in shared data", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"aggregate":"envoy","flush_interval":"1s","wake_after":"1s"`))
			h.Request(Authority("web.shop"))
			expectSent(t, h, msg(1, "web", "shop"))
			answerAll(h, 200)
			h.Request(Authority("web.shop"))
			tickN(h, 10)
			expectSent(t, h, msg(1, "web", "shop"))
			expectCounter(t, h, MetricWakeups, 1)
		}},
		{Name: "filter/include and exclude, decided per key", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"include":["*.shop","api.*"],"exclude":["db.shop"]`))
			for _, a := range []string{"web.shop", "db.shop", "web.blog", "api.blog", "db.shop", "web.blog:80", "web.shop"} {
				h.Request(Authority(a))
			}
			h.Tick()
			expectSent(t, h, msg(2, "web", "shop"), msg(1, "api", "blog"))
			expectCounter(t, h, MetricExcluded, 4)
			expectCounter(t, h, MetricCounted, 3)
		}},
		{Name: "filter/ignored paths and user agents are not counted", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"ignore_paths":["/healthz","/metrics"],"ignore_user_agents":["kube-probe/","Prometheus/"]`))
			for _, r := range [][2]string{
				{"/healthz/ready", "curl/8"},
				{"/metrics", "x"},
				{"/api", "kube-probe/1.31"},
				{"/api", "Prometheus/2.53"},
				{"/api", "curl/8"},
				{"/health", ""},     // shorter than the prefix "/healthz"
				{"/", "kube-probe"}, // not the prefix "kube-probe/"
			} {
				hs := [][2]string{{":authority", "web.shop"}, {":path", r[0]}}
				if r[1] != "" {
					hs = append(hs, [2]string{"user-agent", r[1]})
				}
				h.Request(hs)
			}
			h.Tick()
			expectSent(t, h, msg(3, "web", "shop"))
			expectCounter(t, h, MetricIgnored, 4)
		}},
		{Name: "filter/no ignore lists: only the key's header is read", Run: func(t testing.TB, h Host) {
			start(t, h, cfg(`"include":["*.shop"]`))
			before, _ := h.HeaderReads()
			for i := 0; i < 3; i++ {
				h.Request([][2]string{{":authority", "web.shop"}, {":path", "/healthz"}, {"user-agent", "kube-probe/1"}})
			}
			if after, _ := h.HeaderReads(); after-before != 3 {
				t.Fatalf("%d header reads for 3 requests, want 3 (:authority only)", after-before)
			}
			h.Tick()
			expectSent(t, h, msg(3, "web", "shop"))
		}},
	}
}
