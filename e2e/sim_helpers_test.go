package e2e_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reqcount/reqcount/e2e/collector"
	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/filter/merge"
	"github.com/reqcount/reqcount/messages"
)

// The simulation of TestSimAggregate: one Envoy on the compiled module, every
// worker ticking on its own schedule in simulated time, every call answered
// (or failed) after a seeded delay, and an oracle that counts what was sent
// and what the collector accepted. Everything that happens is drawn from one
// seeded generator and done in one goroutine's order (a worker runs only
// while the simulation waits for it), and the VMs' random bytes come from
// wasmhost's RandomSeed, so a seed replays the same run.

var simSeedsFlag = flag.String("sim.seeds", "",
	"comma-separated seeds for TestSimAggregate and TestSimHold (default 1,2,3; or env REQCOUNT_SIM_SEEDS)")

// simSeeds returns the seeds to run: -sim.seeds, else REQCOUNT_SIM_SEEDS,
// else 1,2,3.
func simSeeds(t *testing.T) []uint64 {
	t.Helper()
	spec := *simSeedsFlag
	if spec == "" {
		spec = os.Getenv("REQCOUNT_SIM_SEEDS")
	}
	if spec == "" {
		spec = "1,2,3"
	}
	var out []uint64
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
		if err != nil || n == 0 {
			t.Fatalf("seed %q: want a positive integer", f)
		}
		out = append(out, n)
	}
	return out
}

// simSoak returns REQCOUNT_SIM_DURATION (0 when unset): run seeds from the
// first one on, one after the other, until that much wall time is spent.
func simSoak(t *testing.T) time.Duration {
	t.Helper()
	s := os.Getenv("REQCOUNT_SIM_DURATION")
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		t.Fatalf("REQCOUNT_SIM_DURATION=%q: want a Go duration", s)
	}
	return d
}

// simConfig is one simulated run.
type simConfig struct {
	Seed      uint64
	Aggregate string // "envoy" or "worker"
	// WakeAfter is wake_after's value, "" for the filter's default (30s).
	WakeAfter string
	Workers   int
	Keys      int
	// Traffic is the simulated time requests are sent for; then the run
	// drains (no traffic, every answer 2xx) until the oracle is met or
	// simDrainMax passes.
	Traffic time.Duration
	// Faults: failing answers (503, 504, reset) until 60% of Traffic, the
	// lease holder stopped at 20% (worker 0 in worker mode), another worker's
	// VM killed at 35% and restarted at 50%.
	Faults bool
	// SameRandom gives every VM the same random bytes (wasmhost RandomSeed
	// without RandomPerVM); otherwise each VM gets its own seeded stream.
	SameRandom bool
	// KillHolder kills the lease holder at 35% (the one at-least-once case:
	// its reports in flight go out again from the next holder) instead of
	// another VM.
	KillHolder bool
}

const (
	simStep     = 10 * time.Millisecond // the simulated clock's resolution
	simDrainMax = 40 * time.Second      // more than the lease, hold and dead-worker times
	simSettle   = 5 * time.Second       // ticks after the oracle is met: nothing more may arrive
)

func (c simConfig) pluginConfig() string {
	conf := fmt.Sprintf(`{"cluster":"operator","aggregate":%q,"flush_interval":"3s","timeout":"2s"`, c.Aggregate)
	if c.WakeAfter != "" {
		conf += fmt.Sprintf(`,"wake_after":%q`, c.WakeAfter)
	}
	return conf + "}"
}

// VM states.
const (
	vmRunning = iota
	vmStopping
	vmStopped
	vmKilled
)

// simVM is one VM instance (a restart makes a new one for the same worker).
type simVM struct {
	n      int // instance number, in start order
	worker int
	id     string // aggregate envoy worker id, from its start log
	state  int
	stop   <-chan error // StopAsync's result while stopping
	next   time.Time    // its next tick
	period time.Duration
	// sent counts the requests sent to it; delivered the counts of its own
	// calls that got a 2xx (worker mode: its reports).
	sent, delivered map[collector.Key]int
	// unacked counts what its calls got a 2xx for since its last tick: a
	// lease holder writes the acks of its deliveries at its next tick, so
	// if its VM dies first, those are sent again too (envoy mode).
	unacked map[collector.Key]int
	// published[key][gen] is the largest cum its outbox showed for the
	// key's generation gen; cas the last token seen per outbox shard.
	published map[string]map[uint32]uint64
	cas       []uint32
}

// simCall is a call in flight, with its seeded answer.
type simCall struct {
	due    time.Time
	seq    uint64
	vm     *simVM
	counts map[collector.Key]int
	resp   wasmhost.Response
	reply  func(wasmhost.Response)
}

// simMsg is one message for a key: when it was dispatched, by which worker.
type simMsg struct {
	at     time.Duration
	worker int
}

// simKill is what a killed VM took with it, measured at the kill.
type simKill struct {
	vm *simVM
	// atRisk: requests it counted that were neither in its outbox (envoy)
	// nor delivered by its own calls (worker) at the kill; inFlight: counts
	// in its calls then open (a 2xx the dead VM never sees, which a next
	// lease holder may send again).
	atRisk, inFlight map[collector.Key]int
}

type sim struct {
	t      *testing.T
	cfg    simConfig
	ctx    context.Context
	h      *wasmhost.Host
	slices int
	// interval is the flush interval (callsBy's unit).
	interval time.Duration

	mu      sync.Mutex // guards what Dispatch touches
	rng     *rand.Rand
	now     time.Time
	faulty  bool
	seq     uint64
	open    []*simCall
	current []*simVM // by worker index
	vms     []*simVM // every instance, in start order
	// delivered counts what the collector accepted (2xx), per key.
	delivered map[collector.Key]int
	badBodies int
	// callsBy counts the calls per worker index per flush interval (index
	// into the run's intervals): who speaks.
	callsBy map[int]map[int]int
	// healedAt is when every answer became 2xx: the steady state's one
	// voice is checked from two intervals after it.
	healedAt time.Duration
	// msgAt lists, per key, when each message for it was dispatched and by
	// which worker: the steady state's one voice.
	msgAt map[collector.Key][]simMsg

	sent    map[collector.Key]int
	targets []target
	kill    *simKill
	events  []string // what happened, for the failure report
}

func newSim(t *testing.T, cfg simConfig) *sim {
	t.Helper()
	pc, err := config.Parse([]byte(cfg.pluginConfig()))
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{
		t: t, cfg: cfg, ctx: boundedRunCtx(t, 5*time.Minute), slices: pc.Slices(), interval: pc.FlushInterval,
		rng:       rand.New(rand.NewPCG(cfg.Seed, 0x5eed)),
		now:       time.Unix(1_700_000_000, 0),
		faulty:    cfg.Faults,
		delivered: map[collector.Key]int{},
		callsBy:   map[int]map[int]int{},
		msgAt:     map[collector.Key][]simMsg{},
		sent:      map[collector.Key]int{},
		targets:   services(cfg.Keys, "ns-0", "ns-1", "ns-2", "default"),
		current:   make([]*simVM, cfg.Workers),
	}
	h, err := wasmhost.New(s.ctx, filterModule(t), wasmhost.Config{
		Workers:      cfg.Workers,
		PluginConfig: []byte(cfg.pluginConfig()),
		Clusters:     map[string]string{"operator": ""},
		ManualTicks:  true,
		Walltime:     s.clock,
		Dispatch:     s.dispatch,
		RandomSeed:   cfg.Seed,
		RandomPerVM:  !cfg.SameRandom,
		// A long run logs a line per failed call: keep what matters.
		LogLevel: wasmhost.LevelInfo,
	})
	if err != nil {
		t.Fatalf("start with %s: %v", cfg.pluginConfig(), err)
	}
	s.h = h
	t.Cleanup(func() { closeHost(t, h) })
	for i := range cfg.Workers {
		s.adopt(i)
	}
	return s
}

func (s *sim) clock() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

func (s *sim) logf(format string, args ...any) {
	s.events = append(s.events, fmt.Sprintf("%8.2fs ", s.elapsed().Seconds())+fmt.Sprintf(format, args...))
}

func (s *sim) elapsed() time.Duration { return s.now.Sub(time.Unix(1_700_000_000, 0)) }

// adopt records worker i's current VM instance (just started): its id and
// its first tick, at a random offset within one period.
func (s *sim) adopt(i int) {
	w := s.h.Worker(i)
	vm := &simVM{
		n: len(s.vms), worker: i, period: w.TickPeriod(),
		sent: map[collector.Key]int{}, delivered: map[collector.Key]int{}, unacked: map[collector.Key]int{},
		published: map[string]map[uint32]uint64{}, cas: make([]uint32, s.slices),
	}
	if vm.period <= 0 {
		s.t.Fatalf("worker %d set no tick period", i)
	}
	for _, l := range s.h.LogLines() {
		if id, ok := strings.CutPrefix(l.Message, "reqcount: aggregate envoy: worker "); ok && l.Worker == i {
			vm.id = id // the last one is this instance's
		}
	}
	if s.cfg.Aggregate == "envoy" && vm.id == "" {
		s.t.Fatalf("worker %d logged no aggregate id", i)
	}
	vm.next = s.now.Add(time.Duration(s.rng.Int64N(int64(vm.period/simStep))) * simStep)
	s.mu.Lock()
	s.current[i] = vm
	s.vms = append(s.vms, vm)
	s.mu.Unlock()
}

// dispatch is the host's Dispatch: it runs on the calling worker's
// goroutine while the simulation waits for that worker.
func (s *sim) dispatch(c wasmhost.Callout, reply func(wasmhost.Response)) {
	ms, err := messages.Decode(c.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	counts := map[collector.Key]int{}
	for _, m := range ms {
		counts[collector.Key{Svc: m.Svc, Namespace: m.Namespace}] += m.Count
	}
	if err != nil {
		s.badBodies++
		reply(wasmhost.Response{Status: 400})
		return
	}
	vm := s.current[c.Worker]
	interval := int(s.elapsed() / s.interval)
	if s.callsBy[interval] == nil {
		s.callsBy[interval] = map[int]int{}
	}
	s.callsBy[interval][c.Worker]++
	for k := range counts {
		s.msgAt[k] = append(s.msgAt[k], simMsg{at: s.elapsed(), worker: c.Worker})
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	// Before the timeout: Envoy answers 504 at it.
	before := func(limit time.Duration) time.Duration {
		if limit <= 2*time.Millisecond {
			return time.Millisecond
		}
		return time.Millisecond + time.Duration(s.rng.Int64N(int64(limit-time.Millisecond)))
	}
	call := &simCall{vm: vm, counts: counts, reply: reply}
	switch r := s.rng.IntN(100); {
	case !s.faulty || r < 55:
		call.resp, call.due = wasmhost.Response{Status: 200 + 2*s.rng.IntN(2)}, s.now.Add(before(timeout))
	case r < 70:
		call.resp, call.due = wasmhost.ConnectFailure(), s.now.Add(before(timeout/4))
	case r < 85:
		call.resp, call.due = wasmhost.UpstreamTimeout(), s.now.Add(timeout)
	default:
		call.resp, call.due = wasmhost.Reset(), s.now.Add(before(timeout))
	}
	s.seq++
	call.seq = s.seq
	s.open = append(s.open, call)
}

// accept adds a 2xx call's counts to what the collector has.
func (s *sim) accept(vm *simVM, counts map[collector.Key]int) {
	for k, n := range counts {
		s.delivered[k] += n
		if vm != nil {
			vm.delivered[k] += n
		}
	}
}

// release answers the calls due by now, in due order, each followed by a
// Sync of its worker so that what the answer makes the module do happens
// before anything else.
func (s *sim) release() {
	for {
		s.mu.Lock()
		var due *simCall
		at := -1
		for i, c := range s.open {
			if !c.due.After(s.now) && (due == nil || c.due.Before(due.due) || (c.due.Equal(due.due) && c.seq < due.seq)) {
				due, at = c, i
			}
		}
		if due == nil {
			s.mu.Unlock()
			return
		}
		s.open = slices.Delete(s.open, at, at+1)
		if due.resp.Status/100 == 2 {
			// The collector counted it, whether or not the VM lives to hear.
			s.accept(due.vm, due.counts)
			if due.vm != nil {
				for k, n := range due.counts {
					due.vm.unacked[k] += n
				}
			}
		}
		s.mu.Unlock()
		due.reply(due.resp)
		s.sync(due.vm.worker)
	}
}

func (s *sim) sync(i int) {
	if err := s.h.Worker(i).Sync(s.ctx); err != nil && !errors.Is(err, wasmhost.ErrClosed) {
		s.t.Fatalf("worker %d: %v", i, err)
	}
}

// tickDue ticks every running or draining VM whose next tick is due, in
// order of their tick times.
func (s *sim) tickDue() {
	for {
		var vm *simVM
		for _, v := range s.current {
			if (v.state == vmRunning || v.state == vmStopping) && !v.next.After(s.now) &&
				(vm == nil || v.next.Before(vm.next)) {
				vm = v
			}
		}
		if vm == nil {
			return
		}
		// Each worker's own period, with a little jitter: never lockstep.
		vm.next = vm.next.Add(vm.period + simStep*time.Duration(s.rng.IntN(5)-2))
		err := s.h.Worker(vm.worker).Tick(s.ctx)
		switch {
		case errors.Is(err, wasmhost.ErrClosed) && vm.state == vmStopping:
			s.stopped(vm, <-vm.stop)
		case err != nil:
			s.t.Fatalf("tick worker %d: %v", vm.worker, err)
		default:
			clear(vm.unacked) // its acks are written at the tick
			s.observe(vm)
		}
	}
}

// observe reads vm's outbox shards that changed since the last look (envoy
// mode): what it published is the Envoy's from then on.
func (s *sim) observe(vm *simVM) {
	if s.cfg.Aggregate != "envoy" {
		return
	}
	for i := range s.slices {
		v, cas, ok := s.h.SharedData(merge.OutboxKey(vm.id, i))
		if !ok || cas == vm.cas[i] {
			continue
		}
		vm.cas[i] = cas
		o, err := merge.ParseOutbox(v)
		if err != nil {
			s.t.Fatalf("outbox %s: %v", merge.OutboxKey(vm.id, i), err)
		}
		for k, c := range o.Entries {
			if vm.published[k] == nil {
				vm.published[k] = map[uint32]uint64{}
			}
			vm.published[k][c.Gen] = max(vm.published[k][c.Gen], c.N)
		}
	}
}

func (s *sim) stopped(vm *simVM, err error) {
	if err != nil {
		s.t.Fatalf("stop worker %d: %v", vm.worker, err)
	}
	vm.state, vm.stop = vmStopped, nil
	s.logf("worker %d (VM %d) stopped: drain done", vm.worker, vm.n)
}

// traffic sends a few requests, now and then, to random running workers.
func (s *sim) traffic() {
	if s.rng.IntN(2) == 0 {
		return
	}
	var live []*simVM
	for _, v := range s.current {
		if v.state == vmRunning {
			live = append(live, v)
		}
	}
	if len(live) == 0 {
		return
	}
	vm := live[s.rng.IntN(len(live))]
	tg := s.targets[s.rng.IntN(len(s.targets))]
	forms := tg.authorities()
	n := 1 + s.rng.IntN(8)
	if err := s.h.Worker(vm.worker).Requests(s.ctx, n, request(forms[s.rng.IntN(len(forms))])); err != nil {
		s.t.Fatalf("requests on worker %d: %v", vm.worker, err)
	}
	s.sent[tg.key()] += n
	vm.sent[tg.key()] += n
}

// step advances the clock by one step and runs what is due.
func (s *sim) step(withTraffic bool) {
	s.mu.Lock()
	s.now = s.now.Add(simStep)
	s.mu.Unlock()
	s.release()
	s.tickDue()
	for _, v := range s.current {
		if v.state == vmStopping {
			select {
			case err := <-v.stop:
				s.stopped(v, err)
			default:
			}
		}
	}
	if withTraffic {
		s.traffic()
	}
}

// holder returns the running VM that holds the lease, or nil.
func (s *sim) holder() *simVM {
	v, _, ok := s.h.SharedData(merge.KeyLease)
	if !ok {
		return nil
	}
	l, err := merge.ParseLease(v)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, vm := range s.current {
		if vm.id == l.Holder && vm.state == vmRunning && !l.Released {
			return vm
		}
	}
	return nil
}

// stopHolder removes the lease holder's VM (worker 0's in worker mode) as
// Envoy does: proxy_on_done, then it drains on its ticks and answers.
func (s *sim) stopHolder() {
	vm := s.current[0]
	if s.cfg.Aggregate == "envoy" {
		if hv := s.holder(); hv != nil {
			vm = hv
		} else {
			s.logf("no running lease holder: stopping worker 0")
		}
	}
	vm.state = vmStopping
	vm.stop = s.h.Worker(vm.worker).StopAsync(s.ctx)
	// proxy_on_done runs now, before anything else the simulation does.
	s.sync(vm.worker)
	s.logf("worker %d (VM %d, id %s) stopping", vm.worker, vm.n, vm.id)
}

// killOne kills a running VM that does not hold the lease (the holder with
// KillHolder), measuring what
// it takes with it.
func (s *sim) killOne() {
	holder := s.holder()
	var cands []*simVM
	for _, v := range s.current {
		if v.state == vmRunning && (v != holder) != s.cfg.KillHolder {
			cands = append(cands, v)
		}
	}
	if len(cands) == 0 {
		s.logf("no VM to kill")
		return
	}
	vm := cands[s.rng.IntN(len(cands))]
	k := &simKill{vm: vm, atRisk: map[collector.Key]int{}, inFlight: map[collector.Key]int{}}
	s.mu.Lock()
	for _, c := range s.open {
		if c.vm == vm {
			for key, n := range c.counts {
				k.inFlight[key] += n
			}
		}
	}
	// Delivered since its last tick: the acks not yet written count as in
	// flight (sent again by the next holder).
	for key, n := range vm.unacked {
		k.inFlight[key] += n
	}
	for key, n := range vm.sent {
		var safe int
		if s.cfg.Aggregate == "envoy" {
			for _, cum := range vm.published[key.Svc+"."+key.Namespace] {
				safe += int(cum)
			}
		} else {
			safe = vm.delivered[key]
		}
		if n > safe {
			k.atRisk[key] = n - safe
		}
	}
	s.mu.Unlock()
	s.h.Worker(vm.worker).Kill()
	vm.state = vmKilled
	s.kill = k
	s.logf("worker %d (VM %d, id %s) killed: at risk %v, in flight %v", vm.worker, vm.n, vm.id, k.atRisk, k.inFlight)
}

func (s *sim) restartKilled() {
	if s.kill == nil {
		return
	}
	i := s.kill.vm.worker
	if err := s.h.Restart(s.ctx, i); err != nil {
		s.t.Fatalf("restart worker %d: %v", i, err)
	}
	s.adopt(i)
	s.logf("worker %d restarted: VM %d, id %s", i, s.current[i].n, s.current[i].id)
}

// bounds returns, per key, the totals the collector may end with: exactly
// what was sent, except for the keys a killed VM had at risk or in flight.
func (s *sim) bounds() (lo, hi map[collector.Key]int) {
	lo, hi = map[collector.Key]int{}, map[collector.Key]int{}
	for k, n := range s.sent {
		lo[k], hi[k] = n, n
	}
	if s.kill != nil {
		for k, n := range s.kill.atRisk {
			lo[k] -= n
		}
		if s.cfg.Aggregate == "envoy" {
			// A lease holder's reports in flight, or delivered with their
			// acks not yet written (at its next tick), are sent again by the
			// next holder: the one case of at-least-once (KillHolder; a
			// victim that held no lease has none, bound anyway).
			for k, n := range s.kill.inFlight {
				hi[k] += n
			}
		}
	}
	return lo, hi
}

// exact reports whether the collector has exactly what was sent, every call
// answered and every stop drained.
func (s *sim) exact() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.open) > 0 {
		return false
	}
	for _, v := range s.current {
		if v.state == vmStopping {
			return false
		}
	}
	for k, n := range s.sent {
		if s.delivered[k] != n {
			return false
		}
	}
	return len(s.delivered) == len(s.sent)
}

// run plays the whole scenario.
func (s *sim) run() {
	T := s.cfg.Traffic
	at := func(f float64) time.Duration { return time.Duration(f * float64(T)) }
	type event struct {
		at time.Duration
		do func()
	}
	var plan []event
	if s.cfg.Faults {
		plan = []event{
			{at(0.2), s.stopHolder},
			{at(0.35), s.killOne},
			{at(0.5), s.restartKilled},
			{at(0.6), func() {
				s.mu.Lock()
				s.faulty, s.healedAt = false, s.elapsed()
				s.mu.Unlock()
				s.logf("healing: every answer 2xx")
			}},
		}
	}
	for s.elapsed() < T {
		for len(plan) > 0 && s.elapsed() >= plan[0].at {
			plan[0].do()
			plan = plan[1:]
		}
		s.step(true)
	}
	s.mu.Lock()
	s.faulty = false
	s.mu.Unlock()
	s.logf("traffic stops")
	end := s.elapsed() + simDrainMax
	for !s.exact() && s.elapsed() < end {
		s.step(false)
	}
	s.logf("drained (exact: %v)", s.exact())
	for end := s.elapsed() + simSettle; s.elapsed() < end; {
		s.step(false)
	}
	// Shut down as Envoy does, every VM at once (proxy_on_done, then its
	// drain), ticking on: with everything delivered, nothing more may go out.
	s.mu.Lock()
	before := s.snapshot()
	s.mu.Unlock()
	for _, v := range s.current {
		if v.state == vmRunning {
			v.state = vmStopping
			v.stop = s.h.Worker(v.worker).StopAsync(s.ctx)
			s.sync(v.worker)
		}
	}
	for end := s.elapsed() + simDrainMax; s.elapsed() < end && s.stopping(); {
		s.step(false)
	}
	if s.stopping() {
		s.t.Errorf("seed %d: VMs still draining %v after the shutdown began", s.cfg.Seed, simDrainMax)
	}
	s.logf("shut down")
	s.mu.Lock()
	after := s.snapshot()
	s.mu.Unlock()
	if !maps2Equal(before, after) {
		s.t.Errorf("seed %d: the shutdown sent more: before %v, after %v", s.cfg.Seed, before, after)
	}
	for _, l := range s.h.LogLines() {
		if strings.Contains(l.Message, "shutting down with") || l.Level >= wasmhost.LevelError {
			s.events = append(s.events, fmt.Sprintf("log [worker %d] %v: %s", l.Worker, l.Level, l.Message))
		}
	}
}

// stopping reports whether a VM is still draining.
func (s *sim) stopping() bool {
	for _, v := range s.current {
		if v.state == vmStopping {
			return true
		}
	}
	return false
}

func (s *sim) snapshot() map[collector.Key]int {
	out := map[collector.Key]int{}
	for k, n := range s.delivered {
		out[k] = n
	}
	return out
}

func maps2Equal(a, b map[collector.Key]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, n := range a {
		if b[k] != n {
			return false
		}
	}
	return true
}

// check applies the oracle and reports a failure with the seed and a table
// per key.
func (s *sim) check() {
	t := s.t
	lo, hi := s.bounds()
	s.mu.Lock()
	defer s.mu.Unlock()
	bad := s.badBodies > 0
	keys := make([]collector.Key, 0, len(s.sent))
	for k := range s.sent {
		keys = append(keys, k)
	}
	for k := range s.delivered {
		if _, ok := s.sent[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b collector.Key) int { return strings.Compare(a.Svc+"."+a.Namespace, b.Svc+"."+b.Namespace) })
	var tbl strings.Builder
	fmt.Fprintf(&tbl, "  %-16s %8s %9s %6s %13s\n", "key", "sent", "delivered", "diff", "allowed")
	sentAll, delAll := 0, 0
	for _, k := range keys {
		d, n := s.delivered[k], s.sent[k]
		sentAll += n
		delAll += d
		mark := ""
		if d < lo[k] || d > hi[k] {
			bad, mark = true, "  <--"
		}
		allowed := strconv.Itoa(n)
		if lo[k] != hi[k] || lo[k] != n {
			allowed = fmt.Sprintf("%d..%d", lo[k], hi[k])
		}
		fmt.Fprintf(&tbl, "  %-16s %8d %9d %+6d %13s%s\n", k.Svc+"."+k.Namespace, n, d, d-n, allowed, mark)
	}
	fmt.Fprintf(&tbl, "  %-16s %8d %9d %+6d\n", "total", sentAll, delAll, delAll-sentAll)
	// Worker mode: each VM reports what it counted, itself; so each VM's
	// deliveries must be exactly what it was sent (the killed one: no more).
	var perVM strings.Builder
	if s.cfg.Aggregate == "worker" {
		for _, vm := range s.vms {
			for k, n := range vm.sent {
				d := vm.delivered[k]
				killed := s.kill != nil && s.kill.vm == vm
				if (!killed && d != n) || d > n {
					bad = true
					fmt.Fprintf(&perVM, "  VM %d (worker %d): %s.%s sent %d, delivered %d\n", vm.n, vm.worker, k.Svc, k.Namespace, n, d)
				}
			}
		}
	}
	if s.kill != nil {
		lost, dup := 0, 0
		for k := range s.kill.atRisk {
			if d := s.delivered[k] - s.sent[k]; d < 0 {
				lost -= d
			}
		}
		for k := range s.kill.inFlight {
			if d := s.delivered[k] - s.sent[k]; d > 0 {
				dup += d
			}
		}
		if s.cfg.Aggregate == "worker" {
			lost = 0
			for k, n := range s.kill.vm.sent {
				lost += n - s.kill.vm.delivered[k]
			}
		}
		t.Logf("seed %d: killed VM %d (worker %d): measured loss %d requests (at risk %d), duplication %d (in flight %d)",
			s.cfg.Seed, s.kill.vm.n, s.kill.vm.worker, lost, sum(s.kill.atRisk), dup, sum(s.kill.inFlight))
		if s.cfg.Aggregate == "envoy" {
			// What was delivered twice must show in the metric that counts
			// what a holder took over from a dead holder's reservation.
			over := s.h.Counter("reqcount.aggregate.counts_taken_over")
			t.Logf("seed %d: reqcount.aggregate.counts_taken_over = %d", s.cfg.Seed, over)
			if uint64(dup) > over {
				bad = true
				fmt.Fprintf(&perVM, "  %d requests delivered twice, but reqcount.aggregate.counts_taken_over is %d\n", dup, over)
			}
		}
	}
	// One wake-up per key for the Envoy: with wake_after's default (30s,
	// the whole run), each key's first request wakes it once, whichever
	// worker sees it, the restarted VM included (the claims are in shared
	// data).
	if s.cfg.Aggregate == "envoy" && s.cfg.WakeAfter == "" {
		wakes := s.h.Counter("reqcount.flush.wakeups_sent")
		t.Logf("seed %d: %d wake-ups for %d keys", s.cfg.Seed, wakes, len(s.sent))
		if wakes > uint64(len(s.sent)) || wakes == 0 {
			bad = true
			fmt.Fprintf(&perVM, "  %d wake-ups for %d keys: want one per key at most, and some\n", wakes, len(s.sent))
		}
	}
	// The steady state speaks with one voice: from two intervals after the
	// collector healed (what failed before has gone out again) to the end of
	// the traffic, two messages for a key come at least half an interval
	// apart (a key is reported once per interval, at its slice: ticks jitter,
	// so intervals are not cut by a fixed grid) from the Envoy with
	// aggregate: envoy (wake-ups off), from each worker with aggregate:
	// worker.
	if s.cfg.Faults && s.cfg.WakeAfter == "0s" && s.healedAt > 0 {
		from := (s.healedAt/s.interval + 2) * s.interval
		checked := 0
		for k, ms := range s.msgAt {
			last := map[int]time.Duration{} // by voice
			for _, m := range ms {
				if m.at < from || m.at >= s.cfg.Traffic {
					continue
				}
				voice := 0
				if s.cfg.Aggregate == "worker" {
					voice = m.worker
				}
				if prev, ok := last[voice]; ok && m.at-prev < s.interval/2 {
					bad = true
					fmt.Fprintf(&perVM, "  %s.%s: messages at %v and %v (worker %d), less than half an interval apart\n",
						k.Svc, k.Namespace, prev, m.at, m.worker)
				}
				last[voice] = m.at
				checked++
			}
		}
		t.Logf("seed %d: steady state from %v to %v: %d messages, each key once per interval per voice", s.cfg.Seed, from, s.cfg.Traffic, checked)
		if checked == 0 {
			bad = true
			fmt.Fprintf(&perVM, "  no steady-state message to check (healed at %v, traffic until %v)\n", s.healedAt, s.cfg.Traffic)
		}
	}
	if bad {
		t.Errorf("seed %d, %s: the collector's totals break the oracle (replay: go test -count=1 -run '^%s$' ./e2e/ -sim.seeds=%d)\n%s%s"+
			"bad bodies: %d\nevents:\n  %s",
			s.cfg.Seed, s.cfg.pluginConfig(), t.Name(), s.cfg.Seed, tbl.String(), perVM.String(), s.badBodies,
			strings.Join(s.events, "\n  "))
		return
	}
	t.Logf("seed %d: %d requests over %d keys, delivered %d; %d VMs; events:\n  %s",
		s.cfg.Seed, sentAll, len(keys), delAll, len(s.vms), strings.Join(s.events, "\n  "))
}

func sum(m map[collector.Key]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
