package e2e_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// These tests check the shape of build/filter.wasm, the module `make build`
// makes with -tags proxywasm_lean: what it exports to Envoy and what it
// imports from it. They compile it with wazero and run nothing.

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// moduleSig is a wasm function signature.
type moduleSig struct{ params, results []api.ValueType }

// moduleLeanExports are the callbacks the lean filter must export, with the
// signatures of proxy-wasm ABI 0.2.1 (every pointer, size and id is an i32).
var moduleLeanExports = []struct {
	name string
	sig  moduleSig
}{
	{"_initialize", moduleSig{nil, nil}},
	{"proxy_abi_version_0_2_0", moduleSig{nil, nil}},
	{"proxy_on_memory_allocate", moduleSig{[]api.ValueType{i32}, []api.ValueType{i32}}},
	{"proxy_on_context_create", moduleSig{[]api.ValueType{i32, i32}, nil}},
	{"proxy_on_vm_start", moduleSig{[]api.ValueType{i32, i32}, []api.ValueType{i32}}},
	{"proxy_on_configure", moduleSig{[]api.ValueType{i32, i32}, []api.ValueType{i32}}},
	{"proxy_on_request_headers", moduleSig{[]api.ValueType{i32, i32, i32}, []api.ValueType{i32}}},
	{"proxy_on_tick", moduleSig{[]api.ValueType{i32}, nil}},
	{"proxy_on_http_call_response", moduleSig{[]api.ValueType{i32, i32, i32, i32, i32}, nil}},
	{"proxy_on_done", moduleSig{[]api.ValueType{i32}, []api.ValueType{i32}}},
	{"proxy_on_delete", moduleSig{[]api.ValueType{i32}, nil}},
}

// moduleFullOnlyExports are the SDK's other callbacks: a plain build exports
// them, the lean build must not (Envoy would enter the guest for each of
// them on every request or connection for nothing).
var moduleFullOnlyExports = []string{
	"proxy_on_log",
	"proxy_on_response_headers",
	"proxy_on_response_body",
	"proxy_on_response_trailers",
	"proxy_on_request_body",
	"proxy_on_request_trailers",
	"proxy_on_queue_ready",
	"proxy_on_new_connection",
	"proxy_on_downstream_data",
	"proxy_on_downstream_connection_close",
	"proxy_on_upstream_data",
	"proxy_on_upstream_connection_close",
}

// moduleHostCalls are the env.proxy_* host functions of ABI 0.2.1 the SDK can
// import, with their signatures (proxy-wasm spec, abi-versions/v0.2.1).
// Only increment_metric and record_metric take an i64.
var moduleHostCalls = map[string]moduleSig{
	"proxy_log":                          {[]api.ValueType{i32, i32, i32}, []api.ValueType{i32}},
	"proxy_send_local_response":          {[]api.ValueType{i32, i32, i32, i32, i32, i32, i32, i32}, []api.ValueType{i32}},
	"proxy_get_shared_data":              {[]api.ValueType{i32, i32, i32, i32, i32}, []api.ValueType{i32}},
	"proxy_set_shared_data":              {[]api.ValueType{i32, i32, i32, i32, i32}, []api.ValueType{i32}},
	"proxy_register_shared_queue":        {[]api.ValueType{i32, i32, i32}, []api.ValueType{i32}},
	"proxy_resolve_shared_queue":         {[]api.ValueType{i32, i32, i32, i32, i32}, []api.ValueType{i32}},
	"proxy_dequeue_shared_queue":         {[]api.ValueType{i32, i32, i32}, []api.ValueType{i32}},
	"proxy_enqueue_shared_queue":         {[]api.ValueType{i32, i32, i32}, []api.ValueType{i32}},
	"proxy_get_header_map_value":         {[]api.ValueType{i32, i32, i32, i32, i32}, []api.ValueType{i32}},
	"proxy_add_header_map_value":         {[]api.ValueType{i32, i32, i32, i32, i32}, []api.ValueType{i32}},
	"proxy_replace_header_map_value":     {[]api.ValueType{i32, i32, i32, i32, i32}, []api.ValueType{i32}},
	"proxy_remove_header_map_value":      {[]api.ValueType{i32, i32, i32}, []api.ValueType{i32}},
	"proxy_get_header_map_pairs":         {[]api.ValueType{i32, i32, i32}, []api.ValueType{i32}},
	"proxy_set_header_map_pairs":         {[]api.ValueType{i32, i32, i32}, []api.ValueType{i32}},
	"proxy_get_buffer_bytes":             {[]api.ValueType{i32, i32, i32, i32, i32}, []api.ValueType{i32}},
	"proxy_set_buffer_bytes":             {[]api.ValueType{i32, i32, i32, i32, i32}, []api.ValueType{i32}},
	"proxy_continue_stream":              {[]api.ValueType{i32}, []api.ValueType{i32}},
	"proxy_close_stream":                 {[]api.ValueType{i32}, []api.ValueType{i32}},
	"proxy_http_call":                    {[]api.ValueType{i32, i32, i32, i32, i32, i32, i32, i32, i32, i32}, []api.ValueType{i32}},
	"proxy_call_foreign_function":        {[]api.ValueType{i32, i32, i32, i32, i32, i32}, []api.ValueType{i32}},
	"proxy_set_tick_period_milliseconds": {[]api.ValueType{i32}, []api.ValueType{i32}},
	"proxy_set_effective_context":        {[]api.ValueType{i32}, []api.ValueType{i32}},
	"proxy_done":                         {nil, []api.ValueType{i32}},
	"proxy_define_metric":                {[]api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}},
	"proxy_increment_metric":             {[]api.ValueType{i32, i64}, []api.ValueType{i32}},
	"proxy_record_metric":                {[]api.ValueType{i32, i64}, []api.ValueType{i32}},
	"proxy_get_metric":                   {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
	"proxy_get_property":                 {[]api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}},
	"proxy_set_property":                 {[]api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}},
}

// moduleEnvoyWASI are the wasi_snapshot_preview1 functions every Envoy the
// module supports provides: those of Envoy 1.33 to 1.38 (proxy-wasm-cpp-host
// #427's FOR_ALL_WASI_FUNCTIONS), a subset of #533's. A module importing any
// other fails to load on them. poll_oneoff is among them, but the module must
// not import it: those Envoys answer it with ENOSYS and Go's runtime throws
// (filter/wasmrewrite).
var moduleEnvoyWASI = []string{
	"fd_write", "fd_read", "fd_seek", "fd_close", "fd_fdstat_get", "fd_fdstat_set_flags",
	"environ_get", "environ_sizes_get", "args_get", "args_sizes_get", "clock_time_get",
	"random_get", "sched_yield", "proc_exit", "path_open",
	"fd_prestat_get", "fd_prestat_dir_name",
}

// moduleCompiled compiles build/filter.wasm once for all TestModule tests.
var moduleCompiled = sync.OnceValues(func() (wazero.CompiledModule, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(filepath.Join(root, "build", "filter.wasm"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errors.New("build/filter.wasm missing: run `make build`")
	}
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	return wazero.NewRuntime(ctx).CompileModule(ctx, bin)
})

func moduleFilter(t *testing.T) wazero.CompiledModule {
	t.Helper()
	m, err := moduleCompiled()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// moduleSignature reports whether d has the given params and results.
func moduleSignature(d api.FunctionDefinition, params, results []api.ValueType) bool {
	return slices.Equal(d.ParamTypes(), params) && slices.Equal(d.ResultTypes(), results)
}

func TestModuleExports(t *testing.T) {
	type exportCase struct {
		name   string
		export string
		memory bool // a memory export rather than a function
		want   bool
		sig    moduleSig
	}
	tests := []exportCase{
		{name: "exports its linear memory for the host to copy into", export: "memory", memory: true, want: true},
	}
	for _, e := range moduleLeanExports {
		tests = append(tests, exportCase{name: "exports " + e.name, export: e.name, want: true, sig: e.sig})
	}
	for _, name := range moduleFullOnlyExports {
		tests = append(tests, exportCase{name: "lean build leaves out " + name, export: name})
	}

	m := moduleFilter(t)
	functions, memories := m.ExportedFunctions(), m.ExportedMemories()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.memory {
				if _, ok := memories[tc.export]; ok != tc.want {
					t.Fatalf("memory %q exported = %v, want %v", tc.export, ok, tc.want)
				}
				return
			}
			d, ok := functions[tc.export]
			if ok != tc.want {
				t.Fatalf("exported = %v, want %v", ok, tc.want)
			}
			if ok && !moduleSignature(d, tc.sig.params, tc.sig.results) {
				t.Errorf("signature %v -> %v, want %v -> %v", d.ParamTypes(), d.ResultTypes(), tc.sig.params, tc.sig.results)
			}
		})
	}
}
func TestModuleImports(t *testing.T) {
	imports := moduleFilter(t).ImportedFunctions()
	if len(imports) == 0 {
		t.Fatal("module imports nothing: not a proxy-wasm module built by Go")
	}
	var proxyCalls int
	for _, d := range imports {
		module, name, _ := d.Import()
		t.Run(module+"."+name, func(t *testing.T) {
			switch module {
			case "env":
				sig, ok := moduleHostCalls[name]
				if !ok || !strings.HasPrefix(name, "proxy_") {
					t.Fatalf("env.%s is not a proxy-wasm 0.2.1 host function", name)
				}
				if !moduleSignature(d, sig.params, sig.results) {
					t.Errorf("signature %v -> %v, want %v -> %v", d.ParamTypes(), d.ResultTypes(), sig.params, sig.results)
				}
			case "wasi_snapshot_preview1":
				if name == "poll_oneoff" {
					t.Errorf("the module imports poll_oneoff: Envoy 1.33-1.38 answer it with ENOSYS and Go's runtime throws (build.sh must run filter/wasmrewrite)")
				} else if !slices.Contains(moduleEnvoyWASI, name) {
					t.Errorf("Envoy 1.33-1.38 do not provide wasi_snapshot_preview1.%s: the module would fail to load", name)
				}
			default:
				t.Errorf("import from module %q: Envoy provides only env and wasi_snapshot_preview1", module)
			}
		})
		if module == "env" {
			proxyCalls++
		}
	}
	// The filter dispatches its counts with proxy_http_call: a module that
	// imports no host call at all has lost its host-call shim.
	if proxyCalls == 0 {
		t.Error("module imports no env.proxy_* function")
	}
}
