package e2e_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// bigcopyModule is e2e/testdata/bigcopy, built once per test binary.
var bigcopyModule = sync.OnceValues(func() (*wasmhost.Module, error) { return buildTestModule("bigcopy") })

// buildTestModule builds the plugin in e2e/testdata/<name> with
// filter/_sdkabi/build.sh, the project's one way to build an SDK module (the
// SDK's full export set), and compiles it.
func buildTestModule(name string) (*wasmhost.Module, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", name+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, name+".wasm")
	cmd := exec.Command(filepath.Join(root, "filter", "_sdkabi", "build.sh"), "-o", out, "./e2e/testdata/"+name)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s: %v\n%s", name, err, b)
	}
	wasm, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	return wasmhost.Compile(context.Background(), wasm)
}

func fnvSum(parts ...string) string {
	h := fnv.New64a()
	for _, s := range parts {
		h.Write([]byte(s))
	}
	return strconv.FormatUint(h.Sum64(), 16)
}

// pattern returns n bytes of printable data that differ with seed.
func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + (i*7+seed)%26)
	}
	return b
}

// TestLargeCopiesUnderHeapPressure drives the host's largest copies into an
// SDK module built with the project's wasm glue while the module keeps its Go
// heap near the GC goal: a 1 MiB plugin configuration, 1 MiB call response
// bodies, and request headers read one value at a time beyond what one
// callback's arena holds. The allocator the host calls for each copy
// (proxy_on_memory_allocate) must never enter the Go allocator: a GC step there
// polls with poll_oneoff, which Envoy and this host trap inside malloc. With the
// old allocator (a heap block for any copy over 4 KiB) the VM crashed here,
// before modules answered their own poll_oneoff (filter/wasmrewrite); the
// copies must still fail cleanly and arrive intact.
// A copy that does not fit must fail as a host-call error, never a trap, and
// every value that was copied must arrive intact.
func TestLargeCopiesUnderHeapPressure(t *testing.T) {
	mod, err := bigcopyModule()
	if err != nil {
		t.Fatal(err)
	}
	config := append([]byte("churn=512 tick=1000\n"), pattern(1<<20, 1)...)
	body := pattern(1<<20, 2)
	h, err := wasmhost.New(boundedCtx(t), mod, wasmhost.Config{
		PluginConfig: config,
		Clusters:     map[string]string{"c": ""},
		ManualTicks:  true,
		LogLevel:     wasmhost.LevelInfo,
		Dispatch: func(_ wasmhost.Callout, reply func(wasmhost.Response)) {
			reply(wasmhost.Response{Status: 200, Headers: [][2]string{{"x-answer", string(pattern(2000, 3))}}, Body: body})
		},
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { closeHost(t, h) })
	w := h.Worker(0)
	ctx := boundedCtx(t)

	// headers returns a request with n x-big-* headers of size bytes each.
	headers := func(n, size, seed int) wasmhost.Request {
		req := wasmhost.Request{Headers: [][2]string{{":authority", "web.shop"}, {":path", "/"}, {":method", "GET"}}}
		for i := 0; i < n; i++ {
			req.Headers = append(req.Headers, [2]string{"x-big-" + strconv.Itoa(i), string(pattern(size, seed+i))})
		}
		return req
	}
	type requestCase struct {
		name string
		req  wasmhost.Request
		// all: every value and the whole map fit in one callback's copies.
		all bool
	}
	cases := []requestCase{
		{"40 values of 700 bytes, then all at once", headers(40, 700, 10), true},
		{"100 values of 1000 bytes: more than one callback holds", headers(100, 1000, 20), false},
		{"again 40 values: the next callback has all its room back", headers(40, 700, 30), true},
	}
	const rounds = 6
	for round := 0; round < rounds; round++ {
		for _, c := range cases {
			before := len(h.Logs(wasmhost.LevelInfo))
			if _, err := w.Request(ctx, c.req); err != nil {
				t.Fatalf("round %d, %s: %v", round, c.name, err)
			}
			logs := h.Logs(wasmhost.LevelInfo)[before:]
			if len(logs) != 1 {
				t.Fatalf("round %d, %s: logs %q, want one headers line", round, c.name, logs)
			}
			var ok, failed int
			var sum, pairs, psum string
			if _, err := fmt.Sscanf(logs[0], "headers %d %d %s %s %s", &ok, &failed, &sum, &pairs, &psum); err != nil {
				t.Fatalf("round %d, %s: %q: %v", round, c.name, logs[0], err)
			}
			var vals, kv []string
			for _, hv := range c.req.Headers {
				kv = append(kv, hv[0]+"="+hv[1])
				if strings.HasPrefix(hv[0], "x-big-") {
					vals = append(vals, hv[1])
				}
			}
			switch {
			case ok+failed != len(vals):
				t.Fatalf("round %d, %s: %d read + %d refused, want %d values", round, c.name, ok, failed, len(vals))
			case c.all && (failed != 0 || pairs != strconv.Itoa(len(kv)) || psum != fnvSum(kv...)):
				t.Fatalf("round %d, %s: %q, want every value and %d pairs (sum %s)", round, c.name, logs[0], len(kv), fnvSum(kv...))
			case !c.all && (failed == 0 || ok*1000 < 60<<10):
				// Envoy's default request header limit is 60 KiB: that much must fit.
				t.Fatalf("round %d, %s: %d values read, %d refused: want at least 60 KiB read, and a refusal", round, c.name, ok, failed)
			case sum != fnvSum(vals[:ok]...):
				t.Fatalf("round %d, %s: the %d values read do not match what was sent", round, c.name, ok)
			}
		}

		before := len(h.Logs(wasmhost.LevelInfo))
		if err := w.Tick(ctx); err != nil {
			t.Fatalf("round %d tick: %v", round, err)
		}
		syncWorker(w)
		want := fmt.Sprintf("response 200 %d %s", len(body), fnvSum(string(body)))
		if logs := h.Logs(wasmhost.LevelInfo)[before:]; len(logs) != 1 || logs[0] != want {
			t.Fatalf("round %d: call answer logs %q, want %q", round, logs, want)
		}
	}
	if err := w.Crashed(); err != nil {
		t.Fatal(err)
	}
	wantConfig := fmt.Sprintf("config %d %s", len(config), fnvSum(string(config)))
	if logs := h.Logs(wasmhost.LevelInfo); len(logs) == 0 || logs[0] != wantConfig {
		t.Fatalf("first log %q, want %q", logs[:min(1, len(logs))], wantConfig)
	}
	if errs := h.Logs(wasmhost.LevelError); len(errs) > 0 {
		t.Fatalf("errors logged: %q", errs)
	}
}
