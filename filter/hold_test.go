package main

import (
	"io"
	"log"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/reqcount/reqcount/filter/merge/mergetest"
)

// holdHost is a plugin with hold on proxytest, in simulated time: a tick is
// 100 ms (flush_interval 1s), the probe interval 200 ms.
type holdHost struct {
	t    *testing.T
	host proxytest.HostEmulator
	now  int64
	done map[int]bool // callouts answered, by position
}

const holdCluster = "outbound|80||web.shop.svc.cluster.local"

func newHoldHost(t *testing.T, extra string) *holdHost {
	h := &holdHost{t: t, now: 1_700_000_000_000, done: map[int]bool{}}
	prevStore, prevNow := sharedDataStore, nowMs
	sharedDataStore, nowMs = mergetest.New(), func() int64 { return h.now }
	log.SetOutput(io.Discard)
	conf := `{"cluster":"operator","flush_interval":"1s","hold":["web.shop"],"hold_probe_interval":"200ms","hold_timeout":"3s"` + extra + `}`
	host, reset := proxytest.NewHostEmulator(proxytest.NewEmulatorOption().WithVMContext(&vmContext{}).
		WithPluginConfiguration([]byte(conf)).WithProperty([]string{"xds", "cluster_name"}, []byte(holdCluster)))
	t.Cleanup(func() { reset(); sharedDataStore, nowMs = prevStore, prevNow; log.SetOutput(os.Stderr) })
	if host.StartVM() != types.OnVMStartStatusOK || host.StartPlugin() != types.OnPluginStartStatusOK {
		t.Fatalf("start failed: %v", host.GetErrorLogs())
	}
	h.host = host
	return h
}

// request starts a stream for authority and returns its id and action.
func (h *holdHost) request(authority string) (uint32, types.Action) {
	id := h.host.InitializeHttpContext()
	a := h.host.CallOnRequestHeaders(id, [][2]string{{":authority", authority}, {":path", "/"}, {":method", "GET"}}, true)
	return id, a
}

func (h *holdHost) tick(n int) {
	for range n {
		h.now += 100 // the period passes, then the timer fires
		h.host.Tick()
	}
}

// probes returns the positions of the unanswered checks, oldest first.
func (h *holdHost) probes() []int {
	var out []int
	for i, c := range h.host.GetCalloutAttributesFromContext(proxytest.PluginContextID) {
		if !h.done[i] && c.Upstream == holdCluster {
			out = append(out, i)
		}
	}
	return out
}

// answerAll answers every open callout newest first (proxytest's ids): the
// checks with status (0: reset), the reports with 200.
func (h *holdHost) answerAll(status int) {
	cs := h.host.GetCalloutAttributesFromContext(proxytest.PluginContextID)
	for i := len(cs) - 1; i >= 0; i-- {
		if h.done[i] {
			continue
		}
		st := 200
		if cs[i].Upstream == holdCluster {
			st = status
		}
		var hdrs [][2]string
		if st != 0 {
			hdrs = [][2]string{{":status", strconv.Itoa(st)}}
		}
		h.done[i] = true
		h.host.CallOnHttpCallResponse(cs[i].CalloutID, hdrs, nil, nil)
	}
}

func (h *holdHost) action(id uint32) types.Action { return h.host.GetCurrentHttpStreamAction(id) }

func (h *holdHost) counter(name string) uint64 {
	v, err := h.host.GetCounterMetric(name)
	if err != nil {
		return 0
	}
	return v
}

// TestHoldNative: the hold's rules on the plugin, natively (the filtertest
// rows run them on the compiled module too).
func TestHoldNative(t *testing.T) {
	t.Run("held, not yet, then ready: resumed oldest first; then not held", func(t *testing.T) {
		h := newHoldHost(t, "")
		a, act := h.request("web.shop")
		if act != types.ActionPause {
			t.Fatalf("first request: %v, want it held", act)
		}
		if len(h.probes()) != 1 {
			t.Fatalf("%d checks, want one sent at once", len(h.probes()))
		}
		h.answerAll(503) // Envoy: no healthy upstream
		b, act := h.request("web.shop")
		if act != types.ActionPause || h.action(a) != types.ActionPause {
			t.Fatalf("while not ready: second %v, first %v; want both held", act, h.action(a))
		}
		h.tick(1)
		if n := len(h.probes()); n != 0 {
			t.Fatalf("%d checks 100 ms after the last: want none before the 200 ms interval", n)
		}
		h.tick(1)
		if n := len(h.probes()); n != 1 {
			t.Fatalf("%d checks after the interval, want 1", n)
		}
		h.answerAll(200)
		if h.action(a) != types.ActionContinue || h.action(b) != types.ActionContinue {
			t.Fatalf("after a ready check: %v, %v; want both resumed", h.action(a), h.action(b))
		}
		if _, act := h.request("web.shop"); act != types.ActionContinue {
			t.Fatalf("a request once ready: %v, want it passed", act)
		}
		if _, act := h.request("api.shop"); act != types.ActionContinue {
			t.Fatalf("a key not in hold: %v", act)
		}
		h.tick(2)
		if got := h.counter("reqcount.hold.held"); got != 2 {
			t.Errorf("reqcount.hold.held = %d, want 2", got)
		}
		if got := h.counter("reqcount.hold.resumed"); got != 2 {
			t.Errorf("reqcount.hold.resumed = %d, want 2", got)
		}
	})
	t.Run("timeout lets go", func(t *testing.T) {
		h := newHoldHost(t, "")
		a, _ := h.request("web.shop")
		for range 40 { // 4 s, checks failing
			h.answerAll(503)
			h.tick(1)
		}
		if h.action(a) != types.ActionContinue {
			t.Fatal("still held after hold_timeout")
		}
		if got := h.counter("reqcount.hold.timed_out"); got != 1 {
			t.Errorf("timed_out = %d, want 1", got)
		}
	})
	t.Run("client reset while held is forgotten", func(t *testing.T) {
		h := newHoldHost(t, "")
		a, _ := h.request("web.shop")
		h.host.CompleteHttpContext(a) // the client went away
		h.answerAll(200)
		h.tick(2)
		if got := h.counter("reqcount.hold.abandoned"); got != 1 {
			t.Errorf("abandoned = %d, want 1", got)
		}
		if got := h.counter("reqcount.hold.resumed"); got != 0 {
			t.Errorf("resumed = %d, want 0 (the stream is gone)", got)
		}
	})
	t.Run("hold_max: beyond it a request passes", func(t *testing.T) {
		h := newHoldHost(t, `,"hold_max":1`)
		h.request("web.shop")
		if _, act := h.request("web.shop"); act != types.ActionContinue {
			t.Fatalf("second request with hold_max 1: %v, want it passed", act)
		}
		h.tick(1)
		if got := h.counter("reqcount.hold.over_bound"); got != 1 {
			t.Errorf("over_bound = %d, want 1", got)
		}
	})
	t.Run("shutdown lets go", func(t *testing.T) {
		h := newHoldHost(t, "")
		a, _ := h.request("web.shop")
		h.host.FinishVM()
		if h.action(a) != types.ActionContinue {
			t.Fatal("held request not let go at shutdown")
		}
	})
	t.Run("each request counted once", func(t *testing.T) {
		h := newHoldHost(t, `,"aggregate":"worker","wake_after":"0s"`)
		for range 3 {
			h.request("web.shop")
		}
		h.answerAll(200)
		h.tick(12)
		var sent int
		for _, c := range h.host.GetCalloutAttributesFromContext(proxytest.PluginContextID) {
			if c.Upstream == "operator" && strings.Contains(string(c.Body), `"svc":"web"`) {
				sent++
				if !strings.Contains(string(c.Body), `"count":3`) {
					t.Errorf("report %s, want count 3", c.Body)
				}
			}
		}
		if sent != 1 {
			t.Errorf("%d reports of web.shop, want 1", sent)
		}
	})
}
