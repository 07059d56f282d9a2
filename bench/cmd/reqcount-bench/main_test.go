package main

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reqcount/reqcount/filter/config"
)

// TestMain lets the test binary serve as the benchmark's child servers
// (postLoad starts os.Executable, which here is the test binary).
func TestMain(m *testing.M) {
	if serveRole() {
		return
	}
	os.Exit(m.Run())
}

// TestQuickRun runs the whole benchmark in its smoke mode, building the
// modules into a temporary directory, and checks that the table has every
// row and that the results file keeps its hand-written notes. It asserts no
// timing: the numbers of a quick run mean nothing.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three wasm modules")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "RESULTS.md")
	notes := notesMarker + "\n\n## Notes\n\nhand-written analysis that must survive a rerun\n"
	if err := os.WriteFile(out, []byte("# stale results\n\n"+notes), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags([]string{"-quick", "-build-dir", filepath.Join(dir, "build"), "-out", out})
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	if err := run(context.Background(), o, &stdout); err != nil {
		t.Fatalf("run: %v\nstdout:\n%s", err, stdout.String())
	}

	// Every row, by its first two cells. Spelled out rather than derived
	// from the program's own lists, so a row that goes missing or changes
	// name fails here.
	variants := []string{"noop", "authority-floor", "filter authority", "filter header", "filter authority, 8 hosts", "filter static",
		"filter authority, include 20", "filter authority, ignore rules", "filter authority, hold other keys"}
	filters := variants[2:]
	var rows []string
	for _, measure := range []string{"ns/request", "guest entries/request", "host calls/request", "linear memory at VM start",
		"linear memory", "guest GC cycles per 1M requests"} {
		for _, v := range variants {
			rows = append(rows, measure+" | "+v)
		}
	}
	for _, v := range filters {
		rows = append(rows, "ratio linear memory | "+v+" / authority-floor", "requests counted | "+v,
			"linear memory over noop | "+v, "guest VM gauges at the end | "+v, "linear memory after the long run | "+v)
	}
	for _, m := range []string{"old defaults (flush_interval 1s, no wake-up)", "old defaults, include the 5 scale-to-zero services",
		"new defaults", "new defaults, include the 5 scale-to-zero services", "new defaults but aggregate: worker", "sporadic key, old defaults",
		"sporadic key, new defaults", "sporadic key, new flush_interval, wake-ups off"} {
		rows = append(rows, "model: operator messages/s | "+m)
	}
	rows = append(rows,
		"ratio ns/request | filter authority / authority-floor",
		"ratio ns/request | filter header / authority-floor",
		"ratio ns/request | filter authority, 8 hosts / authority-floor",
		"ratio ns/request | filter static / noop",
		"ratio ns/request | filter authority, include 20 / authority-floor",
		"ratio ns/request | filter authority, ignore rules / authority-floor",
		"ratio ns/request | filter authority, hold other keys / authority-floor",
		"native hot path | key_source authority",
		"native hot path | key_source authority parsed",
		"native hot path | key_source header",
		"native hot path | key_source static",
		"native flush, 1k keys | encode single",
		"native flush, 1k keys | encode batch",
		"native flush, 1k keys | Flusher.Tick single",
		"native flush, 1k keys | Flusher.Tick batch",
		"wake-up latency | filter authority, flush_interval 10s",
		"GC cycles, poll_oneoff calls per hour of ticks | filter authority",
		"GC cycles, poll_oneoff calls per hour of ticks | filter header",
		"GC cycles, poll_oneoff calls per hour of ticks | filter authority, 8 hosts",
		"GC cycles, poll_oneoff calls per hour of ticks | filter static",
		"GC cycles, poll_oneoff calls per hour of ticks | filter authority, include 20",
		"GC cycles, poll_oneoff calls per hour of ticks | filter authority, ignore rules",
		"GC cycles, poll_oneoff calls per hour of ticks | filter authority, hold other keys",
		"module size | noop.wasm",
		"module size | authorityfloor.wasm",
		"module size | filter.wasm (as `make build` ships it)",
		"wall time | this run",
		"hold: a burst | 1k held at once on one worker",
		"hold: linear memory per held request | 10k held on one worker",
		"KEDA wake-up latency | filter → reqcount-scaler → StreamIsActive, flush_interval 10s",
		"sustained POSTs on one core | reqcount-scaler",
		"sustained POSTs on one core | post-floor (read the body, answer 200)",
		"sustained POSTs on one core | reqcount-scaler / post-floor",
		"scaler memory per target | store at its defaults (1 s buckets, 5m0s window)",
	)
	table := stdout.String()
	for _, row := range rows {
		if !strings.Contains(table, "| "+row+" | ") {
			t.Errorf("table has no row %q", row)
		}
	}
	// Rows whose subject ends with figures read from package config.
	prefixed := []string{
		"longest tick, 1k keys | filter header, single, aggregate envoy, flush_interval ",
		"longest tick, 1k keys | filter header, batch, aggregate envoy, flush_interval ",
		"longest tick, 1k keys | filter header, single, aggregate worker, flush_interval ",
		"longest tick, 1k keys | filter header, batch, aggregate worker, flush_interval ",
		"one-tick flush, 1k keys | filter header, single, aggregate worker, whole table in one tick (",
		"hold: routable → resumed | hold_probe_interval 100ms, ",
	}
	// Issue 17: per-key memory at 0, 1 000 and 10 000 keys (envoy: holder and
	// not holder; worker), turnover and long run per mode.
	for _, n := range []string{"0", "1k", "10k"} {
		for _, role := range []string{"aggregate envoy, holder, ", "aggregate envoy, not holder, ", "aggregate worker, worker, "} {
			prefixed = append(prefixed, "linear memory per worker VM | "+role+n+" active keys |")
		}
	}
	for _, agg := range []string{"envoy", "worker"} {
		prefixed = append(prefixed,
			"longest tick, keys turning over | aggregate "+agg+", 10k keys",
			"memory over the long run, keys turning over | aggregate "+agg+", 10k keys")
	}
	for _, row := range prefixed {
		if !strings.Contains(table, "| "+row) {
			t.Errorf("table has no row starting %q", row)
		}
	}
	rows = append(rows, prefixed...)
	lines := 0
	for _, line := range strings.Split(table, "\n") {
		if strings.HasPrefix(line, "| ") {
			lines++
		}
	}
	if want := 2 + len(rows); lines != want { // header and separator, then the rows
		t.Errorf("table has %d lines, want %d:\n%s", lines, want, table)
	}
	for _, target := range []string{"filter authority ≤ 1.10 × authority-floor", "filter static ≤ 1.05 × noop",
		"filter authority, 8 hosts in turn (the memo path) ≤ 1.10 × authority-floor",
		"memory after 20k ≤ after 5k + 1 MiB", "memory after the long run ≤ after 20k + 1.00 MiB", "linear memory at VM start ≤ 4.00 MiB", "linear memory after the long run ≤ the noop floor's + 1 MiB", "≤ 1.25 × authority-floor's", "zero allocations per request",
		"flush encode < 2 ms, single", "flush encode < 2 ms, batch",
		"filter authority with a 20-pattern include ≤ 1.10 × authority-floor",
		"filter authority with ignore_paths and ignore_user_agents ≤ 1.35 × authority-floor",
		"filter authority with neither include nor ignore rules reads one header per request",
		"filter authority with hold set for other keys ≤ filter authority + 0.10",
		"filter authority ≤ 1.00 × authority-floor", "linear memory after 20k ≤ the noop floor's + 1 MiB",
		"guest GC cycles per million requests once warm ≤ 1", "longest tick at 1k keys, single mode, aggregate envoy, ≤ 10.000 ms",
		"calls to the host's poll_oneoff = 0", "10k keys turning over: calls to the host's poll_oneoff = 0",
		"hold: a held request goes on at most one hold_probe_interval", "hold: linear memory per held request ≤ 256 B", "hold: 1k held at once on one worker, all resumed",
		"longest tick at 1k keys, batch mode, aggregate envoy, ≤ 10.000 ms", "longest tick at 1k keys, single mode, aggregate worker, ≤ 10.000 ms", "wake-up latency", "p99 < 10.000 ms", "model, new defaults, include"} {
		if !strings.Contains(table, target) {
			t.Errorf("targets do not mention %q", target)
		}
	}

	written, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Benchmark results", "Date (UTC):", "wazero: v", "## Results", "| ns/request | noop |",
		"## Targets", "## Where the time goes", notes} {
		if !bytes.Contains(written, []byte(want)) {
			t.Errorf("%s has no %q", out, want)
		}
	}
	if bytes.Contains(written, []byte("stale results")) {
		t.Errorf("%s kept the text above the notes marker", out)
	}
}

func TestPercentile(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		var ds []time.Duration
		for _, x := range xs {
			ds = append(ds, time.Duration(x)*time.Millisecond)
		}
		return ds
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // descending: percentile must sort
	}
	thousand := make([]int, 1000)
	for i := range thousand {
		thousand[i] = i + 1
	}
	for _, tc := range []struct {
		name string
		ds   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", ms(7), 99, 7 * time.Millisecond},
		{"median of odd", ms(3, 1, 2), 50, 2 * time.Millisecond},
		{"median of even is the lower middle", ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{"p99 of 100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the max", ms(hundred...), 100, 100 * time.Millisecond},
		{"p99 of 1000 leaves ten above", ms(thousand...), 99, 990 * time.Millisecond},
		{"p50 of 1000", ms(thousand...), 50, 500 * time.Millisecond},
		{"tiny p is the min", ms(5, 9), 0.1, 5 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.ds, tc.p); got != tc.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tc.ds, tc.p, got, tc.want)
			}
		})
	}
}

func TestTicksPerInterval(t *testing.T) {
	for _, tc := range []struct {
		f, p time.Duration
		want int
	}{
		{30 * time.Second, 500 * time.Millisecond, 60},
		{time.Second, 100 * time.Millisecond, 10},
		{time.Second, time.Second, 1},
		{time.Second, 0, 1}, // no tick period set
		{time.Second, 300 * time.Millisecond, 4},
	} {
		if got := ticksPerInterval(tc.f, tc.p); got != tc.want {
			t.Errorf("ticksPerInterval(%v, %v) = %d, want %d", tc.f, tc.p, got, tc.want)
		}
	}
}

// TestRequestsInWindow checks the model's traffic: whatever the tick period,
// the windows of one simulated second hold exactly perSecond requests.
func TestRequestsInWindow(t *testing.T) {
	for _, tc := range []struct {
		p         time.Duration
		perSecond int
		windows   int // that make whole seconds
	}{
		{time.Second, 5, 1},
		{500 * time.Millisecond, 5, 2},
		{200 * time.Millisecond, 5, 5},
		{300 * time.Millisecond, 5, 10}, // 3 s
		{100 * time.Millisecond, 7, 10},
	} {
		for start := 0; start < 3*tc.windows; start += tc.windows {
			sum := 0
			for k := start; k < start+tc.windows; k++ {
				sum += requestsInWindow(k, tc.p, tc.perSecond)
			}
			want := tc.perSecond * int(time.Duration(tc.windows)*tc.p/time.Second)
			if sum != want {
				t.Errorf("p %v, %d/s: windows %d..%d hold %d requests, want %d", tc.p, tc.perSecond, start, start+tc.windows-1, sum, want)
			}
		}
	}
}

func TestModelArithmetic(t *testing.T) {
	for _, tc := range []struct {
		name     string
		voices   int
		keys     int
		interval time.Duration
		want     float64 // mesh messages per second
	}{
		{"old defaults: the issue's 40 000", modelWorkers, modelKeys, time.Second, 40000},
		{"old defaults, include", modelWorkers, modelScaleToZero, time.Second, 10000},
		{"30s interval", modelWorkers, modelKeys, 30 * time.Second, 40000.0 / 30},
		{"30s interval, include", modelWorkers, modelScaleToZero, 30 * time.Second, 10000.0 / 30},
		{"30s interval, one voice per sidecar", 1, modelKeys, 30 * time.Second, 20000.0 / 30},
		{"30s interval, one voice, include", 1, modelScaleToZero, 30 * time.Second, 5000.0 / 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := meshRate(expectedPerSidecar(tc.voices, tc.keys, tc.interval)); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("mesh rate = %v, want %v", got, tc.want)
			}
			r := &modelRow{keys: tc.keys, voices: tc.voices, flushInterval: tc.interval, span: modelIntervals * tc.interval,
				messages: tc.voices * tc.keys * modelIntervals}
			if !r.exact() {
				t.Errorf("a row with one message per key per interval per voice is not exact")
			}
			if got, want := r.perSidecar(), expectedPerSidecar(tc.voices, tc.keys, tc.interval); math.Abs(got-want) > 1e-9 {
				t.Errorf("perSidecar() = %v, want %v", got, want)
			}
			r.messages++
			if r.exact() {
				t.Errorf("a row with one message too many is exact")
			}
		})
	}
	sporadic := &modelRow{modelCase: modelCase{sporadic: true}, wakeAfter: 30 * time.Second, requests: 8, messages: 8, counted: 8, wakeups: 8}
	if !sporadic.exact() || math.Abs(sporadic.perSidecar()-1/modelSporadicEvery.Seconds()) > 1e-12 {
		t.Errorf("sporadic row: exact %v, per sidecar %v", sporadic.exact(), sporadic.perSidecar())
	}
	for _, tc := range []struct {
		name              string
		wakeAfter         time.Duration
		messages, counted int
		exact             bool
	}{
		{"wake-ups on: one message per request", 30 * time.Second, 8, 8, true},
		{"wake-ups on: two requests in one message", 30 * time.Second, 7, 8, false},
		{"wake-ups off: two requests in one message, each counted", 0, 7, 8, true},
		{"wake-ups off: a count lost", 0, 7, 7, false},
		{"wake-ups off: a count doubled", 0, 8, 9, false},
		{"more messages than requests", 0, 9, 8, false},
	} {
		r := &modelRow{modelCase: modelCase{sporadic: true}, wakeAfter: tc.wakeAfter, requests: 8, messages: tc.messages, counted: tc.counted}
		if got := r.exact(); got != tc.exact {
			t.Errorf("sporadic, %s: exact() = %v, want %v", tc.name, got, tc.exact)
		}
	}
}

func TestGCPerMillion(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []gcSample
		warm    int
		want    float64
		ok      bool
	}{
		{"no gauge", nil, 1000, 0, false},
		{"one sample after warm", []gcSample{{500, 1}, {1000, 3}}, 1000, 0, false},
		{"from the first sample at warm", []gcSample{{500, 1}, {1000, 3}, {2000000, 5}, {3000000, 7}}, 1000, 4 / 2.999, true},
		{"none", []gcSample{{1000000, 9}, {5000000, 9}}, 1000000, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &variant{gc: tc.samples}
			got, ok := v.gcPerMillion(tc.warm)
			if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("gcPerMillion = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestSporadicTimes checks the sporadic key's schedule: every gap longer
// than the default wake_after (so each request may wake the key), and the
// requests at distinct points of the report cycle.
func TestSporadicTimes(t *testing.T) {
	if modelSporadicEvery <= config.DefaultWakeAfter {
		t.Errorf("the sporadic key's requests are %v apart, not more than the default wake_after %v", modelSporadicEvery, config.DefaultWakeAfter)
	}
	for _, interval := range []time.Duration{time.Second, 30 * time.Second} {
		times := sporadicTimes(interval)
		if len(times) != modelSporadicN {
			t.Fatalf("%d times, want %d", len(times), modelSporadicN)
		}
		phases := map[time.Duration]bool{}
		for i, at := range times {
			phases[at%interval] = true
			if i > 0 && times[i]-times[i-1] < modelSporadicEvery {
				t.Errorf("interval %v: gap %v before request %d, want at least %v", interval, times[i]-times[i-1], i, modelSporadicEvery)
			}
		}
		if len(phases) != modelSporadicN {
			t.Errorf("interval %v: requests at %d distinct points of the cycle, want %d: %v", interval, len(phases), modelSporadicN, times)
		}
	}
}
