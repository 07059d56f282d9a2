package wasmhost

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/reqcount/reqcount/filter/wasmrewrite"
)

// TestPollOneoff checks the host's two cpp-host behaviours of poll_oneoff
// with a Go module whose runtime polls (a timer armed, then GC cycles: every
// start-the-world calls netpoll(0)), as built by go (importing poll_oneoff)
// and as rewritten by filter/wasmrewrite (answering its own). Only the
// imported poll_oneoff on Envoy 1.33-1.38's ENOSYS kills the VM, with Go's
// own message; the rewritten module makes no call to the host at all.
func TestPollOneoff(t *testing.T) {
	raw := rawGuest(t)
	own, res, err := wasmrewrite.OwnPollOneoff(raw)
	if err != nil || len(res.Replaced) != 1 {
		t.Fatalf("OwnPollOneoff = %v, %v; want one import replaced", res.Replaced, err)
	}
	tests := []struct {
		name      string
		wasm      []byte
		wasi      WASI
		wantCrash bool
		wantCalls bool // poll_oneoff calls to the host after start
	}{
		{"imported, ENOSYS (Envoy 1.33-1.38)", raw, WASIEnvoy133, true, true},
		{"imported, zero events (cpp-host #533)", raw, WASI533, false, true},
		{"own, ENOSYS (Envoy 1.33-1.38)", own, WASIEnvoy133, false, false},
		{"own, zero events (cpp-host #533)", own, WASI533, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			mod, err := CompileWASI(ctx, tt.wasm, tt.wasi)
			if err != nil {
				t.Fatal(err)
			}
			defer mod.Close(ctx)
			if got := mod.WASI(); got != tt.wasi {
				t.Errorf("WASI() = %v, want %v", got, tt.wasi)
			}
			h, err := New(ctx, mod, Config{PluginConfig: []byte("timer_gc=1"), ManualTicks: true})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close(ctx)
			var reqErr error
			for range 3 {
				if _, reqErr = h.Worker(0).Request(ctx, getAuthority); reqErr != nil {
					break
				}
			}
			crashed := errors.Is(reqErr, ErrCrashed)
			if crashed != tt.wantCrash {
				t.Fatalf("Request = %v, want a crash: %v", reqErr, tt.wantCrash)
			}
			if crashed {
				logs := strings.Join(h.Logs(LevelError), "")
				if !strings.Contains(logs, "poll_oneoff failed") {
					t.Errorf("error logs %q, want Go's \"poll_oneoff failed\"", logs)
				}
			}
			calls := h.Stats().PollOneoff
			if (calls.AfterStart > 0) != tt.wantCalls {
				t.Errorf("poll_oneoff calls after start = %d, want some: %v", calls.AfterStart, tt.wantCalls)
			}
			if !tt.wantCalls {
				if n := h.Stats().HostCalls["wasi_snapshot_preview1.poll_oneoff"]; n != 0 {
					t.Errorf("HostCalls[poll_oneoff] = %d, want 0", n)
				}
			}
		})
	}
}

// TestWASIImportsByHost checks the import surface of the two cpp-hosts: a
// function #533 added (clock_res_get) loads only on WASI533.
func TestWASIImportsByHost(t *testing.T) {
	tests := []struct {
		name string
		v    WASI
		ok   bool
	}{
		{"Envoy 1.33-1.38 lack clock_res_get", WASIEnvoy133, false},
		{"cpp-host #533 provides it", WASI533, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wasm := proxyModule(func(b *wasmBuilder) {
				b.importFunc("wasi_snapshot_preview1", "clock_res_get", p2, p1)
			}).bytes()
			ctx := context.Background()
			mod, err := CompileWASI(ctx, wasm, tt.v)
			if mod != nil {
				mod.Close(ctx)
			}
			if (err == nil) != tt.ok {
				t.Fatalf("CompileWASI(%v) = %v, want success: %v", tt.v, err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "clock_res_get") {
				t.Errorf("error %q does not name the import", err)
			}
		})
	}
}
