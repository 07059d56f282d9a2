package wasmhost

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// randomModule logs, from _initialize, the 8 bytes random_get gave it: what
// a module's runtime seeds itself (and its ids) with.
func randomModule(t *testing.T) *Module {
	t.Helper()
	var logIdx, randIdx uint32
	b := proxyModule(func(b *wasmBuilder) {
		logIdx = b.importFunc("env", "proxy_log", p3, p1)
		randIdx = b.importFunc("wasi_snapshot_preview1", "random_get", p2, p1)
	})
	b.fn("_initialize", none, none, code(
		i32c(200), i32c(8), call(randIdx), []byte{opDrop},
		i32c(int32(LevelInfo)), i32c(200), i32c(8), call(logIdx), []byte{opDrop},
	)...)
	return mustCompile(t, b)
}

// startBytes returns what each VM start logged, in start order.
func startBytes(h *Host) []string { return h.Logs(LevelInfo) }

func TestRandomSeed(t *testing.T) {
	m := randomModule(t)
	run := func(cfg Config) []string {
		t.Helper()
		cfg.Workers, cfg.ManualTicks = 3, true
		h, err := New(context.Background(), m, cfg)
		if err != nil {
			t.Fatal(err)
		}
		h.Worker(1).Kill()
		if err := h.Restart(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		got := startBytes(h)
		if err := h.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(got) != 4 {
			t.Fatalf("%d start logs, want 4 (3 workers, 1 restart)", len(got))
		}
		return got
	}
	distinct := func(s []string) bool {
		seen := map[string]bool{}
		for _, v := range s {
			if seen[v] {
				return false
			}
			seen[v] = true
		}
		return true
	}

	t.Run("crypto/rand by default", func(t *testing.T) {
		if a, b := run(Config{}), run(Config{}); !distinct(append(a, b...)) {
			t.Errorf("random bytes repeat across VMs or runs: %q, %q", a, b)
		}
	})
	t.Run("same stream for every VM", func(t *testing.T) {
		a := run(Config{RandomSeed: 7})
		for i, v := range a {
			if v != a[0] {
				t.Errorf("VM %d read %x, VM 0 %x: want the same bytes", i, v, a[0])
			}
		}
		if b := run(Config{RandomSeed: 7}); b[0] != a[0] {
			t.Errorf("seed 7 read %x then %x: want the same in every run", a[0], b[0])
		}
		if c := run(Config{RandomSeed: 8}); c[0] == a[0] {
			t.Errorf("seeds 7 and 8 both read %x", a[0])
		}
	})
	t.Run("a stream per VM", func(t *testing.T) {
		a := run(Config{RandomSeed: 7, RandomPerVM: true})
		if !distinct(a) {
			t.Errorf("VMs read the same bytes: %q", a)
		}
		if b := run(Config{RandomSeed: 7, RandomPerVM: true}); strings.Join(a, ",") != strings.Join(b, ",") {
			t.Errorf("two runs read %q and %q: want the same", a, b)
		}
	})
}

func TestRestart(t *testing.T) {
	var mu sync.Mutex
	var replies []func(Response)
	var callers []int
	h := newHost(t, "guest", Config{
		Workers:      2,
		PluginConfig: append(callConfig("operator", "operator", "1500"), ";shared=k"...),
		ManualTicks:  true,
		Clusters:     map[string]string{"operator": ""},
		Dispatch: func(c Callout, reply func(Response)) {
			mu.Lock()
			defer mu.Unlock()
			replies = append(replies, reply)
			callers = append(callers, c.Worker)
		},
	})
	ctx := context.Background()
	old := h.Worker(1)
	mustRequest(t, old, getAuthority)
	if err := old.Tick(ctx); err != nil { // a call in flight when the VM dies
		t.Fatal(err)
	}
	if err := h.Restart(ctx, 1); err == nil || !strings.Contains(err.Error(), "still runs") {
		t.Fatalf("Restart of a running VM = %v, want an error", err)
	}
	old.Kill()
	if err := h.Restart(ctx, 1); err != nil {
		t.Fatal(err)
	}
	w := h.Worker(1)
	if w == old || w.Index() != 1 {
		t.Fatalf("Worker(1) after Restart is the old instance (or index %d)", w.Index())
	}
	if _, err := old.Request(ctx, getAuthority); !errors.Is(err, ErrClosed) {
		t.Errorf("Request on the killed instance = %v, want ErrClosed", err)
	}
	// Shared data is the process's: the new VM's increment finds the old one's.
	mustRequest(t, w, getAuthority)
	if v, _, _ := h.SharedData("k"); string(v) != "2" {
		t.Errorf("shared k = %q after a request on each instance, want \"2\"", v)
	}
	// The old VM's call in flight gets no answer on the new one; the new
	// VM's own calls do.
	if err := w.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(replies) != 2 || callers[0] != 1 || callers[1] != 1 {
		t.Fatalf("callouts from workers %v, want two from worker 1", callers)
	}
	replies[0](Response{Status: 200, Body: []byte("old")})
	replies[1](Response{Status: 200, Body: []byte("new")})
	mu.Unlock()
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range h.LogLines() {
		if strings.HasPrefix(l.Message, "response token=") {
			got = append(got, l.Message)
		}
	}
	if len(got) != 1 || !strings.Contains(got[0], "token=1 ") || !strings.Contains(got[0], "body=new") {
		t.Errorf("responses %q, want only the new VM's (its first token, 1, body new)", got)
	}
	// Stats count both instances of worker 1; the start ran again.
	s := h.Stats()
	if s.GuestCalls["_initialize"] != 3 || s.Requests != 2 || s.GuestCalls["proxy_on_tick"] != 2 {
		t.Errorf("host stats %v: want 3 starts, 2 requests, 2 ticks", s)
	}

	// A worker removed with Stop can be recreated too; StopAsync lets the
	// caller go on driving the draining worker.
	done := h.Worker(0).StopAsync(ctx)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("StopAsync did not finish")
	}
	if err := h.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	mustRequest(t, h.Worker(0), getAuthority)
	if v, _, _ := h.SharedData("k"); string(v) != "3" {
		t.Errorf("shared k = %q, want \"3\"", v)
	}
	if err := h.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Restart(ctx, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Restart after Close = %v, want ErrClosed", err)
	}
}
