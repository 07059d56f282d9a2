package e2e_test

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// sharedstreamsModule is e2e/testdata/sharedstreams, built once per test binary.
var sharedstreamsModule = sync.OnceValues(func() (*wasmhost.Module, error) { return buildTestModule("sharedstreams") })

// TestSharedStreams drives a plugin that opts into the wasm glue's shared
// streams (filter/_sdkabi/streams_wasip1.go) in a build with every export: each
// stream callback (request and response headers, log) must reach the shared
// context, NewHttpContext must never run, each stream must read its own headers,
// and a call dispatched from a stream, without switching the effective context,
// must be answered (on the root context: the glue makes the root the SDK's
// active context during a shared stream's callbacks, which is where Envoy binds
// such a call). The filter itself is a lean build; its e2e tests cover the rest.
func TestSharedStreams(t *testing.T) {
	mod, err := sharedstreamsModule()
	if err != nil {
		t.Fatal(err)
	}
	h, err := wasmhost.New(boundedCtx(t), mod, wasmhost.Config{
		Clusters: map[string]string{"c": ""},
		Dispatch: func(_ wasmhost.Callout, reply func(wasmhost.Response)) {
			reply(wasmhost.Response{Status: 200})
		},
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { closeHost(t, h) })
	w := h.Worker(0)
	ctx := boundedCtx(t)

	const streams = 3000
	wantN, wantDispatched := uint64(0), uint64(0)
	for i := range streams {
		req := wasmhost.Request{Headers: [][2]string{{":authority", "web.shop"}, {":path", "/"}, {"x-n", strconv.Itoa(i)}}}
		wantN += uint64(i)
		if i%3 == 0 {
			req.Headers = append(req.Headers, [2]string{"x-dispatch", "1"})
			wantDispatched++
		}
		if _, err := w.Request(ctx, req); err != nil {
			for _, l := range h.LogLines() {
				t.Log(l)
			}
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	// The answers come back through the worker's queue.
	deadline := time.Now().Add(10 * time.Second)
	for h.Counter("shared.answered") < wantDispatched && time.Now().Before(deadline) {
		if err := w.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, c := range []struct {
		name string
		want uint64
	}{
		{"shared.request_headers", streams},
		{"shared.response_headers", streams},
		{"shared.stream_done", streams},
		{"shared.request_n", wantN},
		{"shared.dispatched", wantDispatched},
		{"shared.answered", wantDispatched},
		{"shared.new_http_context", 0},
	} {
		if got := h.Counter(c.name); got != c.want {
			t.Errorf("%s = %d, want %d", c.name, got, c.want)
		}
	}
	if s := h.Stats(); len(s.Crashes) > 0 {
		for _, l := range h.LogLines() {
			t.Log(l)
		}
		t.Fatalf("crashed: %v", s.Crashes)
	}
}
