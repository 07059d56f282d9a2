package wasmhost

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Module is a compiled proxy-wasm module, checked the way Envoy checks it at
// load time: its ABI version, its imports (only what Envoy provides) and the
// signatures of the callbacks it exports. One Module can back several Hosts;
// each Host instantiates it once per worker, as Envoy clones one compiled VM
// per worker thread.
//
// A Module owns a wazero runtime: Close it when done.
type Module struct {
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	abi      ABIVersion
	wasi     WASI

	exports map[string]api.FunctionDefinition
	// imports lists "module.name" of every imported function, in index order.
	imports []string
	// allocator is the export the host calls to get guest memory: malloc if
	// exported, else proxy_on_memory_allocate (proxy-wasm-cpp-host order).
	allocator string

	// hostNames[i] is the stats name of host function i; hostIndex inverts it.
	hostNames []string
	hostIndex map[string]int
	// unimplemented lists the env imports this host answers with
	// StatusUnimplemented.
	unimplemented []string
}

// Compile compiles wasm and checks it against what Envoy would accept:
//   - an exported proxy_abi_version_0_2_1, _0_2_0 or _0_1_0 marker (else
//     "Missing or unknown Proxy-Wasm ABI version" in Envoy);
//   - only imports Envoy provides: the env functions of that ABI version
//     (proxy_*, pthread_equal, emscripten_notify_memory_growth) and the 18
//     WASI functions of Envoy 1.33 to 1.38 (WASIEnvoy133) under
//     wasi_snapshot_preview1 / wasi_unstable, each with Envoy's signature;
//     anything else fails like Envoy's link step;
//   - malloc or proxy_on_memory_allocate exported;
//   - the callbacks the host calls, when exported, have Envoy's signatures.
//
// The wazero compiler is used where wazero supports it (amd64, arm64).
// Compile is CompileWASI with WASIEnvoy133, the strictest host.
func Compile(ctx context.Context, wasm []byte) (*Module, error) {
	return CompileWASI(ctx, wasm, WASIEnvoy133)
}

// CompileWASI is Compile against the WASI of cpp-host v: what the module may
// import, call at start and inside malloc, and how poll_oneoff answers.
func CompileWASI(ctx context.Context, wasm []byte, v WASI) (*Module, error) {
	if v != WASIEnvoy133 && v != WASI533 {
		return nil, fmt.Errorf("wasmhost: unknown WASI %d", int(v))
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig())
	m, err := compile(ctx, rt, wasm, v)
	if err != nil {
		_ = rt.Close(ctx)
		return nil, err
	}
	return m, nil
}

func compile(ctx context.Context, rt wazero.Runtime, wasm []byte, v WASI) (*Module, error) {
	compiled, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		return nil, fmt.Errorf("wasmhost: compile: %w", err)
	}
	m := &Module{rt: rt, compiled: compiled, wasi: v, exports: compiled.ExportedFunctions(), hostIndex: map[string]int{}}

	// ABI version: cpp-host picks the first marker it finds; a module with
	// several is ambiguous, so refuse it rather than guess.
	for name, v := range abiVersionExports {
		if _, ok := m.exports[name]; ok {
			if m.abi != "" {
				return nil, fmt.Errorf("wasmhost: module exports several proxy_abi_version_* markers")
			}
			m.abi = v
		}
	}
	if m.abi == "" {
		return nil, errors.New("wasmhost: module exports no proxy_abi_version_0_2_1, _0_2_0 or _0_1_0 function: Envoy refuses it (missing or unknown Proxy-Wasm ABI version)")
	}

	if len(compiled.ImportedMemories()) > 0 {
		mem := compiled.ImportedMemories()[0]
		mod, name, _ := mem.Import()
		return nil, fmt.Errorf("wasmhost: module imports memory %s.%s, which Envoy does not provide", mod, name)
	}

	for _, def := range compiled.ImportedFunctions() {
		mod, name, _ := def.Import()
		full := mod + "." + name
		if err := m.checkImport(mod, name, def); err != nil {
			return nil, err
		}
		m.imports = append(m.imports, full)
	}

	for name, s := range callbackSigs {
		if err := m.checkExport(name, s); err != nil {
			return nil, err
		}
	}
	for _, name := range []string{"proxy_on_request_headers", "proxy_on_response_headers"} {
		if err := m.checkExport(name, headersSig(m.abi)); err != nil {
			return nil, err
		}
	}
	switch {
	case m.exports["malloc"] != nil:
		m.allocator = "malloc"
	case m.exports["proxy_on_memory_allocate"] != nil:
		m.allocator = "proxy_on_memory_allocate"
	default:
		return nil, errors.New("wasmhost: module exports neither malloc nor proxy_on_memory_allocate: Envoy refuses it (missing malloc function)")
	}
	if _, ok := compiled.ExportedMemories()["memory"]; !ok {
		return nil, errors.New("wasmhost: module exports no memory named \"memory\"")
	}

	if err := m.instantiateHostModules(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Module) checkImport(mod, name string, def api.FunctionDefinition) error {
	var want sig
	switch mod {
	case "env":
		imp, ok := envImports[name]
		if !ok || !imp.registeredFor(m.abi) {
			return fmt.Errorf("wasmhost: module imports env.%s, which Envoy does not provide for ABI %s", name, m.abi)
		}
		want = imp.sig
	case wasiPreview1, wasiUnstable:
		if !wasiFunctionFor(m.wasi, name).provided {
			return fmt.Errorf("wasmhost: module imports %s.%s, which Envoy does not provide (%s)", mod, name, m.wasi)
		}
		// The signature is wazero's, checked below against its definition.
		return nil
	default:
		return fmt.Errorf("wasmhost: module imports %s.%s, which Envoy does not provide (unknown module %q)", mod, name, mod)
	}
	if !want.equal(def.ParamTypes(), def.ResultTypes()) {
		return fmt.Errorf("wasmhost: module imports %s.%s with type %s, Envoy's is %s",
			mod, name, sig{def.ParamTypes(), def.ResultTypes()}, want)
	}
	return nil
}

func (m *Module) checkExport(name string, want sig) error {
	def, ok := m.exports[name]
	if !ok {
		return nil
	}
	if !want.equal(def.ParamTypes(), def.ResultTypes()) {
		return fmt.Errorf("wasmhost: module exports %s with type %s, Envoy requires %s (bad function signature)",
			name, sig{def.ParamTypes(), def.ResultTypes()}, want)
	}
	return nil
}

// instantiateHostModules defines "env", "wasi_snapshot_preview1" and
// "wasi_unstable" in the runtime with exactly the functions the module
// imports. The functions find their worker through the call's context, so one
// set serves every Host and worker of this Module.
func (m *Module) instantiateHostModules(ctx context.Context) error {
	wasiImpl, err := wazeroWASI(ctx, m.rt)
	if err != nil {
		return err
	}
	builders := map[string]wazero.HostModuleBuilder{}
	for _, def := range m.compiled.ImportedFunctions() {
		mod, name, _ := def.Import()
		full := mod + "." + name
		if _, dup := m.hostIndex[full]; dup {
			continue
		}
		idx := len(m.hostNames)
		m.hostIndex[full] = idx
		m.hostNames = append(m.hostNames, statsName(mod, name))

		b := builders[mod]
		if b == nil {
			b = m.rt.NewHostModuleBuilder(mod)
			builders[mod] = b
		}
		var fn api.GoModuleFunction
		var params, results []api.ValueType
		if mod == "env" {
			imp := envImports[name]
			params, results = imp.sig.params, imp.sig.results
			impl, ok := envFuncs[name]
			if !ok {
				impl = unimplemented(name)
				m.unimplemented = append(m.unimplemented, name)
			}
			fn = guardHostCall(idx, full, imp.atStart, imp.inMalloc, impl)
		} else {
			w := wasiFunctionFor(m.wasi, name)
			var impl hostFunc
			if name == "poll_oneoff" {
				impl = pollOneoff(m.wasi)
			} else if own, ok := wasiOverrides[name]; ok {
				impl = own
			} else {
				inner, ok := wasiImpl[name]
				if !ok {
					return fmt.Errorf("wasmhost: module imports %s, which wazero does not implement", full)
				}
				impl = func(w *Worker, mod api.Module, stack []uint64) { inner.fn.Call(w.ctx, mod, stack) }
			}
			wdef := wasiImpl[name]
			params, results = wdef.params, wdef.results
			if !sigEqual(params, results, def) {
				return fmt.Errorf("wasmhost: module imports %s with type %s, WASI's is %s",
					full, sig{def.ParamTypes(), def.ResultTypes()}, sig{params, results})
			}
			fn = guardHostCall(idx, full, w.atStart, w.inMalloc, impl)
		}
		b.NewFunctionBuilder().WithGoModuleFunction(fn, params, results).Export(name)
	}
	// Instantiate in a fixed order so errors are deterministic.
	names := make([]string, 0, len(builders))
	for name := range builders {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, err := builders[name].Instantiate(ctx); err != nil {
			return fmt.Errorf("wasmhost: instantiate host module %s: %w", name, err)
		}
	}
	return nil
}

func sigEqual(params, results []api.ValueType, def api.FunctionDefinition) bool {
	return sig{params, results}.equal(def.ParamTypes(), def.ResultTypes())
}

// statsName is the key of a host function in Stats.HostCalls: the bare name
// for env functions ("proxy_log"), "module.name" for WASI ones.
func statsName(mod, name string) string {
	if mod == "env" {
		return name
	}
	return mod + "." + name
}

type wasiDef struct {
	fn              api.GoModuleFunction
	params, results []api.ValueType
}

// wazeroWASI returns wazero's WASI preview1 implementation, function by
// function, without instantiating it: the host re-exports only Envoy's subset
// under its own wrappers.
func wazeroWASI(ctx context.Context, rt wazero.Runtime) (map[string]wasiDef, error) {
	b := rt.NewHostModuleBuilder(wasiPreview1)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	cm, err := b.Compile(ctx)
	if err != nil {
		return nil, fmt.Errorf("wasmhost: compile wazero WASI: %w", err)
	}
	defs := map[string]wasiDef{}
	for name, def := range cm.ExportedFunctions() {
		fn, ok := def.GoFunction().(api.GoModuleFunction)
		if !ok {
			return nil, fmt.Errorf("wasmhost: wazero WASI %s is a %T, not a GoModuleFunction", name, def.GoFunction())
		}
		defs[name] = wasiDef{fn: fn, params: def.ParamTypes(), results: def.ResultTypes()}
	}
	return defs, nil
}

// WASI returns the cpp-host WASI the module was compiled against.
func (m *Module) WASI() WASI { return m.wasi }

// ABI returns the proxy-wasm ABI version the module declares.
func (m *Module) ABI() ABIVersion { return m.abi }

// Exports returns the names of the module's exported functions, sorted.
func (m *Module) Exports() []string {
	names := make([]string, 0, len(m.exports))
	for name := range m.exports {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Imports returns the module's imported functions as "module.name", in the
// module's import order.
func (m *Module) Imports() []string { return append([]string(nil), m.imports...) }

// HasExport reports whether the module exports a function named name.
func (m *Module) HasExport(name string) bool { return m.exports[name] != nil }

// Unimplemented returns the env imports this host provides only as stubs
// answering StatusUnimplemented (gRPC calls, for instance), sorted.
func (m *Module) Unimplemented() []string {
	names := append([]string(nil), m.unimplemented...)
	sort.Strings(names)
	return names
}

// EntriesPerRequest is the number of guest entries Envoy makes for one
// header-only HTTP request with this module, before any memory allocation:
// one per exported callback among proxy_on_context_create,
// proxy_on_request_headers, proxy_on_response_headers, proxy_on_log,
// proxy_on_done and proxy_on_delete (Envoy skips callbacks a module does not
// export). Each host→guest copy (reading a header, for instance) adds one
// more entry into malloc/proxy_on_memory_allocate at run time; Stats counts
// those.
func (m *Module) EntriesPerRequest() int {
	n := 0
	for _, name := range requestCallbacks {
		if m.exports[name] != nil {
			n++
		}
	}
	return n
}

// Close releases the wazero runtime and every Host instance made from it.
func (m *Module) Close(ctx context.Context) error { return m.rt.Close(ctx) }
