package wasmhost

import (
	"fmt"
	"strings"

	"github.com/tetratelabs/wazero/api"
)

// ABIVersion is the proxy-wasm ABI a module declares by exporting a function
// named proxy_abi_version_X_Y_Z, the way proxy-wasm-cpp-host detects it.
type ABIVersion string

// The ABI versions Envoy (proxy-wasm-cpp-host) accepts.
const (
	ABI010 ABIVersion = "0.1.0"
	ABI020 ABIVersion = "0.2.0"
	ABI021 ABIVersion = "0.2.1"
)

// abiVersionExports maps the marker export to the version it declares.
var abiVersionExports = map[string]ABIVersion{
	"proxy_abi_version_0_1_0": ABI010,
	"proxy_abi_version_0_2_0": ABI020,
	"proxy_abi_version_0_2_1": ABI021,
}

// Status is a proxy-wasm WasmResult: what every proxy_* host function returns.
type Status uint32

// Status values from the proxy-wasm ABI (proxy-wasm-cpp-host WasmResult).
const (
	StatusOK                   Status = 0
	StatusNotFound             Status = 1
	StatusBadArgument          Status = 2
	StatusSerializationFailure Status = 3
	StatusParseFailure         Status = 4
	StatusInvalidMemoryAccess  Status = 6
	StatusEmpty                Status = 7
	StatusCasMismatch          Status = 8
	StatusInternalFailure      Status = 10
	StatusUnimplemented        Status = 12
)

// MapType selects a header map in the proxy_*_header_map_* calls.
type MapType uint32

// Header map types from the proxy-wasm ABI.
const (
	MapRequestHeaders           MapType = 0
	MapRequestTrailers          MapType = 1
	MapResponseHeaders          MapType = 2
	MapResponseTrailers         MapType = 3
	MapGrpcReceiveInitialMeta   MapType = 4
	MapGrpcReceiveTrailingMeta  MapType = 5
	MapHTTPCallResponseHeaders  MapType = 6
	MapHTTPCallResponseTrailers MapType = 7
	mapTypeMax                  MapType = 7
)

// BufferType selects a buffer in proxy_get_buffer_bytes / proxy_get_buffer_status.
type BufferType uint32

// Buffer types from the proxy-wasm ABI.
const (
	BufferHTTPRequestBody      BufferType = 0
	BufferHTTPResponseBody     BufferType = 1
	BufferDownstreamData       BufferType = 2
	BufferUpstreamData         BufferType = 3
	BufferHTTPCallResponseBody BufferType = 4
	BufferGrpcReceive          BufferType = 5
	BufferVMConfiguration      BufferType = 6
	BufferPluginConfiguration  BufferType = 7
	BufferCallData             BufferType = 8
	bufferTypeMax              BufferType = 8
)

// LogLevel is a proxy_log level.
type LogLevel uint32

// Log levels from the proxy-wasm ABI.
const (
	LevelTrace    LogLevel = 0
	LevelDebug    LogLevel = 1
	LevelInfo     LogLevel = 2
	LevelWarn     LogLevel = 3
	LevelError    LogLevel = 4
	LevelCritical LogLevel = 5
	numLevels              = 6
)

// String returns the level's name as Envoy prints it.
func (l LogLevel) String() string {
	switch l {
	case LevelTrace:
		return "trace"
	case LevelDebug:
		return "debug"
	case LevelInfo:
		return "info"
	case LevelWarn:
		return "warn"
	case LevelError:
		return "error"
	case LevelCritical:
		return "critical"
	}
	return fmt.Sprintf("level(%d)", uint32(l))
}

// MetricType is the kind of metric proxy_define_metric creates.
type MetricType uint32

// Metric types from the proxy-wasm ABI.
const (
	MetricCounter   MetricType = 0
	MetricGauge     MetricType = 1
	MetricHistogram MetricType = 2
)

// String returns the metric type's name.
func (t MetricType) String() string {
	switch t {
	case MetricCounter:
		return "counter"
	case MetricGauge:
		return "gauge"
	case MetricHistogram:
		return "histogram"
	}
	return fmt.Sprintf("metric(%d)", uint32(t))
}

// Action is what a proxy_on_*_headers callback returns.
type Action uint32

// Actions from the proxy-wasm ABI.
const (
	ActionContinue Action = 0
	ActionPause    Action = 1
)

// String returns "continue" or "pause".
func (a Action) String() string {
	switch a {
	case ActionContinue:
		return "continue"
	case ActionPause:
		return "pause"
	}
	return fmt.Sprintf("action(%d)", uint32(a))
}

// Stream types for proxy_continue_stream / proxy_close_stream.
const (
	streamRequest  = 0
	streamResponse = 1
	streamTypeMax  = 3
)

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// sig is a wasm function type.
type sig struct {
	params, results []api.ValueType
}

func (s sig) String() string {
	return "(" + typeList(s.params) + ") -> (" + typeList(s.results) + ")"
}

func (s sig) equal(params, results []api.ValueType) bool {
	return string(s.params) == string(params) && string(s.results) == string(results)
}

func typeList(ts []api.ValueType) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = api.ValueTypeName(t)
	}
	return strings.Join(names, ",")
}

// i32s returns n i32 value types.
func i32s(n int) []api.ValueType {
	ts := make([]api.ValueType, n)
	for i := range ts {
		ts[i] = i32
	}
	return ts
}

// proxyCall returns the signature of a proxy_* host function: n i32 params,
// one i32 (WasmResult) result.
func proxyCall(n int) sig { return sig{i32s(n), i32s(1)} }

// envImport describes one function Envoy registers in the "env" module.
type envImport struct {
	sig sig
	// abis lists the ABI versions for which Envoy registers it; nil = all.
	abis []ABIVersion
	// atStart: callable during _initialize/_start (proxy-wasm-cpp-host
	// WasmBase::startVm's allow list).
	atStart bool
	// inMalloc: callable while the host is inside the module's malloc
	// (proxy-wasm-cpp-host WasmBase::allocMemory's allow list).
	inMalloc bool
}

func (e envImport) registeredFor(v ABIVersion) bool {
	if e.abis == nil {
		return true
	}
	for _, a := range e.abis {
		if a == v {
			return true
		}
	}
	return false
}

// envImports is every function Envoy (proxy-wasm-cpp-host registerCallbacks:
// FOR_ALL_HOST_FUNCTIONS plus the per-ABI ones, pthread_equal and
// emscripten_notify_memory_growth) provides in module "env", with its wasm32
// signature. A module importing anything else from "env" fails to link.
var envImports = map[string]envImport{
	"proxy_log":                          {sig: proxyCall(3), atStart: true, inMalloc: true},
	"proxy_get_log_level":                {sig: proxyCall(1), abis: []ABIVersion{ABI021}},
	"proxy_get_status":                   {sig: proxyCall(3)},
	"proxy_set_property":                 {sig: proxyCall(4)},
	"proxy_get_property":                 {sig: proxyCall(4)},
	"proxy_send_local_response":          {sig: proxyCall(8)},
	"proxy_get_shared_data":              {sig: proxyCall(5)},
	"proxy_set_shared_data":              {sig: proxyCall(5)},
	"proxy_register_shared_queue":        {sig: proxyCall(3)},
	"proxy_resolve_shared_queue":         {sig: proxyCall(5)},
	"proxy_dequeue_shared_queue":         {sig: proxyCall(3)},
	"proxy_enqueue_shared_queue":         {sig: proxyCall(3)},
	"proxy_get_header_map_value":         {sig: proxyCall(5)},
	"proxy_add_header_map_value":         {sig: proxyCall(5)},
	"proxy_replace_header_map_value":     {sig: proxyCall(5)},
	"proxy_remove_header_map_value":      {sig: proxyCall(3)},
	"proxy_get_header_map_pairs":         {sig: proxyCall(3)},
	"proxy_set_header_map_pairs":         {sig: proxyCall(3)},
	"proxy_get_header_map_size":          {sig: proxyCall(2)},
	"proxy_get_buffer_status":            {sig: proxyCall(3)},
	"proxy_get_buffer_bytes":             {sig: proxyCall(5)},
	"proxy_set_buffer_bytes":             {sig: proxyCall(5)},
	"proxy_http_call":                    {sig: proxyCall(10)},
	"proxy_grpc_call":                    {sig: proxyCall(12)},
	"proxy_grpc_stream":                  {sig: proxyCall(9)},
	"proxy_grpc_close":                   {sig: proxyCall(1)},
	"proxy_grpc_cancel":                  {sig: proxyCall(1)},
	"proxy_grpc_send":                    {sig: proxyCall(4)},
	"proxy_set_tick_period_milliseconds": {sig: proxyCall(1)},
	"proxy_get_current_time_nanoseconds": {sig: proxyCall(1)},
	"proxy_define_metric":                {sig: proxyCall(4)},
	"proxy_increment_metric":             {sig: sig{[]api.ValueType{i32, i64}, i32s(1)}},
	"proxy_record_metric":                {sig: sig{[]api.ValueType{i32, i64}, i32s(1)}},
	"proxy_get_metric":                   {sig: proxyCall(2)},
	"proxy_set_effective_context":        {sig: proxyCall(1)},
	"proxy_done":                         {sig: proxyCall(0)},
	"proxy_call_foreign_function":        {sig: proxyCall(6)},
	"proxy_get_configuration":            {sig: proxyCall(2), abis: []ABIVersion{ABI010}},
	"proxy_continue_request":             {sig: proxyCall(0), abis: []ABIVersion{ABI010}},
	"proxy_continue_response":            {sig: proxyCall(0), abis: []ABIVersion{ABI010}},
	"proxy_clear_route_cache":            {sig: proxyCall(0), abis: []ABIVersion{ABI010}},
	"proxy_continue_stream":              {sig: proxyCall(1), abis: []ABIVersion{ABI020, ABI021}},
	"proxy_close_stream":                 {sig: proxyCall(1), abis: []ABIVersion{ABI020, ABI021}},
	"pthread_equal":                      {sig: proxyCall(2)},
	"emscripten_notify_memory_growth":    {sig: sig{i32s(1), nil}, atStart: true},
}

// Names of the WASI modules Envoy provides (the same functions under both).
const (
	wasiPreview1 = "wasi_snapshot_preview1"
	wasiUnstable = "wasi_unstable"
)

// WASI selects which proxy-wasm-cpp-host WASI surface a Module is checked
// against and run with. The two differ in what a module may import, what it
// may call during its start and inside malloc, and in poll_oneoff, which the
// Go runtime calls at the end of a GC cycle once it has a timer (FACTS §2).
type WASI int

const (
	// WASIEnvoy133 is the cpp-host of Envoy 1.33 to 1.38 (PR #427,
	// proxy-wasm-cpp-host c4d7bb0, up to 94091cd^): 18 WASI functions, a
	// shorter start-time allow list without poll_oneoff, and poll_oneoff
	// answering ENOSYS (52), on which Go's runtime throws. The default,
	// and the stricter of the two in every respect.
	WASIEnvoy133 WASI = iota
	// WASI533 is the cpp-host from PR #533 on (94091cd, 2026-04-06): every
	// WASI function of FACTS §2, poll_oneoff allowed at start and inside
	// malloc, answering success with zero events after writing 0 to
	// *nevents (EFAULT if it cannot).
	WASI533
)

func (v WASI) String() string {
	switch v {
	case WASIEnvoy133:
		return "cpp-host #427 (Envoy 1.33-1.38, poll_oneoff ENOSYS)"
	case WASI533:
		return "cpp-host #533 (poll_oneoff succeeds with zero events)"
	}
	return fmt.Sprintf("WASI(%d)", int(v))
}

// wasiFunction says whether a cpp-host provides one WASI function and when
// it lets a module call it.
type wasiFunction struct {
	provided bool // importable at all (FOR_ALL_WASI_FUNCTIONS)
	atStart  bool // callable during _initialize/_start (WasmBase::startVm)
	inMalloc bool // callable while the host is inside malloc (WasmBase::allocMemory)
}

// wasiFunctionFor returns what the cpp-host of v allows for WASI function
// name.
func wasiFunctionFor(v WASI, name string) wasiFunction {
	if v == WASIEnvoy133 {
		return wasiFunction{
			provided: wasi427[name],
			atStart:  wasi427AtStart[name],
			inMalloc: wasiInMalloc427[name],
		}
	}
	return wasiFunction{
		provided: wasi533[name],
		atStart:  wasi533[name] && !wasiNotAtStart533[name],
		inMalloc: wasiInMalloc427[name] || name == "poll_oneoff",
	}
}

// set makes a lookup set of names.
func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// wasi427 is FOR_ALL_WASI_FUNCTIONS of cpp-host #427 (include/proxy-wasm/
// exports.h at 94091cd^): what Envoy 1.33 to 1.38 provide. A module
// importing any other WASI function fails to load there.
var wasi427 = set(
	"fd_write", "fd_read", "fd_seek", "fd_close", "fd_fdstat_get", "fd_fdstat_set_flags",
	"environ_get", "environ_sizes_get", "args_get", "args_sizes_get", "clock_time_get",
	"random_get", "sched_yield", "poll_oneoff", "proc_exit", "path_open",
	"fd_prestat_get", "fd_prestat_dir_name",
)

// wasi427AtStart is the start-time allow list of WasmBase::startVm at
// 94091cd^ (src/wasm.cc), WASI part: poll_oneoff is not in it.
var wasi427AtStart = set(
	"fd_write", "args_sizes_get", "args_get", "environ_sizes_get", "environ_get",
	"fd_prestat_get", "fd_prestat_dir_name", "clock_time_get", "random_get",
	"fd_fdstat_get", "fd_fdstat_set_flags",
)

// wasiInMalloc427 is WasmBase::allocMemory's allow list before #533, WASI
// part (#533 adds poll_oneoff: "go runtime gc sleep").
var wasiInMalloc427 = set("fd_write", "clock_time_get")

// wasi533 is FOR_ALL_WASI_FUNCTIONS from #533 on (FACTS §2).
var wasi533 = set(
	"fd_write", "fd_read", "fd_seek", "fd_close", "fd_fdstat_get", "fd_fdstat_set_flags",
	"fd_fdstat_set_rights", "environ_get", "environ_sizes_get", "args_get", "args_sizes_get",
	"clock_time_get", "clock_res_get", "fd_advise", "fd_allocate", "fd_datasync",
	"fd_filestat_set_size", "fd_filestat_set_times", "fd_pread", "fd_pwrite", "fd_readdir",
	"fd_renumber", "fd_sync", "fd_tell", "path_create_directory", "path_filestat_set_times",
	"path_link", "path_readlink", "path_remove_directory", "path_rename", "path_symlink",
	"path_unlink_file", "sock_accept", "sock_recv", "sock_send", "sock_shutdown",
	"random_get", "sched_yield", "poll_oneoff", "proc_exit", "path_open", "fd_prestat_get",
	"fd_prestat_dir_name", "path_filestat_get", "fd_filestat_get",
)

// wasiNotAtStart533 are the functions of wasi533 that #533's start-time
// allow list leaves out (the file and socket calls it lets through mostly
// answer ENOTSUP).
var wasiNotAtStart533 = set("fd_read", "fd_seek", "fd_close", "sched_yield", "proc_exit", "path_open")

// Callback exports the host calls, with the signature Envoy requires
// (proxy-wasm-cpp-host getFunctions: a wrong signature fails the load).
var callbackSigs = map[string]sig{
	"_initialize":                 {},
	"_start":                      {},
	"main":                        {i32s(2), i32s(1)},
	"__main_void":                 {nil, i32s(1)},
	"malloc":                      {i32s(1), i32s(1)},
	"proxy_on_memory_allocate":    {i32s(1), i32s(1)},
	"proxy_on_context_create":     {i32s(2), nil},
	"proxy_on_vm_start":           {i32s(2), i32s(1)},
	"proxy_on_configure":          {i32s(2), i32s(1)},
	"proxy_on_tick":               {i32s(1), nil},
	"proxy_on_log":                {i32s(1), nil},
	"proxy_on_done":               {i32s(1), i32s(1)},
	"proxy_on_delete":             {i32s(1), nil},
	"proxy_on_http_call_response": {i32s(5), nil},
	"proxy_on_queue_ready":        {i32s(2), nil},
	// proxy_on_request_headers / proxy_on_response_headers depend on the ABI:
	// see headersSig.
}

// headersSig is the signature of proxy_on_{request,response}_headers: ABI
// 0.1.0 has (context_id, headers) and 0.2.x adds end_of_stream.
func headersSig(v ABIVersion) sig {
	if v == ABI010 {
		return sig{i32s(2), i32s(1)}
	}
	return sig{i32s(3), i32s(1)}
}

// requestCallbacks are the per-stream exports Envoy calls for a header-only
// HTTP exchange, in order. Each one the module exports is one guest entry.
var requestCallbacks = []string{
	"proxy_on_context_create",
	"proxy_on_request_headers",
	"proxy_on_response_headers",
	"proxy_on_log",
	"proxy_on_done",
	"proxy_on_delete",
}
