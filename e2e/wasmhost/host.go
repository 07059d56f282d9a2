package wasmhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Config configures a Host. The zero value is one worker with empty
// configurations, no clusters and real-time ticks.
type Config struct {
	// Workers is the number of worker VMs (Envoy's --concurrency): each is a
	// separate instance of the module with its own memory, driven by its own
	// goroutine. Default 1.
	Workers int

	// PluginConfig is the plugin's `configuration` (Envoy's
	// PluginConfig.configuration), passed to proxy_on_configure and readable
	// as BufferPluginConfiguration during that call only. Default empty.
	PluginConfig []byte

	// VMConfig is the VM's `configuration` (Envoy's VmConfig.configuration),
	// passed to proxy_on_vm_start and readable as BufferVMConfiguration.
	// Default empty.
	VMConfig []byte

	// RootID is the plugin's root_id, readable as property "plugin_root_id".
	// Default "".
	RootID string

	// PluginName is the plugin's name, readable as property "plugin_name".
	// Default "".
	PluginName string

	// VMID is the VM's vm_id, readable as property "plugin_vm_id" and the
	// vm_id proxy_resolve_shared_queue accepts. Default "".
	VMID string

	// Properties adds values for proxy_get_property, keyed by the path's
	// segments joined with "." (e.g. "node.id"). Default none.
	Properties map[string][]byte

	// Env is the WASI environment of every worker (Envoy's
	// VmConfig.environment_variables). Default empty.
	Env map[string]string

	// Clusters are the upstream clusters proxy_http_call may name, mapped to
	// the "host:port" the default dispatcher connects to. A cluster missing
	// here makes proxy_http_call return StatusBadArgument, as Envoy does for
	// a cluster it does not know. With a custom Dispatch the address is not
	// used and may be empty. Default none.
	Clusters map[string]string

	// Dispatch, when set, receives every accepted proxy_http_call instead of
	// the default dispatcher (which sends a real HTTP/1.1 request to the
	// cluster's address). It runs on the calling worker's goroutine, inside
	// proxy_http_call, so it must not block nor call Host or Worker methods.
	// Call reply once (later calls are ignored), from any goroutine, at any
	// time: the host delivers it to the calling worker as
	// proxy_on_http_call_response, unless the plugin was deleted meanwhile.
	// A custom dispatcher owns timeouts: the host does not enforce
	// Callout.Timeout for it (UpstreamTimeout is Envoy's answer when it
	// expires). Default nil.
	Dispatch func(c Callout, reply func(Response))

	// UnhealthyClusters are clusters of Clusters that start with no healthy
	// host (Host.SetClusterHealthy changes that later). A request routed to
	// one (Request.Cluster) gets Envoy's router reply, 503 "no healthy
	// upstream"; a proxy_http_call to one fails with InternalFailure, as in
	// Envoy (see proxy_http_call in the package doc). Default none: every
	// cluster starts healthy.
	UnhealthyClusters []string

	// DrainTimeout is how long Close and Worker.Stop let open streams (held
	// ones included) go on after the plugin is removed, as Envoy's listener
	// drain does (--drain-time-s, 600 s by default, before it closes the
	// connections): ticks and callouts are still delivered, so the module
	// can let its held requests go. Streams still open then are reset, and
	// only after them does the root get proxy_on_done. Default 0: reset at
	// once.
	DrainTimeout time.Duration

	// Walltime, when set, is the modules' wall clock (WASI realtime, Go's
	// time.Now in the guest), e.g. a simulated time that follows manual ticks.
	// Default nil: the host's clock.
	Walltime func() time.Time

	// ManualTicks disables the tick timers: proxy_on_tick is then called only
	// by Worker.Tick / Host.Tick. Default false: each worker calls
	// proxy_on_tick every period set by proxy_set_tick_period_milliseconds.
	ManualTicks bool

	// LogOutput, when set, receives every captured log line, formatted as
	// "[worker N] level: message\n". Default nil.
	LogOutput io.Writer

	// LogLevel is the lowest proxy_log level captured (and reported by
	// proxy_get_log_level). Default LevelTrace: everything. Envoy's own
	// default is info.
	LogLevel LogLevel

	// MaxLogLines caps the captured log lines; later ones are counted in
	// Stats.DroppedLogs but not kept. Default 100000.
	MaxLogLines int

	// TimeCallbacks makes every worker time its calls into the module
	// (Stats.GuestTime, Stats.GuestMax), e.g. to find the longest
	// proxy_on_tick. Default false: reading the clock twice per guest entry
	// would add to every per-request figure.
	TimeCallbacks bool

	// RandomSeed, when not zero, makes WASI random_get deterministic: every
	// VM reads the same ChaCha8 stream seeded from it (the "fixed seed" case
	// of wazero's own default source, where every instance gets the same
	// random bytes). A module that takes ids, phases or map seeds from
	// random_get then gets the same ones in every worker, and in every run.
	// Default 0: crypto/rand, different bytes for every VM.
	RandomSeed uint64

	// RandomPerVM, with RandomSeed, gives every VM a stream of its own,
	// seeded from RandomSeed and the VM's start number (0 to Workers-1 for
	// New's workers in order, then one more per Restart): distinct per VM as
	// crypto/rand's would be, yet the same in every run, for a simulation
	// that must replay. Ignored when RandomSeed is 0.
	RandomPerVM bool
}

// Host runs a Module the way Envoy runs a proxy-wasm HTTP filter: one VM per
// worker, each driven by a single goroutine, with process-wide metrics and
// shared data. Create it with New; Close it when done.
type Host struct {
	mod *Module
	cfg Config

	// mu guards workers, retired, starts and closing: Restart replaces a
	// worker while other goroutines may call Worker.
	mu      sync.Mutex
	workers []*Worker
	// retired are the instances Restart replaced: stopped, kept for Stats
	// and released by Close.
	retired []*Worker
	// starts counts VM instances made (RandomPerVM's start number).
	starts  uint64
	closing bool

	metrics metricStore
	shared  sharedData
	queues  queueStore
	logs    logStore

	client      *http.Client
	transport   *http.Transport
	dispatchCtx context.Context
	dispatchEnd context.CancelFunc
	dispatchWG  sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	// healthMu guards unhealthy: clusters with no healthy host.
	healthMu  sync.RWMutex
	unhealthy map[string]bool
}

// SetClusterHealthy marks cluster name as having healthy hosts or none, as
// health checking or EDS would in Envoy. It applies to streams routed from
// then on (a held stream is routed when let go) and to later
// proxy_http_calls. A name missing from Config.Clusters stays unknown.
func (h *Host) SetClusterHealthy(name string, healthy bool) {
	h.healthMu.Lock()
	defer h.healthMu.Unlock()
	if healthy {
		delete(h.unhealthy, name)
	} else {
		h.unhealthy[name] = true
	}
}

// ClusterHealthy reports whether cluster name has a healthy host (unknown
// clusters count as healthy: they fail for another reason).
func (h *Host) ClusterHealthy(name string) bool { return h.clusterHealthy(name) }

func (h *Host) clusterHealthy(name string) bool {
	h.healthMu.RLock()
	defer h.healthMu.RUnlock()
	return !h.unhealthy[name]
}

// Errors returned by Host and Worker methods.
var (
	// ErrClosed is returned by calls on a worker that has shut down.
	ErrClosed = errors.New("wasmhost: worker is closed")
	// ErrCrashed wraps the trap that killed a worker's VM; every later call on
	// that worker returns it, as Envoy keeps a failed VM out of service.
	ErrCrashed = errors.New("wasmhost: VM crashed")
	// ErrNoTickPeriod is returned by Tick before the module has set a tick
	// period: Envoy never calls proxy_on_tick then.
	ErrNoTickPeriod = errors.New("wasmhost: no tick period set (proxy_set_tick_period_milliseconds)")
)

// New instantiates mod once per worker and starts each one as Envoy does:
// _initialize (then main or __main_void) or _start, with only start-time
// imports allowed; then proxy_on_context_create(root, 0),
// proxy_on_vm_start(root, len(VMConfig)) and
// proxy_on_configure(root, len(PluginConfig)). If any worker fails to start,
// New closes the others and returns an error that includes the module's
// error-level logs.
func New(ctx context.Context, mod *Module, cfg Config) (*Host, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.MaxLogLines <= 0 {
		cfg.MaxLogLines = 100000
	}
	h := &Host{mod: mod, cfg: cfg, unhealthy: map[string]bool{}}
	for _, c := range cfg.UnhealthyClusters {
		h.unhealthy[c] = true
	}
	h.logs.init(cfg.MaxLogLines, cfg.LogOutput)
	h.shared.init()
	h.queues.init()
	h.metrics.init()
	h.transport = &http.Transport{
		// Loopback only, never through an environment proxy; no implicit
		// gzip, which Envoy's async client does not ask for either.
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	}
	h.client = &http.Client{
		Transport: h.transport,
		// Envoy's async client hands redirects to the module as they are.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	h.dispatchCtx, h.dispatchEnd = context.WithCancel(context.Background())

	for i := 0; i < cfg.Workers; i++ {
		w, err := newWorker(ctx, h, i, h.nextStart())
		if err == nil {
			h.workers = append(h.workers, w)
			err = w.do(ctx, w.start)
		}
		if err != nil {
			_ = h.abort(ctx)
			return nil, err
		}
	}
	return h, nil
}

// abort stops every worker without calling proxy_on_done: used when New fails.
func (h *Host) abort(ctx context.Context) error {
	for _, w := range h.workers {
		w.stopNow()
	}
	h.dispatchEnd()
	h.dispatchWG.Wait()
	h.transport.CloseIdleConnections()
	for _, w := range h.workers {
		_ = w.inst.Close(ctx)
	}
	return nil
}

// nextStart returns the start number of the next VM instance.
func (h *Host) nextStart() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.starts
	h.starts++
	return n
}

// Restart replaces worker i's VM with a fresh instance of the same module,
// as Envoy recreates a worker's VM that died: new linear memory, then the
// same start as New's (_initialize, root context, proxy_on_vm_start,
// proxy_on_configure). The old VM must have ended first (Worker.Kill, or a
// Worker.Stop that returned); Restart does not end it, because Envoy does
// not recreate a VM that still runs. Shared data, metrics and shared queues
// are process-wide and stay as the old VM left them; answers to the old VM's
// calls still in flight are dropped (its tokens mean nothing to the new
// one). Host.Worker(i) returns the new instance from then on; the old one's
// counters stay in Host.Stats. If the new VM fails to start, Restart returns
// the error and worker i stays the old, ended one.
func (h *Host) Restart(ctx context.Context, i int) error {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return ErrClosed
	}
	if i < 0 || i >= len(h.workers) {
		h.mu.Unlock()
		return fmt.Errorf("wasmhost: Restart(%d): no such worker (%d workers)", i, len(h.workers))
	}
	old := h.workers[i]
	h.mu.Unlock()
	select {
	case <-old.stopped:
	default:
		return fmt.Errorf("wasmhost: Restart(%d): the worker's VM still runs: Kill or Stop it first", i)
	}
	w, err := newWorker(ctx, h, i, h.nextStart())
	if err != nil {
		return err
	}
	if err := w.do(ctx, w.start); err != nil {
		w.stopNow()
		_ = w.inst.Close(context.Background())
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing || h.workers[i] != old {
		// Close began, or another Restart won: this instance is not wanted.
		w.stopNow()
		_ = w.inst.Close(context.Background())
		if h.closing {
			return ErrClosed
		}
		return fmt.Errorf("wasmhost: Restart(%d): restarted concurrently", i)
	}
	h.workers[i] = w
	h.retired = append(h.retired, old)
	return nil
}

// snapshot returns the current workers and the retired ones.
func (h *Host) snapshot() (current, retired []*Worker) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Worker(nil), h.workers...), append([]*Worker(nil), h.retired...)
}

// Module returns the module this host runs.
func (h *Host) Module() *Module { return h.mod }

// Workers returns the number of workers.
func (h *Host) Workers() int { return len(h.workers) }

// Worker returns worker i (0 ≤ i < Workers()): its current VM instance,
// the newest one after a Restart.
func (h *Host) Worker(i int) *Worker {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.workers[i]
}

// Tick calls proxy_on_tick on every worker that has a tick period, as their
// timers would; workers without one are skipped. It returns the first error.
func (h *Host) Tick(ctx context.Context) error {
	workers, _ := h.snapshot()
	for _, w := range workers {
		if err := w.Tick(ctx); err != nil && !errors.Is(err, ErrNoTickPeriod) {
			return err
		}
	}
	return nil
}

// Close shuts the plugin down on every worker as Envoy does when a listener's
// filter config goes away: proxy_on_done(root); if that returns false the
// worker keeps running (callout replies and ticks are still delivered) until
// the module calls proxy_done or ctx ends; then proxy_on_delete(root). It
// then releases the instances. Close is idempotent; errors from the shutdown
// (a deadline passed before proxy_done, a crash during it) are returned.
func (h *Host) Close(ctx context.Context) error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closing = true
		h.mu.Unlock()
		workers, retired := h.snapshot()
		errs := make([]error, len(workers))
		var wg sync.WaitGroup
		for i, w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = w.shutdown(ctx)
			}()
		}
		wg.Wait()
		h.dispatchEnd()
		h.dispatchWG.Wait()
		h.transport.CloseIdleConnections()
		for _, w := range append(workers, retired...) {
			if err := w.inst.Close(context.Background()); err != nil {
				errs = append(errs, err)
			}
		}
		h.closeErr = errors.Join(errs...)
	})
	return h.closeErr
}

// Shutdown is Close under the name net/http uses.
func (h *Host) Shutdown(ctx context.Context) error { return h.Close(ctx) }

// Counter returns the value of the counter the module defined as name
// (Envoy exports it as "wasmcustom.<name>"), or 0 if there is none. Metrics
// are process-wide: the same name defined by several workers is one stat.
func (h *Host) Counter(name string) uint64 {
	if m := h.metrics.lookup(MetricCounter, name); m != nil {
		return uint64(m.value.Load())
	}
	return 0
}

// Gauge returns the value of the gauge the module defined as name, or 0.
func (h *Host) Gauge(name string) int64 {
	if m := h.metrics.lookup(MetricGauge, name); m != nil {
		return m.value.Load()
	}
	return 0
}

// Metric is a snapshot of one stat the module defined.
type Metric struct {
	Name string
	Type MetricType
	// Value is a counter's or gauge's value; for a histogram, the number of
	// recorded values.
	Value int64
	// Sum is the sum of a histogram's recorded values.
	Sum uint64
	// Buckets are a histogram's cumulative counts: values ≤
	// HistogramBounds[i].
	Buckets []uint64
}

// Metric returns the stat of type t named name, if the module defined it.
func (h *Host) Metric(t MetricType, name string) (Metric, bool) {
	m := h.metrics.lookup(t, name)
	if m == nil {
		return Metric{}, false
	}
	return m.snapshot(), true
}

// Metrics returns every stat the module defined, sorted by name then type.
func (h *Host) Metrics() []Metric { return h.metrics.all() }

// SharedData returns the shared-data value for key and its CAS token, as
// proxy_get_shared_data would.
func (h *Host) SharedData(key string) (value []byte, cas uint32, ok bool) {
	v, c, st := h.shared.get(key)
	return v, c, st == StatusOK
}

// SharedDataLargest returns the size in bytes of the largest value any
// proxy_set_shared_data (or SetSharedData) has stored.
func (h *Host) SharedDataLargest() int { return h.shared.largestValue() }

// SetSharedData sets key as proxy_set_shared_data with cas would (cas 0:
// unconditionally).
func (h *Host) SetSharedData(key string, value []byte, cas uint32) Status {
	return h.shared.set(key, value, cas)
}

// LogLine is one captured proxy_log (or stdout/stderr) line.
type LogLine struct {
	Worker  int      // index of the worker that logged it
	Level   LogLevel // proxy_log level; info for stdout, error for stderr
	Message string   // the message, without a trailing newline for stdout/stderr
}

// Logs returns the messages logged at exactly level, by every worker, in order.
func (h *Host) Logs(level LogLevel) []string { return h.logs.messages(level) }

// LogLines returns every captured line, in order.
func (h *Host) LogLines() []LogLine { return h.logs.all() }

// Stats adds up every worker's Stats, the VM instances Restart replaced
// included.
func (h *Host) Stats() Stats {
	total := Stats{GuestCalls: map[string]uint64{}, HostCalls: map[string]uint64{},
		GuestTime: map[string]time.Duration{}, GuestMax: map[string]time.Duration{},
		GuestCPU: map[string]time.Duration{}, GuestCPUMax: map[string]time.Duration{}}
	workers, retired := h.snapshot()
	for _, w := range append(workers, retired...) {
		s := w.Stats()
		total.add(s)
	}
	total.DroppedLogs = h.logs.droppedCount()
	return total
}

// Stats counts what crossed the host/guest boundary.
type Stats struct {
	// GuestCalls counts calls into the module per export name, including
	// "malloc"/"proxy_on_memory_allocate" calls the host makes to copy data in.
	GuestCalls map[string]uint64
	// GuestEntries is the sum of GuestCalls.
	GuestEntries uint64
	// HostCalls counts calls out of the module per import: the bare name for
	// env functions ("proxy_log"), "module.name" for WASI ones
	// ("wasi_snapshot_preview1.fd_write").
	HostCalls map[string]uint64
	// Requests counts HTTP streams driven through the module that have
	// ended (however: answered, reset, or with their VM), so that for each
	// stream callback GuestCalls[cb] - Requests is what the root got, even
	// while streams are held.
	Requests uint64
	// Streams counts streams by state.
	Streams StreamStats
	// Crashes lists the traps that killed workers' VMs.
	Crashes []error
	// DroppedLogs counts log lines not kept because of Config.MaxLogLines
	// (Host.Stats only).
	DroppedLogs uint64
	// PollOneoff counts the module's calls to the host's poll_oneoff (under
	// either WASI module name), whatever the host answered.
	PollOneoff PollCalls
	// GuestTime sums, per export, the wall time of the host's calls into the
	// module's callbacks, and GuestMax is the longest single call: a guest
	// entry from its start to its return, host calls it makes (such as
	// proxy_http_call) and allocations nested in it included, as long as an
	// Envoy worker would be busy with it. Only with Config.TimeCallbacks
	// (empty otherwise); the allocator's own entries are not listed, their
	// time is in the callback that needed the memory.
	GuestTime, GuestMax map[string]time.Duration
	// GuestCPU and GuestCPUMax are the same calls' CPU time on the worker's
	// thread (Linux only, empty elsewhere): what the call cost, without the
	// time the thread waited for a CPU it was not given (preemption by other
	// threads, a virtual machine's steal), which wall time counts and which
	// lands on whichever call happens to run.
	GuestCPU, GuestCPUMax map[string]time.Duration
}

// StreamStats counts HTTP streams.
type StreamStats struct {
	// Open and Paused are gauges: streams open now, and those of them held.
	Open, Paused int64
	// Opened counts streams created (Stats.Requests plus Open), PausedTotal
	// those held at proxy_on_request_headers, Resumed those the module let
	// go with proxy_continue_stream from another callback, Reset those ended
	// by a client reset (Stream.Reset, Request's context, host shutdown).
	Opened, PausedTotal, Resumed, Reset uint64
}

// PollCalls counts calls to the host's poll_oneoff by phase.
type PollCalls struct {
	// AtStart: during _initialize, main, __main_void or _start.
	AtStart uint64
	// AfterStart: from proxy_on_context_create(root) on, allocations
	// included. Envoy 1.33 to 1.38 answer each with ENOSYS, on which Go's
	// runtime throws: a module meant for them must keep this at 0.
	AfterStart uint64
}

func (s *Stats) add(o Stats) {
	for k, v := range o.GuestCalls {
		s.GuestCalls[k] += v
	}
	for k, v := range o.HostCalls {
		s.HostCalls[k] += v
	}
	for k, v := range o.GuestTime {
		s.GuestTime[k] += v
	}
	for k, v := range o.GuestMax {
		s.GuestMax[k] = max(s.GuestMax[k], v)
	}
	for k, v := range o.GuestCPU {
		s.GuestCPU[k] += v
	}
	for k, v := range o.GuestCPUMax {
		s.GuestCPUMax[k] = max(s.GuestCPUMax[k], v)
	}
	s.GuestEntries += o.GuestEntries
	s.PollOneoff.AtStart += o.PollOneoff.AtStart
	s.PollOneoff.AfterStart += o.PollOneoff.AfterStart
	s.Requests += o.Requests
	s.Streams.Open += o.Streams.Open
	s.Streams.Paused += o.Streams.Paused
	s.Streams.Opened += o.Streams.Opened
	s.Streams.PausedTotal += o.Streams.PausedTotal
	s.Streams.Resumed += o.Streams.Resumed
	s.Streams.Reset += o.Streams.Reset
	s.Crashes = append(s.Crashes, o.Crashes...)
}

// String formats the stats with sorted keys, for test failure messages.
func (s Stats) String() string {
	out := fmt.Sprintf("requests=%d guest_entries=%d", s.Requests, s.GuestEntries)
	for _, m := range []map[string]uint64{s.GuestCalls, s.HostCalls} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			out += fmt.Sprintf(" %s=%d", k, m[k])
		}
	}
	for _, err := range s.Crashes {
		out += " crash=" + err.Error()
	}
	return out
}
