package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/merge"
	"github.com/reqcount/reqcount/filter/merge/mergetest"
	"github.com/reqcount/reqcount/messages"
)

// TestHolderFlushRealTiming drives the lease holder's real flush path (the
// aggregator, its merged flusher and merge.Leader, over shared data that
// follows Envoy's CAS rules) under the timing Envoy gives it: several slices
// per flush interval, answers arriving ticks after their call (each within
// its timeout), 200, 503, 504 and resets at random, then a healthy collector.
// Every request must be delivered exactly once, per key. Without the merged
// flusher's DropFailed (a failed report's counts put back into the merged
// table and sent in a call the Leader does not track) keys answered 503 are
// delivered twice.
//
// proxytest numbers callouts by how many are unanswered, so an answer to an
// older callout first would give the next call a live id: answers here come
// newest first, after a random number of ticks. Seeds 1–20 per mode, or 1–N
// with REQCOUNT_HOLDER_SEEDS=N.
func TestHolderFlushRealTiming(t *testing.T) {
	seeds := uint64(20)
	if n, err := strconv.ParseUint(os.Getenv("REQCOUNT_HOLDER_SEEDS"), 10, 64); err == nil && n > 0 {
		seeds = n
	}
	for _, mode := range []string{"single", "batch"} {
		for seed := uint64(1); seed <= seeds; seed++ {
			t.Run(fmt.Sprintf("%s/seed %d", mode, seed), func(t *testing.T) { runHolder(t, mode, seed) })
		}
	}
}

var failDenom = 10

func runHolder(t *testing.T, mode string, seed uint64) {
	if v, err := strconv.Atoi(os.Getenv("FAILDENOM")); err == nil {
		failDenom = v
	}
	rng := rand.New(rand.NewPCG(seed, 14))
	store := mergetest.New()
	prevStore, prevNow := sharedDataStore, nowMs
	var now int64 = 1_700_000_000_000
	sharedDataStore, nowMs = store, func() int64 { return now }
	log.SetOutput(io.Discard)
	t.Cleanup(func() { sharedDataStore, nowMs = prevStore, prevNow; log.SetOutput(os.Stderr) })

	// 3s over 30 ticks of 100ms; a call times out after 1s: 10 ticks.
	conf := fmt.Sprintf(`{"cluster":"operator","aggregate":"envoy","mode":%q,"flush_interval":"3s","timeout":"1s","wake_after":"0s"}`, mode)
	opt := proxytest.NewEmulatorOption().WithVMContext(&vmContext{}).WithPluginConfiguration([]byte(conf))
	host, reset := proxytest.NewHostEmulator(opt)
	defer reset()
	if st := host.StartVM(); st != types.OnVMStartStatusOK {
		t.Fatal("vm start failed")
	}
	if st := host.StartPlugin(); st != types.OnPluginStartStatusOK {
		t.Fatalf("plugin start failed: %v", host.GetErrorLogs())
	}
	tickMs := int64(host.GetTickPeriod())
	const timeoutTicks = 10

	keys := make([]string, 12)
	for i := range keys {
		keys[i] = fmt.Sprintf("svc-%d.ns-%d", i, i%3)
	}
	sent, delivered := map[string]int{}, map[string]int{}
	type open struct {
		id    uint32
		body  []byte
		due   int // tick at which it is answered
		index int // in the emulator's callout list
	}
	var calls []open // oldest first
	answered := map[int]bool{}
	seen := 0
	tick := 0
	healthy := false
	answer := func(c open, status int) {
		var headers [][2]string
		if status != 0 {
			headers = [][2]string{{":status", strconv.Itoa(status)}}
		}
		if status == 200 {
			ms, err := messages.Decode(c.body)
			if err != nil {
				t.Fatalf("body %q: %v", c.body, err)
			}
			for _, m := range ms {
				delivered[m.Svc+"."+m.Namespace] += m.Count
			}
		}
		answered[c.index] = true
		host.CallOnHttpCallResponse(c.id, headers, nil, nil)
	}
	step := func() {
		// New calls since the last step.
		all := host.GetCalloutAttributesFromContext(proxytest.PluginContextID)
		for ; seen < len(all); seen++ {
			due := tick + 1 + rng.IntN(timeoutTicks)
			calls = append(calls, open{id: all[seen].CalloutID, body: all[seen].Body, due: due, index: seen})
		}
		// Answers due, newest first (proxytest's ids): when the oldest call
		// due is answered, every newer one is answered first (earlier than its
		// own due tick, as Envoy may), so no call outlives its timeout.
		oldestDue := -1
		for i, c := range calls {
			if c.due <= tick || healthy {
				oldestDue = i
				break
			}
		}
		for oldestDue >= 0 && len(calls) > oldestDue {
			c := calls[len(calls)-1]
			calls = calls[:len(calls)-1]
			status := 200
			if !healthy {
				switch r := rng.IntN(failDenom); {
				case r < 3:
					status = 503
				case r < 5:
					status = 504
				case r < 6:
					status = 0 // reset
				}
			}
			answer(c, status)
		}
		for range 1 + rng.IntN(8) {
			k := keys[rng.IntN(len(keys))]
			id := host.InitializeHttpContext()
			host.CallOnRequestHeaders(id, [][2]string{{":authority", k}, {":path", "/"}, {":method", "GET"}}, true)
			host.CompleteHttpContext(id)
			sent[k]++
		}
		host.Tick()
		tick++
		now += tickMs
	}
	for range 600 {
		step()
	}
	healthy = true
	for range 200 {
		step()
	}
	// Traffic stops: tick until everything is delivered.
	for i := 0; i < 400 && len(calls) >= 0; i++ {
		all := host.GetCalloutAttributesFromContext(proxytest.PluginContextID)
		for ; seen < len(all); seen++ {
			calls = append(calls, open{id: all[seen].CalloutID, body: all[seen].Body, index: seen})
		}
		for len(calls) > 0 {
			c := calls[len(calls)-1]
			calls = calls[:len(calls)-1]
			answer(c, 200)
		}
		host.Tick()
		now += tickMs
	}
	var bad []string
	for _, k := range keys {
		if sent[k] != delivered[k] {
			bad = append(bad, fmt.Sprintf("%s: sent %d, delivered %d", k, sent[k], delivered[k]))
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Errorf("seed %d, %d keys not exact:\n%v", seed, len(bad), bad)
	}
}

// TestShutdownWritesAcks: a lease holder that delivered another worker's
// counts and shuts down must write that worker's acks before it finishes
// (and lets the lease go): a failed write is tried again at the next tick.
// Finishing with the acks unwritten, the next holder sent those counts again.
func TestShutdownWritesAcks(t *testing.T) {
	store := mergetest.New()
	prevStore, prevNow := sharedDataStore, nowMs
	var now int64 = 1_700_000_000_000
	sharedDataStore, nowMs = store, func() int64 { return now }
	var logBuf bytes.Buffer
	log.SetOutput(&logBuf)
	t.Cleanup(func() { sharedDataStore, nowMs = prevStore, prevNow; log.SetOutput(os.Stderr) })

	// Another worker of the Envoy published 5 requests for web.shop.
	other := merge.NewWorker(store, "other", 1, 100, 1000)
	other.Add("web.shop", 5)
	if err := other.Publish(0, now, 1); err != nil {
		t.Fatal(err)
	}
	conf := `{"cluster":"operator","aggregate":"envoy","flush_interval":"100ms","wake_after":"0s"}`
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(&vmContext{}).WithPluginConfiguration([]byte(conf)))
	defer reset()
	if host.StartVM() != types.OnVMStartStatusOK || host.StartPlugin() != types.OnPluginStartStatusOK {
		t.Fatalf("start failed: %v", host.GetErrorLogs())
	}
	host.Tick() // takes the lease, collects the other worker's outbox, reports it
	calls := host.GetCalloutAttributesFromContext(proxytest.PluginContextID)
	if len(calls) != 1 || !strings.Contains(string(calls[0].Body), `"count":5`) {
		t.Fatalf("calls %v, want one report of 5", calls)
	}
	host.CallOnHttpCallResponse(calls[0].CalloutID, [][2]string{{":status", "200"}}, nil, nil)

	ackKey := merge.AckKey("other", 0)
	failing := true
	store.FailSet = func(key string) error {
		if failing && key == ackKey {
			return errors.New("shared data: internal failure")
		}
		return nil
	}
	done := func() bool { return strings.Contains(logBuf.String(), "ProxyDone not implemented") }
	if host.FinishVM() || done() {
		t.Fatal("finished at once with the acks unwritten")
	}
	for range 3 {
		host.Tick()
		now += 100
	}
	if done() {
		t.Fatal("finished while the acks could not be written")
	}
	failing = false
	host.Tick()
	if !done() {
		t.Fatal("not finished once the acks were written")
	}
	v, _, _, _ := store.Get(ackKey)
	acks, err := merge.ParseAcks(v)
	if err != nil || acks["web.shop"].Delivered != 5 {
		t.Fatalf("acks %q (%v): want web.shop delivered 5", v, err)
	}
}
