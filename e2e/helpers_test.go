package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/reqcount/reqcount/e2e/collector"
	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// Helpers shared by the e2e tests that run build/filter.wasm in the wasm host.
// (module_test.go has its own, wazero-only, loader for the shape checks.)

// waitLimit bounds every wait in this package: a test that needs longer has hung.
const waitLimit = 60 * time.Second

// filterPath returns the path of build/filter.wasm, or of the module
// REQCOUNT_E2E_WASM names (to run the e2e tests on another build, e.g. one
// without filter/wasmrewrite, and see what they catch).
func filterPath() (string, error) {
	if p := os.Getenv("REQCOUNT_E2E_WASM"); p != "" {
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "build", "filter.wasm"), nil
}

// repoRoot walks up from the working directory (e2e/) to the directory that
// holds go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// compiledFilter compiles build/filter.wasm once per test binary: compilation
// takes seconds, instantiation (once per worker per host) milliseconds.
var compiledFilter = sync.OnceValues(func() (*wasmhost.Module, error) {
	path, err := filterPath()
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s missing: run `make build`", path)
	}
	if err != nil {
		return nil, err
	}
	return wasmhost.Compile(context.Background(), bin)
})

// filterModule returns the compiled filter, failing (never skipping) the test
// when it is missing: an e2e run without the module must not look green.
func filterModule(t testing.TB) *wasmhost.Module {
	t.Helper()
	mod, err := compiledFilter()
	if err != nil {
		t.Fatal(err)
	}
	return mod
}

// boundedCtx returns a context that ends after waitLimit or with the test.
func boundedCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// startHost starts the filter in a wasm host and closes it when the test ends,
// checking that no worker crashed. A start the plugin refuses fails the test.
func startHost(t testing.TB, cfg wasmhost.Config) *wasmhost.Host {
	t.Helper()
	h, err := wasmhost.New(boundedCtx(t), filterModule(t), cfg)
	if err != nil {
		t.Fatalf("start with %s: %v", cfg.PluginConfig, err)
	}
	t.Cleanup(func() { closeHost(t, h) })
	return h
}

// closeHost shuts h down as Envoy would (the filter flushes and waits for its
// answers) and reports a shutdown that did not finish or a crashed worker.
func closeHost(t testing.TB, h *wasmhost.Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := h.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
	if s := h.Stats(); len(s.Crashes) > 0 {
		t.Errorf("crashed: %v", s.Crashes)
	}
}

// startCollector serves a collector on a free loopback port until the test ends.
func startCollector(t testing.TB, opts collector.Options) *collector.Collector {
	t.Helper()
	c := collector.New(opts)
	if err := c.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rootCalls returns how many times the root context got callback cb on worker
// w: the host counts guest entries per export, and every stream also gets
// proxy_on_done and proxy_on_delete once, so the root's are the excess over
// the streams.
func rootCalls(w *wasmhost.Worker, cb string) uint64 {
	s := w.Stats()
	return s.GuestCalls[cb] - s.Requests
}

// syncWorker waits until every event already posted to w (callout answers) has run:
// events run before jobs on a worker, and MemorySize is a job with no effect
// on the module. On a stopped worker it returns at once, and nothing more runs
// there anyway.
func syncWorker(w *wasmhost.Worker) { _ = w.MemorySize() }
