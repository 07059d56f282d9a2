package wasmhost

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func compileBuilder(t *testing.T, b *wasmBuilder) (*Module, error) {
	t.Helper()
	m, err := Compile(context.Background(), b.bytes())
	if m != nil {
		t.Cleanup(func() { m.Close(context.Background()) })
	}
	return m, err
}

func mustCompile(t *testing.T, b *wasmBuilder) *Module {
	t.Helper()
	m, err := compileBuilder(t, b)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return m
}

func TestCompileRefusesWhatEnvoyRefuses(t *testing.T) {
	tests := []struct {
		name    string
		build   func() *wasmBuilder
		wantErr string
	}{
		{
			name: "no ABI marker",
			build: func() *wasmBuilder {
				b := &wasmBuilder{}
				b.memory(1)
				b.fn("malloc", p1, p1, i32c(heapBase)...)
				return b
			},
			wantErr: "no proxy_abi_version_0_2_1, _0_2_0 or _0_1_0",
		},
		{
			name: "WASI function Envoy does not provide",
			build: func() *wasmBuilder {
				return proxyModule(func(b *wasmBuilder) {
					b.importFunc("wasi_snapshot_preview1", "sock_open", p3, p1)
				})
			},
			wantErr: "wasmhost: module imports wasi_snapshot_preview1.sock_open, which Envoy does not provide",
		},
		{
			name: "unknown env function",
			build: func() *wasmBuilder {
				return proxyModule(func(b *wasmBuilder) {
					b.importFunc("env", "proxy_frobnicate", p1, p1)
				})
			},
			wantErr: "module imports env.proxy_frobnicate, which Envoy does not provide",
		},
		{
			name: "env function of another ABI version",
			build: func() *wasmBuilder {
				return proxyModule(func(b *wasmBuilder) {
					b.importFunc("env", "proxy_continue_request", none, p1)
				})
			},
			wantErr: "env.proxy_continue_request, which Envoy does not provide for ABI 0.2.0",
		},
		{
			name: "unknown module",
			build: func() *wasmBuilder {
				return proxyModule(func(b *wasmBuilder) {
					b.importFunc("gojs", "runtime.wasmExit", p1, none)
				})
			},
			wantErr: "module imports gojs.runtime.wasmExit, which Envoy does not provide",
		},
		{
			name: "64-bit sizes in proxy_log",
			build: func() *wasmBuilder {
				return proxyModule(func(b *wasmBuilder) {
					b.importFunc("env", "proxy_log", []byte{tI32, tI32, tI64}, p1)
				})
			},
			wantErr: "module imports env.proxy_log with type (i32,i32,i64) -> (i32), Envoy's is (i32,i32,i32) -> (i32)",
		},
		{
			name: "WASI function with a wrong signature",
			build: func() *wasmBuilder {
				return proxyModule(func(b *wasmBuilder) {
					b.importFunc("wasi_snapshot_preview1", "random_get", p1, p1)
				})
			},
			wantErr: "module imports wasi_snapshot_preview1.random_get with type (i32) -> (i32), WASI's is (i32,i32) -> (i32)",
		},
		{
			name: "no allocator",
			build: func() *wasmBuilder {
				b := &wasmBuilder{}
				b.fn("proxy_abi_version_0_2_0", none, none)
				b.memory(1)
				return b
			},
			wantErr: "neither malloc nor proxy_on_memory_allocate",
		},
		{
			name: "callback with a wrong signature",
			build: func() *wasmBuilder {
				b := proxyModule(nil)
				b.fn("proxy_on_request_headers", p2, p1, i32c(0)...)
				return b
			},
			wantErr: "module exports proxy_on_request_headers with type (i32,i32) -> (i32), Envoy requires (i32,i32,i32) -> (i32)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compileBuilder(t, tt.build())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Compile error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestCompileReportsModule(t *testing.T) {
	b := &wasmBuilder{}
	b.importFunc("env", "proxy_log", p3, p1)
	b.importFunc("env", "proxy_grpc_cancel", p1, p1)
	b.importFunc("wasi_unstable", "fd_write", p4, p1)
	b.fn("proxy_abi_version_0_1_0", none, none)
	b.memory(1)
	b.fn("proxy_on_memory_allocate", p1, p1, i32c(heapBase)...)
	b.fn("proxy_on_context_create", p2, none)
	b.fn("proxy_on_request_headers", p2, p1, i32c(0)...) // ABI 0.1.0: no end_of_stream
	b.fn("proxy_on_delete", p1, none)
	m := mustCompile(t, b)

	if got := m.ABI(); got != ABI010 {
		t.Errorf("ABI() = %q, want %q", got, ABI010)
	}
	if got, want := strings.Join(m.Imports(), " "), "env.proxy_log env.proxy_grpc_cancel wasi_unstable.fd_write"; got != want {
		t.Errorf("Imports() = %q, want %q", got, want)
	}
	if got := m.EntriesPerRequest(); got != 3 {
		t.Errorf("EntriesPerRequest() = %d, want 3 (context_create, request_headers, delete)", got)
	}
	if got := strings.Join(m.Unimplemented(), " "); got != "proxy_grpc_cancel" {
		t.Errorf("Unimplemented() = %q, want proxy_grpc_cancel", got)
	}
	if !m.HasExport("proxy_on_delete") || m.HasExport("proxy_on_log") {
		t.Errorf("HasExport disagrees with the module's exports %v", m.Exports())
	}
}

// startModule builds a module whose _initialize calls the import named
// (with all-zero arguments) after logging "init" at info.
func startModule(importName string, params, results []byte) *wasmBuilder {
	var logIdx, target uint32
	b := proxyModule(func(b *wasmBuilder) {
		logIdx = b.importFunc("env", "proxy_log", p3, p1)
		if importName != "" {
			mod, name, _ := strings.Cut(importName, ".")
			target = b.importFunc(mod, name, params, results)
		}
	})
	b.dataAt(100, "init")
	body := code(i32c(int32(LevelInfo)), i32c(100), i32c(4), call(logIdx), []byte{opDrop})
	if importName != "" {
		for _, p := range params {
			if p == tI64 {
				body = code(body, i64c(0))
			} else {
				body = code(body, i32c(0))
			}
		}
		body = code(body, call(target))
		for range results {
			body = append(body, opDrop)
		}
	}
	b.fn("_initialize", none, none, body...)
	return b
}

func TestStartAllowsOnlyStartTimeImports(t *testing.T) {
	tests := []struct {
		name    string
		call    string
		params  []byte
		results []byte
		wantErr string // "" = start succeeds
	}{
		{name: "logging only"},
		{name: "clock", call: "wasi_snapshot_preview1.clock_time_get", params: []byte{tI32, tI64, tI32}, results: p1},
		{name: "random", call: "wasi_snapshot_preview1.random_get", params: p2, results: p1},
		{name: "memory growth notice", call: "env.emscripten_notify_memory_growth", params: p1},
		{
			name: "tick period", call: "env.proxy_set_tick_period_milliseconds", params: p1, results: p1,
			wantErr: "proxy_set_tick_period_milliseconds called during _initialize",
		},
		{
			name: "shared data", call: "env.proxy_set_shared_data", params: p5, results: p1,
			wantErr: "proxy_set_shared_data called during _initialize",
		},
		{
			name: "sched_yield", call: "wasi_snapshot_preview1.sched_yield", results: p1,
			wantErr: "wasi_snapshot_preview1.sched_yield called during _initialize",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustCompile(t, startModule(tt.call, tt.params, tt.results))
			h, err := New(context.Background(), m, Config{Workers: 2, ManualTicks: true})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				defer h.Close(context.Background())
				if got := h.Logs(LevelInfo); len(got) != 2 || got[0] != "init" {
					t.Errorf("info logs = %q, want \"init\" from each of 2 workers", got)
				}
				if n := h.Stats().GuestCalls["_initialize"]; n != 2 {
					t.Errorf("_initialize called %d times, want once per worker (2)", n)
				}
				return
			}
			if err == nil {
				h.Close(context.Background())
				t.Fatalf("New succeeded, want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrCrashed) {
				t.Fatalf("New error = %v, want ErrCrashed containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestStartOrder(t *testing.T) {
	tests := []struct {
		name    string
		exports []string
		want    []string // guest calls made by New, in any order, each once
	}{
		{name: "reactor", exports: []string{"_initialize"}, want: []string{"_initialize"}},
		{name: "reactor with main", exports: []string{"_initialize", "main"}, want: []string{"_initialize", "main"}},
		{name: "reactor with __main_void", exports: []string{"_initialize", "__main_void"}, want: []string{"_initialize", "__main_void"}},
		{name: "command", exports: []string{"_start"}, want: []string{"_start"}},
		{name: "reactor wins over command", exports: []string{"_initialize", "_start"}, want: []string{"_initialize"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := proxyModule(nil)
			for _, e := range tt.exports {
				switch e {
				case "main":
					b.fn(e, p2, p1, i32c(0)...)
				case "__main_void":
					b.fn(e, none, p1, i32c(0)...)
				default:
					b.fn(e, none, none)
				}
			}
			b.fn("proxy_on_context_create", p2, none)
			b.fn("proxy_on_vm_start", p2, p1, i32c(1)...)
			b.fn("proxy_on_configure", p2, p1, i32c(1)...)
			h, err := New(context.Background(), mustCompile(t, b), Config{ManualTicks: true})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer h.Close(context.Background())
			got := h.Stats().GuestCalls
			want := map[string]uint64{"proxy_on_context_create": 1, "proxy_on_vm_start": 1, "proxy_on_configure": 1}
			for _, name := range tt.want {
				want[name] = 1
			}
			if len(got) != len(want) {
				t.Fatalf("guest calls = %v, want %v", got, want)
			}
			for name, n := range want {
				if got[name] != n {
					t.Fatalf("guest calls = %v, want %v", got, want)
				}
			}
		})
	}
}

// failingStartModule logs "bad config" at error level in the named callback
// and returns false from it.
func failingStartModule(callback string) *wasmBuilder {
	var logIdx uint32
	b := proxyModule(func(b *wasmBuilder) { logIdx = b.importFunc("env", "proxy_log", p3, p1) })
	b.dataAt(100, "bad config")
	for _, name := range []string{"proxy_on_vm_start", "proxy_on_configure"} {
		if name == callback {
			b.fn(name, p2, p1, code(i32c(int32(LevelError)), i32c(100), i32c(10), call(logIdx), []byte{opDrop}, i32c(0))...)
		} else {
			b.fn(name, p2, p1, i32c(1)...)
		}
	}
	return b
}

func TestStartFailsWhenModuleRefusesConfig(t *testing.T) {
	for _, callback := range []string{"proxy_on_vm_start", "proxy_on_configure"} {
		t.Run(callback, func(t *testing.T) {
			_, err := New(context.Background(), mustCompile(t, failingStartModule(callback)), Config{Workers: 2})
			if err == nil {
				t.Fatal("New succeeded, want an error")
			}
			for _, want := range []string{callback + ": returned false", "module logged: bad config"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("New error = %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

// requestModule builds a module whose proxy_on_request_headers runs body and
// whose malloc runs mallocBody before returning heapBase. b holds the
// imports, which the bodies may call by index.
func requestModule(b *wasmBuilder, body, mallocBody []byte) *wasmBuilder {
	b.fn("proxy_abi_version_0_2_0", none, none)
	b.memory(1)
	b.fn("malloc", p1, p1, code(mallocBody, i32c(heapBase))...)
	b.fn("proxy_on_context_create", p2, none)
	b.fn("proxy_on_request_headers", p3, p1, code(body, i32c(0))...)
	return b
}

func TestGuestCallRestrictions(t *testing.T) {
	ctx := context.Background()
	t.Run("forbidden import inside malloc", func(t *testing.T) {
		b := &wasmBuilder{}
		getProp := b.importFunc("env", "proxy_get_property", p4, p1)
		tick := b.importFunc("env", "proxy_set_tick_period_milliseconds", p1, p1)
		requestModule(b,
			// proxy_get_property("plugin_name", &ptr, &size): the host
			// copies the value in through malloc.
			code(i32c(100), i32c(11), i32c(200), i32c(204), call(getProp), []byte{opDrop}),
			code(i32c(10), call(tick), []byte{opDrop}))
		b.dataAt(100, "plugin_name")
		h, err := New(ctx, mustCompile(t, b), Config{PluginName: "probe", ManualTicks: true})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close(ctx)
		_, err = h.Worker(0).Request(ctx, Request{})
		if !errors.Is(err, ErrCrashed) || !strings.Contains(err.Error(), "proxy_set_tick_period_milliseconds called during malloc") {
			t.Fatalf("Request = %v, want a crash naming the forbidden call inside malloc", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		b := requestModule(&wasmBuilder{}, []byte{opUnreachable}, nil)
		h, err := New(ctx, mustCompile(t, b), Config{Workers: 2, ManualTicks: true})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close(ctx)
		if _, err := h.Worker(0).Request(ctx, Request{}); !errors.Is(err, ErrCrashed) || !strings.Contains(err.Error(), "unreachable") {
			t.Fatalf("Request = %v, want a crash on unreachable", err)
		}
		if h.Worker(1).Crashed() != nil || len(h.Stats().Crashes) != 1 {
			t.Errorf("worker 1 crashed %v, crashes %v: want only worker 0 down", h.Worker(1).Crashed(), h.Stats().Crashes)
		}
	})
	t.Run("unimplemented import", func(t *testing.T) {
		b := &wasmBuilder{}
		grpcCancel := b.importFunc("env", "proxy_grpc_cancel", p1, p1)
		logIdx := b.importFunc("env", "proxy_log", p3, p1)
		requestModule(b,
			// proxy_log(info, 100, proxy_grpc_cancel(1)): logs as many bytes
			// as the status code says, so 12 (Unimplemented) logs the whole
			// "unimplement!".
			code(i32c(int32(LevelInfo)), i32c(100), i32c(1), call(grpcCancel), call(logIdx), []byte{opDrop}),
			nil)
		b.dataAt(100, "unimplement!")
		h, err := New(ctx, mustCompile(t, b), Config{ManualTicks: true})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close(ctx)
		if _, err := h.Worker(0).Request(ctx, Request{}); err != nil {
			t.Fatal(err)
		}
		if got := h.Logs(LevelWarn); len(got) != 1 || !strings.Contains(got[0], "proxy_grpc_cancel is not implemented") {
			t.Errorf("warnings = %q, want one about proxy_grpc_cancel", got)
		}
		if got := h.Logs(LevelInfo); len(got) != 1 || got[0] != "unimplement!" {
			t.Errorf("info logs = %q, want the 12 bytes a status of 12 selects", got)
		}
	})
}
