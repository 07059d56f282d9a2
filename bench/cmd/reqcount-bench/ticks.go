package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/messages"
)

// guestFlush is the flush path measured inside the module: the filter
// (key_source header, so each request can carry its own key) holding keys
// distinct keys, every one with a count, flushed over one whole
// flush_interval: the ticks it takes to send every key once (the filter
// sends one slice of its keys per tick). Each tick is timed inside the host
// (wasmhost Config.TimeCallbacks: proxy_on_tick's entry to its return, the
// proxy_http_calls it makes included), and the interval to the delivery of
// the last answer.
//
// A VM crash or a flush interval that does not carry exactly one count per
// key is a finding about the filter, not a failure of the benchmark: it is
// recorded and reported (a MISS in the targets) and the run goes on.
type guestFlush struct {
	mode string
	// aggregate is the configuration's aggregate: envoy (the default; the
	// ticks also publish to and collect from shared data) or worker.
	aggregate string
	// oneTick marks the context measurement: a flush_interval whose tick
	// period is the interval itself, so the whole table goes out in one
	// tick, as every tick did before the sends were spread.
	oneTick       bool
	flushInterval time.Duration
	tickPeriod    time.Duration // what the module set
	ticks         int           // per flush_interval: flushInterval / tickPeriod
	runs          int           // timed runs wanted
	// Per timed run (one flush_interval each).
	longest  []time.Duration // the longest proxy_on_tick
	total    []time.Duration // every proxy_on_tick of the interval, summed
	answered []time.Duration // wall time from the first tick to the last answer delivered
	calls    int64           // in the last run
	body     int64           // body bytes in the last run
	// miscounts lists the runs whose interval did not carry exactly keys counts.
	miscounts []string
	// tallies are the module's metrics that explain a wrong flush
	// (uncounted requests, rejected calls), when not zero.
	tallies []string
	// crash is the trap that ended the VM, with the run it happened in.
	crash    error
	crashRun int
}

// subject names the row.
func (g *guestFlush) subject() string {
	if g.oneTick {
		return fmt.Sprintf("filter header, %s, aggregate %s, whole table in one tick (flush_interval %v, 1 tick per interval: the cost of one tick before the spread)", g.mode, g.aggregate, g.flushInterval)
	}
	return fmt.Sprintf("filter header, %s, aggregate %s, flush_interval %v (default), %d ticks of %v", g.mode, g.aggregate, g.flushInterval, g.ticks, g.tickPeriod)
}

// ok reports whether every run completed and flushed exactly what it counted,
// with nothing uncounted and no call answered other than 200 in the module's
// view (every call is answered 200).
func (g *guestFlush) ok() bool { return g.crash == nil && len(g.miscounts) == 0 && len(g.tallies) == 0 }

// problems describes what went wrong, or "".
func (g *guestFlush) problems() string {
	var ps []string
	if g.crash != nil {
		msg := g.crash.Error()
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i] // the first line; the wasm stack traces follow
		}
		ps = append(ps, fmt.Sprintf("VM crashed in run %d of %d (run 0 is the warm-up): %s", g.crashRun, g.runs, msg))
	}
	if len(g.miscounts) > 0 {
		ps = append(ps, "flush wrong in "+strings.Join(g.miscounts, ", "))
	}
	if len(g.tallies) > 0 {
		ps = append(ps, "the module's own tallies: "+strings.Join(g.tallies, ", "))
	}
	return strings.Join(ps, "; ")
}

// longestTick is the figure the target uses: the median over the timed runs
// of each flush_interval's longest tick. A single tick disturbed by another
// process on a shared machine moves the maximum over all runs, printed
// beside it, but not this.
func (g *guestFlush) longestTick() time.Duration { return medianDuration(g.longest) }

// runGuestFlush measures the flush at the default flush_interval in both
// modes, then, for context, single mode with every key in one tick.
func runGuestFlush(ctx context.Context, o options, mod *wasmhost.Module) ([]*guestFlush, error) {
	one, err := oneTickInterval()
	if err != nil {
		return nil, err
	}
	var out []*guestFlush
	for _, c := range []struct {
		mode, aggregate string
		interval        time.Duration // 0: the default
	}{
		{"single", "envoy", 0}, {"batch", "envoy", 0}, {"single", "worker", 0}, {"batch", "worker", 0},
		{"single", "worker", one},
	} {
		g, err := guestFlushMode(ctx, o, mod, c.mode, c.aggregate, c.interval)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

// oneTickInterval finds a flush_interval whose tick period is the interval
// itself (one tick sends every key), asking package config rather than
// assuming how it divides intervals.
func oneTickInterval() (time.Duration, error) {
	for _, d := range []string{"1s", "500ms", "200ms", "100ms", "50ms", "10ms", "1ms"} {
		cfg, err := config.Parse(fmt.Appendf(nil, `{"cluster":%q,"flush_interval":%q}`, cluster, d))
		if err != nil {
			return 0, fmt.Errorf("one-tick flush_interval: %w", err)
		}
		if cfg.TickPeriod() == cfg.FlushInterval {
			return cfg.FlushInterval, nil
		}
	}
	return 0, errors.New("no flush_interval down to 1ms has one tick per interval")
}

func guestFlushMode(ctx context.Context, o options, mod *wasmhost.Module, mode, aggregate string, interval time.Duration) (*guestFlush, error) {
	// Wake-ups off: the first request of each new key would otherwise be
	// sent at once, leaving nothing for the ticks to measure in the first run.
	conf := fmt.Sprintf(`{"cluster":%q,"key_source":"header","mode":%q,"aggregate":%q,"max_keys":%d,"wake_after":"0s"`, cluster, mode, aggregate, o.keys)
	if interval > 0 {
		conf += fmt.Sprintf(`,"flush_interval":%q`, interval)
	}
	conf += "}"
	cfg, err := config.Parse([]byte(conf))
	if err != nil {
		return nil, fmt.Errorf("guest flush %s: %w", mode, err)
	}
	g := &guestFlush{mode: mode, aggregate: aggregate, oneTick: interval > 0, runs: o.flushRuns, flushInterval: cfg.FlushInterval}
	ok := okResponse()
	// The dispatcher runs inside proxy_http_call, so inside the timed tick:
	// it only keeps the body (already the host's copy) and answers; the
	// bodies are decoded after the interval.
	var mu sync.Mutex
	var bodies [][]byte
	h, err := wasmhost.New(ctx, mod, wasmhost.Config{
		PluginConfig:  []byte(conf),
		Clusters:      map[string]string{cluster: ""},
		ManualTicks:   true,
		TimeCallbacks: true,
		LogLevel:      wasmhost.LevelInfo,
		Dispatch: func(c wasmhost.Callout, reply func(wasmhost.Response)) {
			mu.Lock()
			bodies = append(bodies, c.Body)
			mu.Unlock()
			reply(ok)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("guest flush %s: %w", mode, err)
	}
	defer h.Close(ctx)
	w := h.Worker(0)
	g.tickPeriod = w.TickPeriod()
	g.ticks = ticksPerInterval(g.flushInterval, g.tickPeriod)
	reqs := make([]wasmhost.Request, o.keys)
	for i := range reqs {
		hs := append([][2]string(nil), benchRequest.Headers...)
		for j := range hs {
			if hs[j][0] == "x-service" {
				hs[j][1] = fmt.Sprintf("svc-%05d", i)
			}
		}
		reqs[i] = wasmhost.Request{Headers: hs}
	}
	// The module pushes its metrics on each tick; a crash leaves those of
	// the last tick.
	defer func() {
		for _, m := range h.Metrics() {
			if m.Value > 0 && (strings.HasPrefix(m.Name, "reqcount.requests_uncounted.") ||
				m.Name == "reqcount.flush.calls_rejected" || m.Name == "reqcount.flush.calls_reset" ||
				m.Name == "reqcount.requests_overflow" || m.Name == metricIgnored) {
				g.tallies = append(g.tallies, fmt.Sprintf("%s %d", m.Name, m.Value))
			}
		}
	}()
	crashed := func(run int, err error) (*guestFlush, error) {
		if !errors.Is(err, wasmhost.ErrCrashed) {
			return nil, fmt.Errorf("guest flush %s: %w", mode, err)
		}
		g.crash, g.crashRun = err, run
		fmt.Fprintf(os.Stderr, "  guest flush %s: %s\n", mode, g.problems())
		return g, nil
	}
	tickTime := func() time.Duration { return w.Stats().GuestTime["proxy_on_tick"] }
	for run := 0; run <= o.flushRuns; run++ { // run 0 warms up
		for _, r := range reqs {
			if _, err := w.Request(ctx, r); err != nil {
				return crashed(run, err)
			}
		}
		mu.Lock()
		bodies = bodies[:0]
		mu.Unlock()
		var longest, total time.Duration
		start := time.Now()
		for range g.ticks {
			before := tickTime()
			if err := w.Tick(ctx); err != nil {
				return crashed(run, err)
			}
			d := tickTime() - before
			longest, total = max(longest, d), total+d
		}
		w.MemorySize() // runs after every queued answer has been delivered
		answered := time.Since(start)
		if err := w.Crashed(); err != nil { // in an answer, after a tick
			return crashed(run, err)
		}
		mu.Lock()
		var n, c, size int64
		for _, b := range bodies {
			c++
			size += int64(len(b))
			if ms, err := messages.Decode(b); err == nil {
				for _, m := range ms {
					n += int64(m.Count)
				}
			}
		}
		mu.Unlock()
		callsOK := c == int64(o.keys) // single: one per key
		if mode == "batch" {
			callsOK = c >= 1 && c <= int64(g.ticks) // at most one per tick
		}
		if n != int64(o.keys) || !callsOK {
			g.miscounts = append(g.miscounts, fmt.Sprintf("run %d (%d counts in %d calls over %d ticks for %d requests, one per key)", run, n, c, g.ticks, o.keys))
		}
		if run > 0 {
			g.longest = append(g.longest, longest)
			g.total = append(g.total, total)
			g.answered = append(g.answered, answered)
		}
		g.calls, g.body = c, size
	}
	if warn := h.Logs(wasmhost.LevelWarn); len(warn) > 0 && len(g.miscounts) == 0 {
		return nil, fmt.Errorf("guest flush %s: the module logged warnings: %q", mode, warn)
	}
	return g, nil
}

// ticksPerInterval is how many ticks of period p make one flush interval f:
// the filter sends one slice of its keys per tick, every slice once per f.
func ticksPerInterval(f, p time.Duration) int {
	if p <= 0 || f <= p {
		return 1
	}
	return int((f + p - 1) / p)
}
