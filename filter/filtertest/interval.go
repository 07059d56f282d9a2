package filtertest

import (
	"fmt"
	"sort"
	"testing"

	"github.com/reqcount/reqcount/messages"
)

// intervalCfg: flush_interval 1s in 10 ticks of 100ms (several slices per
// interval, as in production: the default 30s is 60 of 500ms), a call's
// timeout of 5 ticks.
const intervalCfg = `"flush_interval":"1s","timeout":"500ms"`

// intervalKeys are the keys of the realistic-interval scenarios: spread over
// several slices.
var intervalKeys = []string{"a.shop", "b.shop", "c.blog", "d.blog", "e.default", "f.default"}

// ledger tallies what was requested and what the collector accepted, per key,
// and checks the one-call-per-key rule on every look at the open calls.
type ledger struct {
	t              testing.TB
	h              Host
	sent, accepted map[string]int
	failed         int
}

func newLedger(t testing.TB, h Host) *ledger {
	return &ledger{t: t, h: h, sent: map[string]int{}, accepted: map[string]int{}}
}

func (l *ledger) request(k string) {
	l.h.Request(Authority(k))
	l.sent[k]++
}

// open returns the open calls' messages per call, checking that no key is in
// two calls at once.
func (l *ledger) open() [][]messages.RequestCount {
	l.t.Helper()
	var out [][]messages.RequestCount
	seen := map[string]bool{}
	for _, c := range l.h.Callouts() {
		ms, err := messages.Decode(c.Body)
		if err != nil {
			l.t.Fatalf("callout %d body %q: %v", c.ID, c.Body, err)
		}
		for _, m := range ms {
			k := m.Svc + "." + m.Namespace
			if seen[k] {
				l.t.Fatalf("%s is in two calls at once: %s", k, c.Body)
			}
			seen[k] = true
		}
		out = append(out, ms)
	}
	return out
}

// answer answers every call open now, newest first (proxytest's ids), the
// i-th answer with statuses[i % len]; 200s are tallied as accepted. An answer
// may make the plugin send more (a drain sends what waited): a call made
// meanwhile is newer, so it is answered too before the older ones.
func (l *ledger) answer(statuses ...int) {
	l.t.Helper()
	waiting := map[uint32]bool{}
	for _, c := range l.h.Callouts() {
		waiting[c.ID] = true
	}
	for i := 0; len(waiting) > 0; i++ {
		calls := l.open()
		cs := l.h.Callouts()
		c, ms := cs[len(cs)-1], calls[len(cs)-1]
		st := statuses[i%len(statuses)]
		if st >= 200 && st < 300 {
			for _, m := range ms {
				l.accepted[m.Svc+"."+m.Namespace] += m.Count
			}
		} else {
			l.failed++
		}
		delete(waiting, c.ID)
		l.h.Answer(c.ID, st)
	}
}

// exact fails unless every key's accepted count is what was requested.
func (l *ledger) exact() {
	l.t.Helper()
	var bad []string
	for k, n := range l.sent {
		if l.accepted[k] != n {
			bad = append(bad, fmt.Sprintf("%s: requested %d, accepted %d", k, n, l.accepted[k]))
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		l.t.Fatalf("not exactly once (%d failed answers):\n%v", l.failed, bad)
	}
	if l.failed == 0 {
		l.t.Fatal("no answer failed: the scenario tested nothing")
	}
}

// intervalScenarios check every delivery rule at several slices per
// interval, with answers that arrive ticks after their call, in both
// aggregate modes: the timing of production, where a test that answers at
// once, or flushes every key on every tick, proves only that special case.
func intervalScenarios() []Scenario {
	var out []Scenario
	for _, agg := range []string{"worker", "envoy"} {
		conf := cfg(intervalCfg + `,"aggregate":"` + agg + `"`)
		for _, f := range []struct {
			name     string
			statuses []int
		}{{"503", []int{503, 200}}, {"504", []int{504, 200, 200}}, {"reset", []int{0, 200}}} {
			out = append(out, Scenario{Name: fmt.Sprintf("interval/%s: a report answered %s ticks later goes again, once", agg, f.name),
				Run: func(t testing.TB, h Host) {
					start(t, h, conf)
					l := newLedger(t, h)
					for round := range 40 {
						l.request(intervalKeys[round%len(intervalKeys)])
						l.request(intervalKeys[(round*5+1)%len(intervalKeys)])
						h.Tick()
						l.open() // one call per key at a time
						if round%3 == 2 {
							l.answer(f.statuses...) // three ticks late at most: within the timeout
						}
					}
					for range 30 { // healed: every key's slice comes round
						h.Tick()
						l.answer(200)
					}
					l.exact()
				}})
		}
		out = append(out, Scenario{Name: fmt.Sprintf("interval/%s: drain at shutdown sends what waited, once", agg),
			Run: func(t testing.TB, h Host) {
				start(t, h, conf)
				l := newLedger(t, h)
				for round := range 12 {
					l.request(intervalKeys[round%len(intervalKeys)])
					h.Tick()
					if round%4 == 3 {
						l.answer(503, 200)
					}
				}
				for _, k := range intervalKeys {
					l.request(k) // held behind calls in flight, or pending
				}
				if h.Shutdown() {
					t.Fatal("finished at once with calls in flight")
				}
				for i := range 40 {
					if h.PluginDone() {
						break
					}
					if i < 2 {
						l.answer(503, 200) // a failure, then a delivery that sends what waited
					} else {
						l.answer(200)
					}
					if !h.PluginDone() {
						h.Tick()
					}
				}
				if !h.PluginDone() {
					t.Fatal("the shutdown never finished")
				}
				for k, n := range l.accepted {
					if n > l.sent[k] {
						t.Fatalf("%s accepted %d of %d requested: sent twice", k, n, l.sent[k])
					}
				}
				if agg == "envoy" {
					// A failed report goes back to shared data and out again
					// while the worker drains.
					l.exact()
				}
			}})
		out = append(out, Scenario{Name: fmt.Sprintf("interval/%s: a failed wake-up's count goes with the next report, once", agg),
			Run: func(t testing.TB, h Host) {
				start(t, h, cfg(intervalCfg+`,"wake_after":"1s","aggregate":"`+agg+`"`))
				l := newLedger(t, h)
				l.request("web.shop") // wakes at once
				if got := len(h.Callouts()); got != 1 {
					t.Fatalf("%d calls after the first request, want the wake-up", got)
				}
				h.Tick()
				l.request("web.shop")
				h.Tick()
				l.answer(503) // the wake-up fails, two ticks late
				for range 20 {
					h.Tick()
					l.answer(200)
				}
				expectCounter(t, h, MetricWakeups, 1)
				l.exact()
			}})
	}
	return out
}
