package wasmhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of held streams (issue 15): Open, proxy_set_effective_context and
// proxy_continue_stream from the root context, bodies, routing and cluster
// health, resets and shutdown. The probe's "pause=1" holds every request.

var svcClusters = map[string]string{"svc": "127.0.0.1:1", "operator": "127.0.0.1:1"}

func reqTo(cluster string, body []byte) Request {
	return Request{Headers: getAuthority.Headers, Cluster: cluster, Body: body}
}

func mustOpen(t *testing.T, w *Worker, req Request) *Stream {
	t.Helper()
	st, err := w.Open(context.Background(), req)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return st
}

func mustWait(t *testing.T, st *Stream) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := st.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait(stream %d): %v", st.ID(), err)
	}
	return res
}

// stillHeld checks that st has not ended.
func stillHeld(t *testing.T, st *Stream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := st.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stream %d ended (%v), want it held", st.ID(), err)
	}
	if !st.Paused() {
		t.Fatalf("stream %d: Paused() = false, want true", st.ID())
	}
}

func logIndex(lines []LogLine, prefix string) int {
	for i, l := range lines {
		if strings.HasPrefix(l.Message, prefix) {
			return i
		}
	}
	return -1
}

func TestHoldResumedFromTick(t *testing.T) {
	big := bytes.Repeat([]byte{0, 1, 2, 0xff, '\n'}, 1<<18) // 1.25 MiB, above Envoy's 1 MiB buffer limit
	tests := []struct {
		name string
		body []byte
	}{
		{"no body", nil},
		{"small body", []byte("hello=1&x=2")},
		{"binary body above the buffer limit", big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t, "guest", Config{
				PluginConfig: []byte("pause=1;tick=60000;resume_on_tick=1;read_response=1"),
				Clusters:     svcClusters, ManualTicks: true,
			})
			w := h.Worker(0)
			body := append([]byte(nil), tt.body...)
			var streams []*Stream
			for i := 0; i < 3; i++ {
				streams = append(streams, mustOpen(t, w, reqTo("svc", body)))
			}
			// The caller reuses its buffer while the requests are held.
			for i := range body {
				body[i] = 'X'
			}
			for _, st := range streams {
				stillHeld(t, st)
			}
			if got := w.Stats().Streams; got.Open != 3 || got.Paused != 3 || got.PausedTotal != 3 || got.Resumed != 0 {
				t.Fatalf("stream stats while held = %+v", got)
			}
			if got := w.Stats().GuestCalls["proxy_on_response_headers"]; got != 0 {
				t.Fatalf("proxy_on_response_headers ran %d times while held", got)
			}
			if err := w.Tick(context.Background()); err != nil {
				t.Fatal(err)
			}
			for i, st := range streams {
				res := mustWait(t, st)
				if st.Paused() || !res.Paused || res.Reset || !res.ResponseCalled || res.Status != 200 || !res.UpstreamReached {
					t.Errorf("stream %d result = %+v, want held, then answered 200 by the upstream", st.ID(), res)
				}
				if !bytes.Equal(res.UpstreamBody, tt.body) {
					t.Errorf("stream %d: upstream got %d body bytes, want the %d sent, intact", st.ID(), len(res.UpstreamBody), len(tt.body))
				}
				if res.HeldFor <= 0 {
					t.Errorf("stream %d: HeldFor = %v", st.ID(), res.HeldFor)
				}
				want := fmt.Sprintf("resume id=%d set=0 continue=0", st.ID())
				if got := countOf(h.Logs(LevelInfo), want); got != 1 {
					t.Errorf("%q logged %d times; logs %q", want, got, h.Logs(LevelInfo))
				}
				if i > 0 && st.ID() <= streams[i-1].ID() {
					t.Errorf("ids not increasing: %d then %d", streams[i-1].ID(), st.ID())
				}
			}
			// Envoy defers continueDecoding until the VM call returns: every
			// resume of the tick is logged before the first resumed stream
			// reaches proxy_on_response_headers.
			lines := h.LogLines()
			last := logIndex(lines, fmt.Sprintf("resume id=%d", streams[2].ID()))
			first := logIndex(lines, "response :status=200")
			if last < 0 || first < 0 || first < last {
				t.Errorf("response headers (line %d) ran before the tick's last resume (line %d): %v", first, last, lines)
			}
			if got := w.Stats().Streams; got.Open != 0 || got.Paused != 0 || got.Opened != 3 || got.Resumed != 3 || got.Reset != 0 {
				t.Errorf("stream stats after = %+v", got)
			}
		})
	}
}

func TestHoldResumeFromCallAnswer(t *testing.T) {
	var replies []func(Response)
	h := newHost(t, "guest", Config{
		PluginConfig: []byte("pause=1;tick=60000;call=1;cluster=operator;path=/x;authority=op;resume_on_response=1"),
		Clusters:     svcClusters, ManualTicks: true,
		Dispatch: func(c Callout, reply func(Response)) { replies = append(replies, reply) },
	})
	w := h.Worker(0)
	st := mustOpen(t, w, reqTo("svc", []byte("b")))
	if err := w.Tick(context.Background()); err != nil { // dispatches the call
		t.Fatal(err)
	}
	stillHeld(t, st)
	if err := w.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(replies) != 1 {
		t.Fatalf("%d callouts, want 1", len(replies))
	}
	replies[0](Response{Status: 200})
	res := mustWait(t, st)
	if res.Status != 200 || string(res.UpstreamBody) != "b" || w.Stats().Streams.Resumed != 1 {
		t.Errorf("result = %+v, stats %+v; want resumed from the answer", res, w.Stats().Streams)
	}
}

func TestHoldEffectiveContextStatuses(t *testing.T) {
	t.Run("resume of a deleted stream is BadArgument", func(t *testing.T) {
		h := newHost(t, "guest", Config{PluginConfig: []byte("pause=1;tick=60000;resume_gone=1;resume_id=777"), ManualTicks: true})
		w := h.Worker(0)
		st := mustOpen(t, w, getAuthority)
		if err := st.Reset(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := w.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		// set_effective_context fails (BadArgument, 2) and leaves the root
		// current, where continue does nothing and answers Ok.
		for _, want := range []string{
			fmt.Sprintf("resume_gone id=%d set=2 continue=0", st.ID()),
			"resume_gone id=777 set=2 continue=0", // never made
		} {
			if got := countOf(h.Logs(LevelInfo), want); got != 1 {
				t.Errorf("%q logged %d times; logs %q", want, got, h.Logs(LevelInfo))
			}
		}
	})
	t.Run("continue on the root context is Ok and resumes nothing", func(t *testing.T) {
		h := newHost(t, "guest", Config{PluginConfig: []byte("pause=1;tick=60000;continue_root=1"), ManualTicks: true})
		w := h.Worker(0)
		st := mustOpen(t, w, getAuthority)
		if err := w.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := countOf(h.Logs(LevelInfo), "continue_root status=0"); got != 1 {
			t.Errorf("continue_root logged %d times; logs %q", got, h.Logs(LevelInfo))
		}
		stillHeld(t, st)
		if got := w.Stats().Streams.Resumed; got != 0 {
			t.Errorf("Resumed = %d, want 0", got)
		}
	})
	t.Run("streams belong to their worker", func(t *testing.T) {
		h := newHost(t, "guest", Config{Workers: 2, PluginConfig: []byte("pause=1;tick=60000;resume_on_tick=1"), ManualTicks: true})
		st := mustOpen(t, h.Worker(1), getAuthority)
		if err := h.Worker(0).Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		stillHeld(t, st)
		if err := h.Worker(1).Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		if res := mustWait(t, st); res.Status != 200 {
			t.Errorf("result = %+v", res)
		}
	})
}

func TestHoldLocalReplyFromTick(t *testing.T) {
	h := newHost(t, "guest", Config{PluginConfig: []byte("pause=1;tick=60000;local_on_tick=1;read_response=1"), ManualTicks: true})
	w := h.Worker(0)
	st := mustOpen(t, w, reqTo("", []byte("x")))
	if err := w.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	res := mustWait(t, st)
	want := &LocalReply{Status: 429, Details: "held_too_long", Body: []byte("slow down"), GrpcCode: -1}
	if res.Status != 429 || res.UpstreamReached || res.Reset || !res.Paused || fmt.Sprint(res.LocalReply) != fmt.Sprint(want) {
		t.Errorf("result = %+v (local reply %+v), want the module's 429", res, res.LocalReply)
	}
	if got := countOf(h.Logs(LevelInfo), fmt.Sprintf("local id=%d set=0 status=0", st.ID())); got != 1 {
		t.Errorf("local reply logged %d times; logs %q", got, h.Logs(LevelInfo))
	}
}

func TestHoldClientReset(t *testing.T) {
	h := newHost(t, "guest", Config{PluginConfig: []byte("pause=1"), ManualTicks: true})
	w := h.Worker(0)
	st := mustOpen(t, w, reqTo("", []byte("body")))
	stillHeld(t, st)
	if err := st.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	res := mustWait(t, st)
	if !res.Reset || !res.Paused || res.Status != 0 || res.UpstreamReached || res.UpstreamBody != nil || res.ResponseCalled ||
		res.ResponseFlags != 0x4000 || res.ResponseCodeDetails != "downstream_remote_disconnect" {
		t.Errorf("result = %+v, want a reset held stream that never reached the upstream", res)
	}
	calls := w.Stats().GuestCalls
	if calls["proxy_on_log"] != 1 || calls["proxy_on_done"] != 1 || calls["proxy_on_delete"] != 1 || calls["proxy_on_response_headers"] != 0 {
		t.Errorf("guest calls = %v, want log, done and delete once", calls)
	}
	if err := st.Reset(context.Background()); err != nil {
		t.Errorf("second Reset: %v", err)
	}
	if got := w.Stats().GuestCalls["proxy_on_delete"]; got != 1 {
		t.Errorf("proxy_on_delete = %d after a second Reset, want 1", got)
	}

	// Request blocks on a held stream until its context ends, then resets it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := w.Request(ctx, getAuthority); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Request on a held stream = %v, want DeadlineExceeded", err)
	}
	waitFor(t, "the abandoned stream's reset", func() bool { return w.Stats().GuestCalls["proxy_on_delete"] == 2 })
	if got := w.Stats().Streams; got.Reset != 2 || got.Open != 0 || got.Paused != 0 {
		t.Errorf("stream stats = %+v", got)
	}

	// The benchmark path refuses a held stream (and resets it).
	if err := w.Requests(context.Background(), 5, getAuthority); err == nil || !strings.Contains(err.Error(), "held") {
		t.Errorf("Requests on a pausing module = %v, want an error", err)
	}
	if got := w.Stats().GuestCalls["proxy_on_delete"]; got != 3 {
		t.Errorf("proxy_on_delete = %d, want 3", got)
	}
}

func TestRoutingAndClusterHealth(t *testing.T) {
	h := newHost(t, "guest", Config{
		PluginConfig:      []byte("read_cluster=1;tick=60000;pause=1;resume_on_tick=1"),
		Clusters:          svcClusters,
		UnhealthyClusters: []string{"svc"},
		ManualTicks:       true,
	})
	w := h.Worker(0)
	run := func(req Request) Result {
		t.Helper()
		st := mustOpen(t, w, req)
		stillHeld(t, st)
		if err := w.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		return mustWait(t, st)
	}
	tests := []struct {
		name     string
		cluster  string
		healthy  bool
		status   int
		details  string
		flags    uint64
		reached  bool
		reqLog   string
		respLog  string
		respHdrs [][2]string
	}{
		{
			name: "no healthy host", cluster: "svc", status: 503, details: "no_healthy_upstream", flags: 0x2,
			reqLog:   "request xds.cluster_name=svc status=0 cluster_name_status=1",
			respLog:  "response xds.cluster_name=svc status=0 code=503/0 details=no_healthy_upstream/0 flags=2/0",
			respHdrs: [][2]string{{":status", "503"}, {"content-length", "19"}, {"content-type", "text/plain"}},
		},
		{
			name: "healthy again", cluster: "svc", healthy: true, status: 200, details: "via_upstream", reached: true,
			reqLog:   "request xds.cluster_name=svc status=0 cluster_name_status=1",
			respLog:  "response xds.cluster_name=svc status=0 code=200/0 details=via_upstream/0 flags=0/0",
			respHdrs: [][2]string{{":status", "200"}},
		},
		{
			name: "unknown cluster", cluster: "nowhere", status: 503, details: "cluster_not_found", flags: 0x1000000,
			reqLog:   "request xds.cluster_name= status=1 cluster_name_status=1",
			respLog:  "response xds.cluster_name= status=1 code=503/0 details=cluster_not_found/0 flags=16777216/0",
			respHdrs: [][2]string{{":status", "503"}},
		},
		{
			name: "no route", cluster: "", status: 200, details: "via_upstream", reached: true,
			reqLog:   "request xds.cluster_name= status=1 cluster_name_status=1",
			respLog:  "response xds.cluster_name= status=1 code=200/0 details=via_upstream/0 flags=0/0",
			respHdrs: [][2]string{{":status", "200"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.healthy {
				h.SetClusterHealthy("svc", true)
			}
			res := run(reqTo(tt.cluster, []byte("payload")))
			if res.Status != tt.status || res.ResponseCodeDetails != tt.details || res.ResponseFlags != tt.flags ||
				res.UpstreamReached != tt.reached || !res.ResponseCalled {
				t.Errorf("result = %+v", res)
			}
			if tt.reached != (string(res.UpstreamBody) == "payload") {
				t.Errorf("upstream body = %q (reached %v)", res.UpstreamBody, res.UpstreamReached)
			}
			if fmt.Sprint(res.ResponseHeaders) != fmt.Sprint(tt.respHdrs) {
				t.Errorf("response headers = %q, want %q", res.ResponseHeaders, tt.respHdrs)
			}
			info := h.Logs(LevelInfo)
			if info[len(info)-1] != tt.respLog || !slicesContain(info, tt.reqLog) {
				t.Errorf("logs end %q, want %q after %q", info[len(info)-1], tt.respLog, tt.reqLog)
			}
		})
	}
	if !h.ClusterHealthy("svc") {
		t.Error("ClusterHealthy(svc) = false after SetClusterHealthy(svc, true)")
	}
}

func slicesContain(lines []string, s string) bool { return countOf(lines, s) > 0 }

func TestHTTPCallToUnhealthyCluster(t *testing.T) {
	var hits atomic.Int64
	u := newUpstream(t, func(rw http.ResponseWriter, r *http.Request) { hits.Add(1) })
	for _, custom := range []bool{false, true} {
		t.Run(fmt.Sprintf("custom dispatch %v", custom), func(t *testing.T) {
			var dispatched atomic.Int64
			cfg := Config{
				PluginConfig:      []byte("tick=60000;call=1;cluster=operator;path=/x;authority=op"),
				Clusters:          map[string]string{"operator": u.Listener.Addr().String()},
				UnhealthyClusters: []string{"operator"},
				ManualTicks:       true,
			}
			if custom {
				cfg.Dispatch = func(c Callout, reply func(Response)) { dispatched.Add(1); reply(Response{Status: 200}) }
			}
			h := newHost(t, "guest", cfg)
			w := h.Worker(0)
			if err := w.Tick(context.Background()); err != nil {
				t.Fatal(err)
			}
			// Envoy: the async client's router answers 503 inline, send()
			// returns nullptr and proxy_http_call fails with InternalFailure
			// (10); no answer is ever delivered.
			if got := countOf(h.Logs(LevelInfo), "call status=10"); got != 1 {
				t.Errorf("call status logged %d times, want InternalFailure once; logs %q", got, h.Logs(LevelInfo))
			}
			h.SetClusterHealthy("operator", true)
			if err := w.Tick(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := countOf(h.Logs(LevelInfo), "call status=0"); got != 1 {
				t.Errorf("healthy call status logged %d times; logs %q", got, h.Logs(LevelInfo))
			}
			waitFor(t, "the healthy call's answer", func() bool { return hasPrefixLine(h.Logs(LevelInfo), "response token=") })
			if err := w.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			if !hasPrefixLine(h.Logs(LevelInfo), "response token=3 ") {
				t.Errorf("no answer for the healthy call (token 3, after the failed call used token 1): %q", h.Logs(LevelInfo))
			}
			if hasPrefixLine(h.Logs(LevelInfo), "response token=1 ") {
				t.Errorf("the failed call's token got an answer: %q", h.Logs(LevelInfo))
			}
			if custom && dispatched.Load() != 1 {
				t.Errorf("custom dispatcher saw %d calls, want only the healthy one", dispatched.Load())
			}
		})
	}
	if got := hits.Load(); got != 1 {
		t.Errorf("upstream got %d requests, want 1 (the default dispatcher's healthy call)", got)
	}
}

func TestHoldShutdown(t *testing.T) {
	t.Run("held stream reset when the host closes", func(t *testing.T) {
		h, err := New(context.Background(), module(t, "guest"), Config{PluginConfig: []byte("pause=1"), ManualTicks: true})
		if err != nil {
			t.Fatal(err)
		}
		w := h.Worker(0)
		st := mustOpen(t, w, getAuthority)
		stillHeld(t, st)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		res := mustWait(t, st)
		if !res.Reset || !res.Paused || res.UpstreamReached {
			t.Errorf("result = %+v, want a reset", res)
		}
		calls := h.Stats().GuestCalls
		// 1 stream + root for proxy_on_done and proxy_on_delete.
		if calls["proxy_on_log"] != 1 || calls["proxy_on_done"] != 2 || calls["proxy_on_delete"] != 2 {
			t.Errorf("guest calls = %v", calls)
		}
		lines := h.LogLines()
		if logIndex(lines, "root deleted") < 0 {
			t.Errorf("root not deleted: %v", lines)
		}
		if _, err := w.Open(context.Background(), getAuthority); !errors.Is(err, ErrClosed) {
			t.Errorf("Open after Close = %v, want ErrClosed", err)
		}
	})
	t.Run("held stream let go during the drain", func(t *testing.T) {
		h, err := New(context.Background(), module(t, "guest"), Config{
			PluginConfig: []byte("pause=1;tick=5;resume_on_tick=1"),
			DrainTimeout: 10 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		st := mustOpen(t, h.Worker(0), reqTo("", []byte("late")))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		res := mustWait(t, st)
		if res.Reset || !res.Paused || res.Status != 200 || string(res.UpstreamBody) != "late" {
			t.Errorf("result = %+v, want resumed by a tick during the drain", res)
		}
	})
	t.Run("drain refuses new streams", func(t *testing.T) {
		h := newHost(t, "guest", Config{PluginConfig: []byte("pause=1"), ManualTicks: true, DrainTimeout: time.Minute})
		w := h.Worker(0)
		st := mustOpen(t, w, getAuthority)
		closed := make(chan error, 1)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { closed <- h.Close(ctx) }()
		waitFor(t, "the drain", func() bool { return w.draining.Load() })
		if _, err := w.Open(context.Background(), getAuthority); !errors.Is(err, ErrClosed) {
			t.Errorf("Open during the drain = %v, want ErrClosed", err)
		}
		stillHeld(t, st)
		cancel() // the drain ends early: the held stream is reset
		if res := mustWait(t, st); !res.Reset {
			t.Errorf("result = %+v, want a reset", res)
		}
		<-closed
	})
}
