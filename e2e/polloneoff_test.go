package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/messages"
)

// TestPollOneoffENOSYS drives the compiled filter through the bench's
// heaviest loads on the host's default WASI, Envoy 1.33-1.38's, where
// poll_oneoff answers ENOSYS and Go's runtime throws on it: 10 000 keys in
// both aggregation modes (the envoy mode over two workers, so the merge's
// shared-data values are large: 50 KiB), keys turning over for two
// hours of ticks with the GC pacer working, and a 1 MiB configuration. It
// asserts that the VM never traps, that the module never calls the host's
// poll_oneoff (not even at start: it answers its own, filter/wasmrewrite),
// that GC cycles did run (else the load proved nothing), and that every
// request is reported exactly once.
//
// Without filter/wasmrewrite in the build (REQCOUNT_E2E_WASM=<a module as go
// build wrote it>) every load here kills the VM: "fatal error: poll_oneoff
// failed" from the netpoll(0) that ends a GC cycle.
func TestPollOneoffENOSYS(t *testing.T) {
	if got := filterModule(t).WASI(); got != wasmhost.WASIEnvoy133 {
		t.Fatalf("the e2e host runs %v, want Envoy 1.33-1.38's ENOSYS", got)
	}
	// Configurations padded to 64 KiB (the most the filter accepts) and to
	// 1 MiB (refused, after the host copied it in): JSON allows any
	// whitespace between fields.
	pad := func(n int) string { return "," + strings.Repeat(" ", n) + `"timeout":"5s"` }
	const flush1s = `,"flush_interval":"1s"`
	tests := []struct {
		name      string
		aggregate string
		workers   int
		keys      int // active keys per interval
		turnover  int // percent of the active keys replaced each interval
		intervals int
		extra     string // more configuration, or padding
		minGC     int64
		minShared int // bytes of the largest shared-data value, at least
	}{
		{"10000 keys, aggregate worker", "worker", 1, 10000, 0, 4, "", 2, 0},
		{"10000 keys, aggregate envoy, 2 workers", "envoy", 2, 10000, 0, 4, "", 2, 0},
		// Two outbox shards per worker at 1s: values of about 50 KiB.
		{"10000 keys, 1s intervals, aggregate envoy, 2 workers", "envoy", 2, 10000, 0, 12, flush1s, 3, 40 << 10},
		// The filter makes next to no garbage on a steady table (its calls
		// reuse their headers and callback records): the rows below turn
		// keys over, so that GC cycles run.
		{"5000 keys, all turning over, 72 1s intervals, aggregate worker", "worker", 1, 5000, 100, 72, flush1s, 5, 0},
		{"5000 keys, 1s intervals, aggregate envoy, 2 workers", "envoy", 2, 5000, 0, 24, flush1s, 5, 20 << 10},
		{"1000 keys, all turning over, 400 1s intervals, aggregate worker", "worker", 1, 1000, 100, 400, flush1s, 10, 0},
		{"1000 keys, 50% turning over, 400 1s intervals, aggregate envoy", "envoy", 1, 1000, 50, 400, flush1s, 10, 0},
		{"3000 keys, all turning over, two hours of ticks, aggregate worker", "worker", 1, 3000, 100, 240, "", 10, 0},
		{"1000 keys, all turning over, two hours of ticks, aggregate envoy", "envoy", 1, 1000, 100, 240, "", 10, 0},
		{"64 KiB configuration, 2000 keys, aggregate envoy, 2 workers", "envoy", 2, 2000, 10, 6, pad(65000), 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conf := fmt.Sprintf(`{"cluster":"operator","aggregate":%q,"max_keys":%d,"wake_after":"0s"%s}`,
				tt.aggregate, 4*tt.keys, tt.extra)
			cfg, err := config.Parse([]byte(conf))
			if err != nil {
				t.Fatal(err)
			}
			run := newCountingRun(t, conf, tt.workers, cfg.Slices())
			ctx := boundedRunCtx(t, 5*time.Minute)
			next := tt.keys
			step := tt.keys * tt.turnover / 100
			var sent uint64
			for range tt.intervals {
				reqs := make([]wasmhost.Request, 0, tt.keys)
				for i := next - tt.keys; i < next; i++ {
					reqs = append(reqs, wasmhost.Request{Headers: [][2]string{
						{":authority", fmt.Sprintf("k%06d.shop.svc.cluster.local", i)}, {":path", "/"}, {":method", "GET"}}})
				}
				next += step
				run.interval(ctx, t, reqs)
				sent += uint64(len(reqs) * tt.workers)
			}
			// What is still in a table goes out at its next ticks.
			run.interval(ctx, t, nil)
			run.interval(ctx, t, nil)
			s := run.h.Stats()
			if len(s.Crashes) > 0 {
				t.Fatalf("VM died: %v", s.Crashes)
			}
			if s.PollOneoff != (wasmhost.PollCalls{}) {
				t.Errorf("poll_oneoff calls to the host: %+v, want none", s.PollOneoff)
			}
			gc := run.h.Gauge("reqcount.vm.gc_cycles")
			t.Logf("%d requests, %d ticks per worker, %d GC cycles (%d by the pacer), linear memory %d bytes, largest shared-data value %d bytes",
				sent, run.ticks, gc, run.h.Gauge("reqcount.vm.gc_collected"), run.h.Worker(0).MemorySize(), run.h.SharedDataLargest())
			if got := run.h.SharedDataLargest(); got < tt.minShared {
				t.Errorf("largest shared-data value %d bytes, want at least %d", got, tt.minShared)
			}
			if gc < tt.minGC {
				t.Errorf("%d GC cycles, want at least %d: the load did not exercise the collector", gc, tt.minGC)
			}
			if got := run.reported(); got != sent {
				t.Errorf("%d requests reported, %d sent", got, sent)
			}
		})
	}
}

// TestPollOneoffENOSYSLargeConfiguration: a 1 MiB configuration, copied
// into every worker's memory by the host and refused by the filter (at most
// 64 KiB), fails the start with the filter's error, not a trap, and without
// a poll_oneoff call on Envoy 1.33-1.38's host.
func TestPollOneoffENOSYSLargeConfiguration(t *testing.T) {
	conf := `{"cluster":"operator",` + strings.Repeat(" ", 1<<20) + `"timeout":"5s"}`
	h, err := wasmhost.New(boundedCtx(t), filterModule(t), wasmhost.Config{
		Workers:      2,
		PluginConfig: []byte(conf),
		ManualTicks:  true,
		Clusters:     map[string]string{"operator": ""},
	})
	if err == nil {
		closeHost(t, h)
		t.Fatal("a 1 MiB configuration was accepted")
	}
	if !strings.Contains(err.Error(), "more than the 65536 allowed") || strings.Contains(err.Error(), "poll_oneoff") {
		t.Errorf("start error %q, want the filter's size error", err)
	}
}

// boundedRunCtx is boundedCtx with a longer limit, for the long runs.
func boundedRunCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// countingRun is the filter on manual ticks with a simulated wall clock
// that moves one tick period per tick, every call answered 200 and the
// reported requests added up from the bodies.
type countingRun struct {
	h     *wasmhost.Host
	ticks int // ticks per worker so far
	per   int // ticks per flush interval
	tick  time.Duration
	mu    sync.Mutex
	now   time.Time
	count uint64
	bad   int // bodies that did not decode
}

func newCountingRun(t *testing.T, conf string, workers, ticksPerInterval int) *countingRun {
	r := &countingRun{now: time.Unix(1_700_000_000, 0), per: ticksPerInterval}
	r.h = startHost(t, wasmhost.Config{
		Workers:      workers,
		PluginConfig: []byte(conf),
		ManualTicks:  true,
		Clusters:     map[string]string{"operator": ""},
		Walltime: func() time.Time {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.now
		},
		Dispatch: func(c wasmhost.Callout, reply func(wasmhost.Response)) {
			ms, err := messages.Decode(c.Body)
			r.mu.Lock()
			if err != nil {
				r.bad++
			}
			for _, m := range ms {
				r.count += uint64(m.Count)
			}
			r.mu.Unlock()
			reply(wasmhost.Response{Status: 200})
		},
	})
	r.tick = r.h.Worker(0).TickPeriod()
	return r
}

// interval sends reqs on every worker, then ticks every worker through a
// flush interval.
func (r *countingRun) interval(ctx context.Context, t *testing.T, reqs []wasmhost.Request) {
	t.Helper()
	for i := range r.h.Workers() {
		if len(reqs) > 0 {
			if err := r.h.Worker(i).RequestsCycle(ctx, len(reqs), reqs); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range r.per {
		for i := range r.h.Workers() {
			if err := r.h.Worker(i).Tick(ctx); err != nil {
				t.Fatal(err)
			}
		}
		r.mu.Lock()
		r.now = r.now.Add(r.tick)
		r.mu.Unlock()
		r.ticks++
	}
}

func (r *countingRun) reported() uint64 {
	for i := range r.h.Workers() {
		syncWorker(r.h.Worker(i))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bad > 0 {
		return 0
	}
	return r.count
}
