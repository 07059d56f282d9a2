package wasmhost

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// Callbacks the host calls, indexing Worker.fns and the guest call counters.
const (
	cbInitialize = iota
	cbStart
	cbMain
	cbMainVoid
	cbAlloc
	cbContextCreate
	cbVMStart
	cbConfigure
	cbTick
	cbRequestHeaders
	cbResponseHeaders
	cbLog
	cbDone
	cbDelete
	cbHTTPCallResponse
	cbQueueReady
	numCallbacks
)

// callbackNames are the export names; cbAlloc's is the module's allocator.
var callbackNames = [numCallbacks]string{
	cbInitialize:       "_initialize",
	cbStart:            "_start",
	cbMain:             "main",
	cbMainVoid:         "__main_void",
	cbAlloc:            "", // malloc or proxy_on_memory_allocate
	cbContextCreate:    "proxy_on_context_create",
	cbVMStart:          "proxy_on_vm_start",
	cbConfigure:        "proxy_on_configure",
	cbTick:             "proxy_on_tick",
	cbRequestHeaders:   "proxy_on_request_headers",
	cbResponseHeaders:  "proxy_on_response_headers",
	cbLog:              "proxy_on_log",
	cbDone:             "proxy_on_done",
	cbDelete:           "proxy_on_delete",
	cbHTTPCallResponse: "proxy_on_http_call_response",
	cbQueueReady:       "proxy_on_queue_ready",
}

// phase restricts which imports the module may call (proxy-wasm-cpp-host
// setRestrictedCallback).
type phase int

const (
	phaseNormal phase = iota
	phaseStart        // inside _initialize / main / _start
	phaseMalloc       // inside the host's call to malloc
)

// rootID is the root context's id: Envoy's first allocated context id in a VM.
const rootID = 1

type workerKey struct{}

// Worker is one VM instance, like one Envoy worker thread's copy of the
// plugin. Its methods post work to the worker's goroutine and wait, so guest
// calls on one worker never overlap while several workers run in parallel.
// Methods are safe for concurrent use.
type Worker struct {
	h    *Host
	idx  int
	inst api.Module
	mem  api.Memory
	ctx  context.Context // carries the worker to host functions

	fns         [numCallbacks]api.Function
	guestCalls  [numCallbacks]atomic.Uint64
	guestTime   [numCallbacks]atomic.Int64 // ns, with Config.TimeCallbacks
	guestMax    [numCallbacks]atomic.Int64 // ns, written by the worker goroutine only
	guestCPU    [numCallbacks]atomic.Int64 // ns of thread CPU time, with Config.TimeCallbacks
	guestCPUMax [numCallbacks]atomic.Int64 // ns, written by the worker goroutine only
	hostCalls   []atomic.Uint64
	// pollAtStart and pollAfterStart count poll_oneoff calls (any WASI
	// module name) during the module's start and after it.
	pollAtStart, pollAfterStart atomic.Uint64
	requests                    atomic.Uint64
	tickPeriod                  atomic.Int64 // time.Duration
	// Stream counters (Stats.Streams): open and paused now, and totals.
	openStreams, pausedStreams           atomic.Int64
	opened, pausedTotal, resumed, resets atomic.Uint64
	// draining: the plugin is being removed; Open refuses new streams.
	draining atomic.Bool

	// Mailbox. jobs are API calls; events are callout replies and queue
	// notifications, which Requests also delivers between requests.
	mu      sync.Mutex
	jobs    []func()
	events  []func()
	closed  bool
	notify  chan struct{}
	pending atomic.Bool
	stopped chan struct{}

	crashMu  sync.Mutex
	crashErr error

	// gaugeOwn is this worker's increments of each gauge (Gauge).
	gaugeMu  sync.Mutex
	gaugeOwn map[*metric]int64

	// Everything below is owned by the worker goroutine.
	stack  [8]uint64
	mstack [1]uint64

	phase     phase
	phaseName string

	exit         bool
	crashed      error
	pendingDone  bool
	doneCalled   bool
	deleted      bool
	shutdownErrs []error

	nextID    uint32
	current   uint32 // context id of the callback running
	effective uint32 // proxy_set_effective_context, reset per callback
	// streams are the open stream contexts by id (cpp-host
	// WasmBase::contexts_); reuse is RequestsCycle's stream state.
	streams map[uint32]*stream
	reuse   stream
	// deferred are held streams the module resumed, answered or closed
	// during the guest call running; runDeferred acts once it returns.
	// holdDeferred postpones that while the host still has call state to
	// clear (proxy_on_http_call_response).
	deferred     []*stream
	inDeferred   bool
	holdDeferred bool

	ticker *time.Ticker
	tickC  <-chan time.Time

	callouts      map[uint32]*pendingCallout
	nextToken     uint32
	callResp      *Response // during proxy_on_http_call_response
	callHeaders   headerMap
	callTrailers  headerMap
	callStatus    uint32 // proxy_get_status code during that call
	callStatusMsg string

	pluginConfigReadable bool
	starting             bool
	startErrLogs         []string

	metricsByID []*metric
	props       map[string][]byte
	scratch     []byte
}

// newWorker instantiates the module for worker idx; start is the instance's
// start number (Config.RandomPerVM).
func newWorker(ctx context.Context, h *Host, idx int, start uint64) (*Worker, error) {
	m := h.mod
	cfg := wazero.NewModuleConfig().
		WithName("").         // anonymous: one compiled module, many instances
		WithStartFunctions(). // the host runs _initialize/_start itself
		WithSysWalltime().
		WithSysNanotime().
		WithSysNanosleep().
		WithRandSource(randomSource(h.cfg, start))
	if wall := h.cfg.Walltime; wall != nil {
		cfg = cfg.WithWalltime(func() (int64, int32) {
			t := wall()
			return t.Unix(), int32(t.Nanosecond())
		}, sys.ClockResolution(time.Microsecond))
	}
	for k, v := range h.cfg.Env {
		cfg = cfg.WithEnv(k, v)
	}
	// Linear memory as Envoy's engines hold it: reserved, never moved on growth.
	inst, err := m.rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, reservedMemory), m.compiled, cfg)
	if err != nil {
		return nil, fmt.Errorf("wasmhost: worker %d: instantiate: %w", idx, err)
	}
	w := &Worker{
		h:         h,
		idx:       idx,
		inst:      inst,
		mem:       inst.Memory(),
		hostCalls: make([]atomic.Uint64, len(m.hostNames)),
		notify:    make(chan struct{}, 1),
		stopped:   make(chan struct{}),
		nextID:    rootID + 1,
		nextToken: 1,
		callouts:  map[uint32]*pendingCallout{},
		props:     map[string][]byte{},
		streams:   map[uint32]*stream{},
	}
	w.ctx = context.WithValue(context.Background(), workerKey{}, w)
	for cb, name := range callbackNames {
		if cb == cbAlloc {
			name = m.allocator
		}
		w.fns[cb] = inst.ExportedFunction(name)
	}
	go w.loop()
	return w, nil
}

// randomSource is what random_get reads for the VM with start number start:
// crypto/rand, or Config.RandomSeed's deterministic stream.
func randomSource(cfg Config, start uint64) io.Reader {
	if cfg.RandomSeed == 0 {
		return rand.Reader
	}
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[0:], cfg.RandomSeed)
	if cfg.RandomPerVM {
		// Bytes 8..15 tell the VMs apart; with the flag unset they stay zero
		// and every VM reads the very same stream.
		binary.LittleEndian.PutUint64(seed[8:], start+1)
	}
	return mrand.NewChaCha8(seed)
}

// Index returns the worker's index in its Host.
func (w *Worker) Index() int { return w.idx }

// loop is the worker's event loop: it runs posted jobs and events and tick
// timers, one at a time, until the plugin is deleted or the host aborts.
func (w *Worker) loop() {
	defer func() {
		w.mu.Lock()
		w.closed = true
		w.jobs, w.events = nil, nil
		w.mu.Unlock()
		// Streams still open end with the VM, without guest calls.
		err := ErrClosed
		if w.crashed != nil {
			err = w.crashed
		}
		w.failStreams(err)
		if w.ticker != nil {
			w.ticker.Stop()
		}
		close(w.stopped)
	}()
	for !w.exit {
		select {
		case <-w.notify:
			w.drain(true)
		case <-w.tickC:
			w.onTimer()
		}
	}
}

// drain runs what is queued: events, and jobs too unless only events are
// wanted (inside Requests).
func (w *Worker) drain(withJobs bool) {
	for !w.exit {
		w.mu.Lock()
		var fn func()
		if len(w.events) > 0 {
			fn = w.events[0]
			w.events[0] = nil
			w.events = w.events[1:]
		} else if withJobs && len(w.jobs) > 0 {
			fn = w.jobs[0]
			w.jobs[0] = nil
			w.jobs = w.jobs[1:]
		}
		w.pending.Store(len(w.events) > 0)
		w.mu.Unlock()
		if fn == nil {
			return
		}
		fn()
		w.afterEvent()
	}
}

// post queues fn on the worker; false if the worker has stopped.
func (w *Worker) post(fn func(), event bool) bool {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return false
	}
	if event {
		w.events = append(w.events, fn)
		w.pending.Store(true)
	} else {
		w.jobs = append(w.jobs, fn)
	}
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
	return true
}

// do runs fn on the worker goroutine and waits for its result. If ctx ends
// first, do returns ctx.Err() and fn still runs later.
func (w *Worker) do(ctx context.Context, fn func() error) error {
	done := make(chan error, 1)
	if !w.post(func() { done <- fn() }, false) {
		return ErrClosed
	}
	select {
	case err := <-done:
		return err
	case <-w.stopped:
		select {
		case err := <-done:
			return err
		default:
			return ErrClosed
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// afterEvent finishes a deferred root deletion: like proxy-wasm-cpp-host, the
// host calls proxy_on_delete after the call in which the module called
// proxy_done has returned, never from inside it.
func (w *Worker) afterEvent() {
	if w.doneCalled && !w.deleted {
		w.deleteRoot()
	}
}

// call enters the guest: fns[cb] with the arguments already in w.stack.
// It returns the first result. A trap marks the VM crashed.
func (w *Worker) call(cb int) (uint64, error) {
	if w.crashed != nil {
		return 0, w.crashed
	}
	w.guestCalls[cb].Add(1)
	w.effective = 0
	var start time.Time
	var cpu0 int64
	var cpuOK bool
	if w.h.cfg.TimeCallbacks {
		// The call stays on this OS thread, so that the thread's CPU time
		// is the call's (a goroutine locked for the whole loop instead made
		// every wake-up of the worker a thread handoff).
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cpu0, cpuOK = threadCPU() // outside the wall-time window
		start = time.Now()
	}
	err := w.fns[cb].CallWithStack(w.ctx, w.stack[:])
	if w.h.cfg.TimeCallbacks {
		d := int64(time.Since(start))
		w.guestTime[cb].Add(d)
		if d > w.guestMax[cb].Load() {
			w.guestMax[cb].Store(d)
		}
		if cpu1, ok := threadCPU(); ok && cpuOK {
			c := cpu1 - cpu0
			w.guestCPU[cb].Add(c)
			if c > w.guestCPUMax[cb].Load() {
				w.guestCPUMax[cb].Store(c)
			}
		}
	}
	if err != nil {
		w.crash(cb, err)
		w.failStreams(w.crashed)
		return 0, w.crashed
	}
	r := w.stack[0]
	// The VM call has returned: run what the module deferred (Envoy's
	// after-VM-call actions), unless the caller still holds call state.
	if len(w.deferred) > 0 && !w.holdDeferred {
		w.runDeferred()
	}
	return r, nil
}

func (w *Worker) call0(cb int) error {
	_, err := w.call(cb)
	return err
}

func (w *Worker) call1(cb int, a uint32) (uint64, error) {
	w.stack[0] = uint64(a)
	return w.call(cb)
}

func (w *Worker) call2(cb int, a, b uint32) (uint64, error) {
	w.stack[0], w.stack[1] = uint64(a), uint64(b)
	return w.call(cb)
}

func (w *Worker) call3(cb int, a, b, c uint32) (uint64, error) {
	w.stack[0], w.stack[1], w.stack[2] = uint64(a), uint64(b), uint64(c)
	return w.call(cb)
}

func (w *Worker) crash(cb int, err error) {
	name := callbackNames[cb]
	if cb == cbAlloc {
		name = w.h.mod.allocator
	}
	w.crashed = fmt.Errorf("%w: worker %d: %s: %w", ErrCrashed, w.idx, name, err)
	w.crashMu.Lock()
	w.crashErr = w.crashed
	w.crashMu.Unlock()
	w.h.logs.add(w.idx, LevelCritical, "wasmhost: "+w.crashed.Error())
}

// alloc gets size bytes of guest memory from malloc/proxy_on_memory_allocate,
// with only the imports Envoy allows inside malloc. ok is false when the
// module returned 0 or an out-of-range block (Envoy then answers
// InvalidMemoryAccess). A trap inside the allocator aborts the host function
// that needed the memory, and with it the guest call in progress.
func (w *Worker) alloc(size uint32) (ptr uint32, ok bool) {
	prev, prevName := w.phase, w.phaseName
	w.phase, w.phaseName = phaseMalloc, w.h.mod.allocator
	w.guestCalls[cbAlloc].Add(1)
	w.mstack[0] = uint64(size)
	err := w.fns[cbAlloc].CallWithStack(w.ctx, w.mstack[:])
	w.phase, w.phaseName = prev, prevName
	if err != nil {
		panic(fmt.Errorf("%s(%d) trapped: %w", w.h.mod.allocator, size, err))
	}
	ptr = uint32(w.mstack[0])
	if ptr == 0 || uint64(ptr)+uint64(size) > uint64(w.mem.Size()) {
		return 0, false
	}
	return ptr, true
}

// start runs on the worker goroutine: module start, root context, vm start,
// configure.
func (w *Worker) start() error {
	w.starting = true
	defer func() { w.starting = false }()
	w.phase = phaseStart
	var err error
	switch {
	case w.fns[cbInitialize] != nil:
		w.phaseName = "_initialize"
		err = w.call0(cbInitialize)
		if err == nil && w.fns[cbMain] != nil {
			w.phaseName = "main"
			_, err = w.call2(cbMain, 0, 0)
		} else if err == nil && w.fns[cbMainVoid] != nil {
			w.phaseName = "__main_void"
			err = w.call0(cbMainVoid)
		}
	case w.fns[cbStart] != nil:
		w.phaseName = "_start"
		err = w.call0(cbStart)
	}
	w.phase, w.phaseName = phaseNormal, ""
	if err != nil {
		return w.startError("start", err)
	}

	w.current = rootID
	if w.fns[cbContextCreate] != nil {
		if _, err := w.call2(cbContextCreate, rootID, 0); err != nil {
			return w.startError("proxy_on_context_create", err)
		}
	}
	if w.fns[cbVMStart] != nil {
		r, err := w.call2(cbVMStart, rootID, uint32(len(w.h.cfg.VMConfig)))
		if err != nil {
			return w.startError("proxy_on_vm_start", err)
		}
		if uint32(r) == 0 {
			return w.startError("proxy_on_vm_start", errors.New("returned false"))
		}
	}
	if w.fns[cbConfigure] != nil {
		w.pluginConfigReadable = true
		r, err := w.call2(cbConfigure, rootID, uint32(len(w.h.cfg.PluginConfig)))
		w.pluginConfigReadable = false
		if err != nil {
			return w.startError("proxy_on_configure", err)
		}
		if uint32(r) == 0 {
			return w.startError("proxy_on_configure", errors.New("returned false"))
		}
	}
	return nil
}

func (w *Worker) startError(step string, err error) error {
	if !errors.Is(err, ErrCrashed) {
		err = fmt.Errorf("wasmhost: worker %d: %s: %w", w.idx, step, err)
	}
	if len(w.startErrLogs) > 0 {
		return fmt.Errorf("%w; module logged: %s", err, strings.Join(w.startErrLogs, "; "))
	}
	return err
}

// Tick calls proxy_on_tick(root) on this worker, as its timer would. It
// returns ErrNoTickPeriod if the module has not set a period. In real-time
// mode the timer keeps firing too.
func (w *Worker) Tick(ctx context.Context) error {
	return w.do(ctx, func() error {
		if w.crashed != nil {
			return w.crashed
		}
		if w.deleted {
			return ErrClosed
		}
		if w.tickPeriod.Load() == 0 {
			return ErrNoTickPeriod
		}
		return w.tick()
	})
}

// TickPeriod returns the period the module set with
// proxy_set_tick_period_milliseconds (0: none).
func (w *Worker) TickPeriod() time.Duration { return time.Duration(w.tickPeriod.Load()) }

func (w *Worker) onTimer() {
	if w.crashed == nil && !w.deleted {
		_ = w.tick()
	}
	w.afterEvent()
}

func (w *Worker) tick() error {
	if w.fns[cbTick] == nil {
		return nil
	}
	w.current = rootID
	_, err := w.call1(cbTick, rootID)
	return err
}

func (w *Worker) setTickPeriod(d time.Duration) {
	w.tickPeriod.Store(int64(d))
	if w.h.cfg.ManualTicks {
		return
	}
	if w.ticker != nil {
		w.ticker.Stop()
		w.ticker, w.tickC = nil, nil
	}
	if d > 0 {
		w.ticker = time.NewTicker(d)
		w.tickC = w.ticker.C
	}
}

// Sync returns once the worker has run everything queued on it before the
// call: API calls, and callout replies and queue notifications already
// delivered to it. (A default-dispatcher callout still in flight is not
// waited for.)
func (w *Worker) Sync(ctx context.Context) error {
	return w.do(ctx, func() error { return nil })
}

// MemorySize returns the size of the worker's linear memory in bytes.
func (w *Worker) MemorySize() uint32 {
	var size uint32
	if err := w.do(context.Background(), func() error { size = w.mem.Size(); return nil }); err != nil {
		// Stopped: nothing runs on the instance any more.
		return w.mem.Size()
	}
	return size
}

// Stats returns this worker's counters.
func (w *Worker) Stats() Stats {
	s := Stats{GuestCalls: map[string]uint64{}, HostCalls: map[string]uint64{}, Requests: w.requests.Load(),
		GuestTime: map[string]time.Duration{}, GuestMax: map[string]time.Duration{},
		GuestCPU: map[string]time.Duration{}, GuestCPUMax: map[string]time.Duration{}}
	s.Streams = StreamStats{
		Open: w.openStreams.Load(), Paused: w.pausedStreams.Load(), Opened: w.opened.Load(),
		PausedTotal: w.pausedTotal.Load(), Resumed: w.resumed.Load(), Reset: w.resets.Load(),
	}
	for cb := range w.guestCalls {
		if n := w.guestCalls[cb].Load(); n > 0 {
			name := callbackNames[cb]
			if cb == cbAlloc {
				name = w.h.mod.allocator
			}
			s.GuestCalls[name] += n
			s.GuestEntries += n
			if w.h.cfg.TimeCallbacks && cb != cbAlloc {
				s.GuestTime[name] = time.Duration(w.guestTime[cb].Load())
				s.GuestMax[name] = time.Duration(w.guestMax[cb].Load())
				if c := w.guestCPU[cb].Load(); c > 0 {
					s.GuestCPU[name] = time.Duration(c)
					s.GuestCPUMax[name] = time.Duration(w.guestCPUMax[cb].Load())
				}
			}
		}
	}
	for i := range w.hostCalls {
		if n := w.hostCalls[i].Load(); n > 0 {
			s.HostCalls[w.h.mod.hostNames[i]] += n
		}
	}
	s.PollOneoff = PollCalls{AtStart: w.pollAtStart.Load(), AfterStart: w.pollAfterStart.Load()}
	w.crashMu.Lock()
	if w.crashErr != nil {
		s.Crashes = append(s.Crashes, w.crashErr)
	}
	w.crashMu.Unlock()
	return s
}

// Crashed returns the trap that killed this worker's VM, or nil.
func (w *Worker) Crashed() error {
	w.crashMu.Lock()
	defer w.crashMu.Unlock()
	return w.crashErr
}

// shutdown runs proxy_on_done(root) and waits for the deletion (see
// Host.Close).
func (w *Worker) shutdown(ctx context.Context) error {
	w.drainStreams(ctx)
	begun := make(chan error, 1)
	if !w.post(func() { begun <- w.beginShutdown() }, false) {
		return nil
	}
	return w.finishShutdown(ctx, begun)
}

// drainStreams is the listener drain that follows the plugin's removal:
// new streams are refused, open ones (held ones included) go on, with
// ticks and callouts still delivered, so the module can let them go; it
// waits up to Config.DrainTimeout (or until ctx ends) for them to end.
func (w *Worker) drainStreams(ctx context.Context) {
	w.draining.Store(true)
	d := w.h.cfg.DrainTimeout
	if d <= 0 || w.openStreams.Load() == 0 {
		return
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for w.openStreams.Load() > 0 {
		select {
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		case <-w.stopped:
			return
		case <-poll.C:
		}
	}
}

// finishShutdown waits for the shutdown begun (proxy_on_done's result on
// begun) to end with the root's deletion, or deletes it when ctx ends.
func (w *Worker) finishShutdown(ctx context.Context, begun <-chan error) error {
	var err error
	select {
	case err = <-begun:
	case <-w.stopped:
	}
	select {
	case <-w.stopped:
	case <-ctx.Done():
		w.post(func() {
			if !w.deleted {
				w.shutdownErrs = append(w.shutdownErrs, fmt.Errorf(
					"wasmhost: worker %d: proxy_on_done returned false and proxy_done was not called before shutdown ended: %w",
					w.idx, ctx.Err()))
				w.deleteRoot()
			}
		}, false)
		<-w.stopped
	}
	return errors.Join(append([]error{err}, w.shutdownErrs...)...)
}

func (w *Worker) beginShutdown() error {
	w.draining.Store(true)
	if w.crashed != nil || w.deleted {
		w.exit = true
		return nil
	}
	// The listener's drain has ended: Envoy closes the connections, which
	// resets the streams still open (held ones included): proxy_on_log,
	// proxy_on_done, proxy_on_delete for each. Each stream holds the
	// plugin's PluginHandle (Envoy Context::plugin_handle_), so the root's
	// proxy_on_done (~PluginHandleBase → WasmBase::startShutdown) comes only
	// after the last of them.
	w.resetAll()
	if w.crashed != nil {
		w.exit = true
		return w.crashed
	}
	done := true
	if w.fns[cbDone] != nil {
		w.current = rootID
		r, err := w.call1(cbDone, rootID)
		if err != nil {
			w.exit = true
			return err
		}
		done = uint32(r) != 0
	}
	if done {
		w.deleteRoot()
		return nil
	}
	w.pendingDone = true
	return nil
}

// deleteRoot calls proxy_on_delete(root) and stops the worker. Outstanding
// callouts are cancelled, as Envoy cancels a deleted context's requests.
func (w *Worker) deleteRoot() {
	w.deleted = true
	w.exit = true
	for token, c := range w.callouts {
		c.cancel()
		delete(w.callouts, token)
	}
	if w.crashed == nil && w.fns[cbDelete] != nil {
		w.current = rootID
		if _, err := w.call1(cbDelete, rootID); err != nil {
			w.shutdownErrs = append(w.shutdownErrs, err)
		}
	}
}

// stopNow stops the loop without calling into the guest (New failed).
func (w *Worker) stopNow() {
	if w.post(func() { w.exit = true }, false) {
		<-w.stopped
	}
}

// StopAsync begins Stop and returns at once, with a channel that gets Stop's
// result when the worker has stopped. The proxy_on_done job is queued
// before StopAsync returns, so it runs before any call made on the worker
// afterwards: a simulation on manual ticks can go on ticking a draining
// worker (and answering its calls) in a deterministic order while the
// module waits for its answers. Once the root is deleted, those calls
// return ErrClosed.
func (w *Worker) StopAsync(ctx context.Context) <-chan error {
	begun := make(chan error, 1)
	res := make(chan error, 1)
	if !w.post(func() { begun <- w.beginShutdown() }, false) {
		res <- nil
		return res
	}
	go func() { res <- w.finishShutdown(ctx, begun) }()
	return res
}

// Stop shuts this worker down alone, as Envoy does when it removes one VM:
// proxy_on_done, then, if that returned false, callouts and ticks go on until
// the module calls proxy_done (or ctx ends), then proxy_on_delete. Shared data
// stays, as it does in Envoy while other VMs of the vm_id live. Later calls on
// the worker return ErrClosed.
func (w *Worker) Stop(ctx context.Context) error { return w.shutdown(ctx) }

// Kill ends this worker's VM at once, with no proxy_on_done: a VM that died.
// Answers to its calls in flight are dropped; shared data stays.
func (w *Worker) Kill() { w.stopNow() }
