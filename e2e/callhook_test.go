package e2e_test

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// callhookModule is e2e/testdata/callhook, built once per test binary.
var callhookModule = sync.OnceValues(func() (*wasmhost.Module, error) { return buildTestModule("callhook") })

// TestCallHooks: the wasm glue's call hooks (filter/_sdkabi/callhook_wasip1.go)
// answer as the SDK's public API does, on the e2e host: a call made through
// callhook.Dispatch reaches the host as the SDK's DispatchHttpCall of the same
// arguments (cluster, headers, body, trailers, timeout), both are answered to
// their callbacks, and callhook.ResponseHeader reads, for present, repeated,
// empty, missing and odd :status values, what the first value of the key in
// GetHttpCallResponseHeaders' list is (NotFound where the list has none).
func TestCallHooks(t *testing.T) {
	mod, err := callhookModule()
	if err != nil {
		t.Fatal(err)
	}
	dup := [][2]string{{"content-type", "text/plain"}, {"X-Dup", "a"}, {"x-dup", "b"}, {"empty", ""}}
	answers := []wasmhost.Response{
		{Status: 200}, {Status: 204, Headers: dup}, {Status: 302, Headers: dup}, {Status: 404},
		wasmhost.NoHealthyUpstream(), wasmhost.UpstreamTimeout(),
		{Status: 99}, {Status: 1000}, {Status: -7}, {Status: 2147483648},
		wasmhost.Reset(),
	}
	var mu sync.Mutex
	calls := map[string][]wasmhost.Callout{} // by x-case
	h, err := wasmhost.New(boundedCtx(t), mod, wasmhost.Config{
		PluginConfig: []byte("c"),
		Clusters:     map[string]string{"c": ""},
		ManualTicks:  true,
		Dispatch: func(c wasmhost.Callout, reply func(wasmhost.Response)) {
			n := c.Header("x-case")
			mu.Lock()
			calls[n] = append(calls[n], c)
			mu.Unlock()
			var i int
			fmt.Sscan(n, &i)
			reply(answers[(i-1)%len(answers)])
		},
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { closeHost(t, h) })
	ctx := boundedCtx(t)
	for range len(answers) {
		if err := h.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		syncWorker(h.Worker(0))
	}
	lines := map[string]string{}
	for _, msg := range h.Logs(wasmhost.LevelInfo) {
		switch {
		case strings.HasPrefix(msg, "dispatch "):
			if !strings.HasSuffix(msg, "hook=ok sdk=ok") {
				t.Errorf("%s: want both calls made", msg)
			}
		case strings.HasPrefix(msg, "answer "):
			f := strings.Fields(msg)
			lines[f[1]+" "+f[2]] = msg
			for _, kv := range f[4:] {
				hook, list, _ := strings.Cut(kv[strings.Index(kv, "=")+1:], "|")
				if f[3] == "0" { // a reset: no response to read, either way
					if !strings.HasPrefix(hook, "!") || !strings.HasPrefix(list, "!") {
						t.Errorf("%s: %s: a reset's header reads succeeded", msg, kv)
					}
					continue
				}
				if hook != list {
					t.Errorf("%s: %s: the hook read %q, the SDK's list %q", msg, kv, hook, list)
				}
			}
		}
	}
	for i, r := range answers {
		n := fmt.Sprint(i + 1)
		for _, via := range []string{"hook", "sdk"} {
			l, ok := lines[via+" "+n]
			if !ok {
				t.Errorf("call %s (%s): no answer", n, via)
				continue
			}
			if r.Status != 0 && !strings.Contains(l, fmt.Sprintf(" :status=%d|%d ", r.Status, r.Status)) {
				t.Errorf("call %s (%s): %s: want :status %d both ways", n, via, l, r.Status)
			}
		}
		cs := calls[n]
		if len(cs) != 2 {
			t.Fatalf("call %s: the host saw %d calls, want 2", n, len(cs))
		}
		a, b := cs[0], cs[1]
		a.Token, b.Token = 0, 0
		if !reflect.DeepEqual(a, b) {
			t.Errorf("call %s: the hook's call %+v, the SDK's %+v", n, a, b)
		}
	}
	for _, l := range []string{"hook 3", "sdk 3"} { // a repeated header reads its first value
		if !strings.Contains(lines[l], " x-dup=a|a ") || !strings.Contains(lines[l], " empty=|") {
			t.Errorf("%s: %s", l, lines[l])
		}
	}
}
