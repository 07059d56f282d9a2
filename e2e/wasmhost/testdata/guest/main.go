//go:build wasip1

// Command guest is the wasmhost tests' probe: a proxy-wasm module written
// straight against the ABI with //go:wasmimport and //go:wasmexport (no
// SDK), so each host call can be exercised and its result observed. It logs
// what it sees at info level; the tests read those lines.
//
// The plugin configuration is "key=value" pairs separated by ';':
//
//	read=NAME          on request headers, read header NAME and log it
//	pairs=1            on request headers, log all request headers
//	mutate=1           on request headers, add x-added, replace :path, remove x-drop
//	read_response=1    on response headers, read :status and log it
//	pause=1            return Pause from proxy_on_request_headers (the
//	                   stream is then held, and remembered as such)
//	resume_on_tick=1   on each tick, set the effective context to every
//	                   held stream, oldest first, and continue it (logs
//	                   "resume id=N set=S continue=C")
//	resume_on_response=1 the same from proxy_on_http_call_response
//	resume_gone=1      on each tick, try that on every deleted stream id
//	                   (logs "resume_gone id=N set=S continue=C"), and on
//	                   id resume_id=N if set
//	local_on_tick=1    on each tick, answer every held stream with a local
//	                   429 through its effective context (logs
//	                   "local id=N set=S status=S")
//	continue_root=1    on each tick, continue the root context itself
//	                   (logs "continue_root status=S")
//	read_cluster=1     on request and response headers, log properties
//	                   xds.cluster_name and cluster_name; on response
//	                   headers also response.code, response.code_details,
//	                   response.flags
//	local=1            answer 403 locally from proxy_on_request_headers
//	shared=KEY         on request headers, increment KEY in shared data with CAS
//	metrics=1          define metrics; count requests; check metric statuses
//	grow=N             on request headers, keep N more KiB alive
//	nomem=1            after proxy_on_configure, proxy_on_memory_allocate
//	                   answers 0 (no memory) to every request
//	trap=request       panic in proxy_on_request_headers
//	timer_gc=1         on request headers, arm a runtime timer (once) and
//	                   run a GC cycle: from then on every start-the-world
//	                   polls with poll_oneoff, as the filter's runtime does
//	                   once its scavenger sleeps
//	fail=1             refuse the configuration
//	tick=MS            set the tick period in proxy_on_configure
//	call=1             on every tick, dispatch an HTTP call (cluster, path,
//	                   authority ("-" omits it), method, timeout)
//	defer_done=1       proxy_on_done(root) dispatches a call and returns false;
//	                   the call's response calls proxy_done
//	queue=1            register shared queue "q" in proxy_on_configure; on
//	                   request headers, enqueue the context id (resolved by
//	                   name); on queue ready, drain it into the logs
//
// With GUEST_TICK_IN_INIT set in the environment, package init calls
// proxy_set_tick_period_milliseconds, which Envoy forbids before
// proxy_on_vm_start.
package main

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

//go:wasmimport env proxy_log
func proxyLog(level uint32, msg unsafe.Pointer, size uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(t, start, max uint32, ptr, size unsafe.Pointer) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(t uint32, key unsafe.Pointer, keySize uint32, ptr, size unsafe.Pointer) uint32

//go:wasmimport env proxy_get_header_map_pairs
func proxyGetHeaderMapPairs(t uint32, ptr, size unsafe.Pointer) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(t uint32, key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize uint32) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxyReplaceHeaderMapValue(t uint32, key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize uint32) uint32

//go:wasmimport env proxy_remove_header_map_value
func proxyRemoveHeaderMapValue(t uint32, key unsafe.Pointer, keySize uint32) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(code uint32, details unsafe.Pointer, detailsSize uint32, body unsafe.Pointer, bodySize uint32, headers unsafe.Pointer, headersSize uint32, grpc int32) uint32

//go:wasmimport env proxy_get_property
func proxyGetProperty(path unsafe.Pointer, pathSize uint32, ptr, size unsafe.Pointer) uint32

//go:wasmimport env proxy_get_shared_data
func proxyGetSharedData(key unsafe.Pointer, keySize uint32, ptr, size, cas unsafe.Pointer) uint32

//go:wasmimport env proxy_set_shared_data
func proxySetSharedData(key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize uint32, cas uint32) uint32

//go:wasmimport env proxy_set_tick_period_milliseconds
func proxySetTickPeriod(ms uint32) uint32

//go:wasmimport env proxy_http_call
func proxyHTTPCall(up unsafe.Pointer, upSize uint32, hdrs unsafe.Pointer, hdrsSize uint32, body unsafe.Pointer, bodySize uint32, trls unsafe.Pointer, trlsSize uint32, timeout uint32, token unsafe.Pointer) uint32

//go:wasmimport env proxy_get_status
func proxyGetStatus(code, ptr, size unsafe.Pointer) uint32

//go:wasmimport env proxy_define_metric
func proxyDefineMetric(t uint32, name unsafe.Pointer, nameSize uint32, id unsafe.Pointer) uint32

//go:wasmimport env proxy_increment_metric
func proxyIncrementMetric(id uint32, offset int64) uint32

//go:wasmimport env proxy_record_metric
func proxyRecordMetric(id uint32, value uint64) uint32

//go:wasmimport env proxy_get_metric
func proxyGetMetric(id uint32, value unsafe.Pointer) uint32

//go:wasmimport env proxy_done
func proxyDone() uint32

//go:wasmimport env proxy_set_effective_context
func proxySetEffectiveContext(id uint32) uint32

//go:wasmimport env proxy_continue_stream
func proxyContinueStream(t uint32) uint32

//go:wasmimport env proxy_register_shared_queue
func proxyRegisterSharedQueue(name unsafe.Pointer, nameSize uint32, token unsafe.Pointer) uint32

//go:wasmimport env proxy_resolve_shared_queue
func proxyResolveSharedQueue(vmID unsafe.Pointer, vmIDSize uint32, name unsafe.Pointer, nameSize uint32, token unsafe.Pointer) uint32

//go:wasmimport env proxy_enqueue_shared_queue
func proxyEnqueueSharedQueue(token uint32, data unsafe.Pointer, size uint32) uint32

//go:wasmimport env proxy_dequeue_shared_queue
func proxyDequeueSharedQueue(token uint32, ptr, size unsafe.Pointer) uint32

const rootID = 1

var (
	cfg      = map[string]string{}
	retained [][]byte
	pending  bool // proxy_on_done returned false

	counter, gauge, histogram uint32

	// held are the streams this module paused and has not resumed, oldest
	// first; gone are the stream ids deleted so far.
	held, gone []uint32
)

func init() {
	logf(2, "guest init")
	if os.Getenv("GUEST_TICK_IN_INIT") != "" {
		proxySetTickPeriod(10)
	}
}

func main() {}

func ptr(s string) unsafe.Pointer { return unsafe.Pointer(unsafe.StringData(s)) }

func logf(level uint32, msg string) { proxyLog(level, ptr(msg), uint32(len(msg))) }

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

// bytesAt turns a host-written (pointer, size) pair into a string.
func bytesAt(p, size uint32) string {
	if size == 0 {
		return ""
	}
	return string(unsafe.Slice((*byte)(unsafe.Pointer(uintptr(p))), size))
}

//go:wasmexport proxy_abi_version_0_2_0
func abiVersion() {}

// noMem makes proxy_on_memory_allocate answer 0 (config nomem=1).
var noMem bool

// proxy_on_memory_allocate never returns an empty block: a host may ask for
// 0 bytes.
//
//go:wasmexport proxy_on_memory_allocate
func onMemoryAllocate(size uint32) unsafe.Pointer {
	if noMem {
		return nil
	}
	buf := make([]byte, size+1)
	return unsafe.Pointer(&buf[0])
}

func buffer(t, size uint32) (string, uint32) {
	var p, n uint32
	st := proxyGetBufferBytes(t, 0, size, unsafe.Pointer(&p), unsafe.Pointer(&n))
	return bytesAt(p, n), st
}

func header(mapType uint32, key string) (string, uint32) {
	var p, n uint32
	st := proxyGetHeaderMapValue(mapType, ptr(key), uint32(len(key)), unsafe.Pointer(&p), unsafe.Pointer(&n))
	return bytesAt(p, n), st
}

// pairs decodes proxy_get_header_map_pairs into "k=v,k=v".
func pairs(mapType uint32) (string, uint32, uint32) {
	var p, n uint32
	st := proxyGetHeaderMapPairs(mapType, unsafe.Pointer(&p), unsafe.Pointer(&n))
	if st != 0 || n == 0 {
		return "", 0, st
	}
	b := []byte(bytesAt(p, n))
	le := func(i int) int { return int(b[i]) | int(b[i+1])<<8 | int(b[i+2])<<16 | int(b[i+3])<<24 }
	count := le(0)
	data := 4 + 8*count
	var out []string
	for i := 0; i < count; i++ {
		kl, vl := le(4+8*i), le(8+8*i)
		k := string(b[data : data+kl])
		data += kl + 1
		v := string(b[data : data+vl])
		data += vl + 1
		out = append(out, k+"="+v)
	}
	return strings.Join(out, ","), uint32(count), st
}

func property(path string) (string, uint32) {
	var p, n uint32
	st := proxyGetProperty(ptr(path), uint32(len(path)), unsafe.Pointer(&p), unsafe.Pointer(&n))
	return bytesAt(p, n), st
}

//go:wasmexport proxy_on_context_create
func onContextCreate(id, parent uint32) {}

//go:wasmexport proxy_on_vm_start
func onVMStart(root, size uint32) uint32 {
	v, st := buffer(6, size)
	logf(2, "vm_config="+v+" status="+itoa(st))
	return 1
}

//go:wasmexport proxy_on_configure
func onConfigure(root, size uint32) uint32 {
	conf, st := buffer(7, size)
	if st != 0 {
		logf(4, "plugin configuration unreadable: status "+itoa(st))
		return 0
	}
	for _, kv := range strings.Split(conf, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			cfg[k] = v
		}
	}
	rootName, st := property("plugin_root_id")
	_, missing := property("no_such_property")
	logf(2, "configured root_id="+rootName+" status="+itoa(st)+" missing_status="+itoa(missing))
	noMem = cfg["nomem"] != ""
	if cfg["fail"] != "" {
		logf(4, "refusing configuration")
		return 0
	}
	if ms := cfg["tick"]; ms != "" {
		n, _ := strconv.ParseUint(ms, 10, 32)
		proxySetTickPeriod(uint32(n))
	}
	if cfg["queue"] != "" {
		var token uint32
		st := proxyRegisterSharedQueue(ptr("q"), 1, unsafe.Pointer(&token))
		logf(2, "registered queue token="+itoa(token)+" status="+itoa(st))
	}
	if cfg["metrics"] != "" {
		define := func(t uint32, name string) uint32 {
			var id uint32
			proxyDefineMetric(t, ptr(name), uint32(len(name)), unsafe.Pointer(&id))
			return id
		}
		counter = define(0, "requests_total")
		gauge = define(1, "inflight")
		histogram = define(2, "header_count")
		var v uint64
		logf(2, "metric checks: counter+0="+itoa(proxyIncrementMetric(counter, 0))+
			" histogram_get="+itoa(proxyGetMetric(histogram, unsafe.Pointer(&v)))+
			" unknown_get="+itoa(proxyGetMetric(12345, unsafe.Pointer(&v))))
	}
	return 1
}

//go:wasmexport proxy_on_request_headers
func onRequestHeaders(id, n, eos uint32) uint32 {
	if name := cfg["read"]; name != "" {
		v, st := header(0, name)
		logf(2, "read "+name+"="+v+" status="+itoa(st))
	}
	if cfg["pairs"] != "" {
		all, count, st := pairs(0)
		logf(2, "pairs n="+itoa(n)+" count="+itoa(count)+" status="+itoa(st)+" "+all)
	}
	if cfg["mutate"] != "" {
		proxyAddHeaderMapValue(0, ptr("X-Added"), 7, ptr("1"), 1)
		proxyReplaceHeaderMapValue(0, ptr(":path"), 5, ptr("/rewritten"), 10)
		proxyRemoveHeaderMapValue(0, ptr("x-drop"), 6)
	}
	if key := cfg["shared"]; key != "" {
		casIncrement(key)
	}
	if cfg["queue"] != "" {
		var token uint32
		vmID := cfg["vm_id"]
		proxyResolveSharedQueue(ptr(vmID), uint32(len(vmID)), ptr("q"), 1, unsafe.Pointer(&token))
		item := "item-" + itoa(id)
		logf(2, "enqueue "+item+" status="+itoa(proxyEnqueueSharedQueue(token, ptr(item), uint32(len(item)))))
	}
	if cfg["metrics"] != "" {
		proxyIncrementMetric(counter, 1)
		proxyIncrementMetric(gauge, 1)
		proxyRecordMetric(histogram, uint64(n))
	}
	if kb := cfg["grow"]; kb != "" {
		n, _ := strconv.Atoi(kb)
		retained = append(retained, make([]byte, n<<10))
	}
	if cfg["timer_gc"] != "" {
		if timer == nil {
			timer = time.AfterFunc(time.Hour, func() {})
		}
		runtime.GC()
	}
	if cfg["trap"] == "request" {
		panic("trap requested")
	}
	if cfg["local"] != "" {
		body := "denied"
		proxySendLocalResponse(403, ptr("guest_said_no"), 13, ptr(body), uint32(len(body)), nil, 0, -1)
		return 1
	}
	logf(1, "request eos="+itoa(eos))
	if cfg["read_cluster"] != "" {
		v, st := property("xds\x00cluster_name")
		_, old := property("cluster_name")
		logf(2, "request xds.cluster_name="+v+" status="+itoa(st)+" cluster_name_status="+itoa(old))
	}
	if cfg["pause"] != "" {
		held = append(held, id)
		return 1
	}
	return 0
}

// resumeHeld continues every held stream, oldest first, from the root
// context (a tick or a call's answer).
func resumeHeld() {
	ids := held
	held = nil
	for _, id := range ids {
		set := proxySetEffectiveContext(id)
		cont := proxyContinueStream(0)
		logf(2, "resume id="+itoa(id)+" set="+itoa(set)+" continue="+itoa(cont))
	}
}

// int64Property decodes an int64 property (8 little-endian bytes).
func int64Property(path string) (string, uint32) {
	v, st := property(path)
	if st != 0 || len(v) != 8 {
		return v, st
	}
	var n uint64
	for i := 7; i >= 0; i-- {
		n = n<<8 | uint64(v[i])
	}
	return strconv.FormatInt(int64(n), 10), st
}

// timer is the runtime timer timer_gc arms.
var timer *time.Timer

func casIncrement(key string) {
	for retries := 0; ; retries++ {
		var p, n, cas uint32
		st := proxyGetSharedData(ptr(key), uint32(len(key)), unsafe.Pointer(&p), unsafe.Pointer(&n), unsafe.Pointer(&cas))
		var v uint64
		if st == 0 {
			v, _ = strconv.ParseUint(bytesAt(p, n), 10, 64)
		}
		next := strconv.FormatUint(v+1, 10)
		switch st := proxySetSharedData(ptr(key), uint32(len(key)), ptr(next), uint32(len(next)), cas); st {
		case 0:
			return
		case 8: // CasMismatch: another worker won; read again
			if retries > 1000 {
				panic("shared data CAS never succeeds")
			}
		default:
			panic("set_shared_data: status " + itoa(st))
		}
	}
}

//go:wasmexport proxy_on_response_headers
func onResponseHeaders(id, n, eos uint32) uint32 {
	if cfg["read_response"] != "" {
		v, st := header(2, ":status")
		logf(2, "response :status="+v+" status="+itoa(st)+" eos="+itoa(eos))
	}
	if cfg["read_cluster"] != "" {
		cluster, st := property("xds\x00cluster_name")
		code, cst := int64Property("response.code")
		details, dst := property("response.code_details")
		flags, fst := int64Property("response.flags")
		logf(2, "response xds.cluster_name="+cluster+" status="+itoa(st)+" code="+code+"/"+itoa(cst)+
			" details="+details+"/"+itoa(dst)+" flags="+flags+"/"+itoa(fst))
	}
	return 0
}

//go:wasmexport proxy_on_log
func onLog(id uint32) {}

//go:wasmexport proxy_on_done
func onDone(id uint32) uint32 {
	if id != rootID || cfg["defer_done"] == "" {
		return 1
	}
	pending = true
	logf(2, "done deferred call_status="+itoa(call()))
	return 0
}

//go:wasmexport proxy_on_delete
func onDelete(id uint32) {
	if id == rootID {
		logf(2, "root deleted")
		return
	}
	gone = append(gone, id)
	for i, h := range held {
		if h == id {
			held = append(held[:i:i], held[i+1:]...)
			break
		}
	}
}

//go:wasmexport proxy_on_queue_ready
func onQueueReady(root, token uint32) {
	for {
		var p, n uint32
		st := proxyDequeueSharedQueue(token, unsafe.Pointer(&p), unsafe.Pointer(&n))
		if st != 0 {
			logf(2, "queue drained status="+itoa(st))
			return
		}
		logf(2, "dequeued "+bytesAt(p, n))
	}
}

//go:wasmexport proxy_on_tick
func onTick(root uint32) {
	logf(1, "tick")
	if cfg["resume_gone"] != "" {
		ids := gone
		if v := cfg["resume_id"]; v != "" {
			n, _ := strconv.ParseUint(v, 10, 32)
			ids = append(ids[:len(ids):len(ids)], uint32(n))
		}
		for _, id := range ids {
			set := proxySetEffectiveContext(id)
			cont := proxyContinueStream(0)
			logf(2, "resume_gone id="+itoa(id)+" set="+itoa(set)+" continue="+itoa(cont))
		}
	}
	if cfg["continue_root"] != "" {
		logf(2, "continue_root status="+itoa(proxyContinueStream(0)))
	}
	if cfg["local_on_tick"] != "" {
		ids := held
		held = nil
		for _, id := range ids {
			set := proxySetEffectiveContext(id)
			body := "slow down"
			st := proxySendLocalResponse(429, ptr("held_too_long"), 13, ptr(body), uint32(len(body)), nil, 0, -1)
			logf(2, "local id="+itoa(id)+" set="+itoa(set)+" status="+itoa(st))
		}
	}
	if cfg["resume_on_tick"] != "" {
		resumeHeld()
	}
	if cfg["call"] != "" {
		st := call()
		logf(2, "call status="+itoa(st))
	}
}

// call dispatches the configured HTTP call and returns its status.
func call() uint32 {
	method := cfg["method"]
	if method == "" {
		method = "POST"
	}
	hdrs := [][2]string{{":method", method}, {":path", cfg["path"]}, {"content-type", "text/plain"}, {"x-probe", "1"}}
	if a := cfg["authority"]; a != "-" {
		hdrs = append(hdrs, [2]string{":authority", a})
	}
	enc := encodePairs(hdrs)
	body := "hello"
	timeout, _ := strconv.ParseInt(cfg["timeout"], 10, 64)
	cluster := cfg["cluster"]
	var token uint32
	return proxyHTTPCall(ptr(cluster), uint32(len(cluster)), unsafe.Pointer(&enc[0]), uint32(len(enc)),
		ptr(body), uint32(len(body)), nil, 0, uint32(timeout), unsafe.Pointer(&token))
}

func encodePairs(ps [][2]string) []byte {
	put := func(b []byte, v int) []byte { return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24)) }
	b := put(nil, len(ps))
	for _, p := range ps {
		b = put(b, len(p[0]))
		b = put(b, len(p[1]))
	}
	for _, p := range ps {
		b = append(append(b, p[0]...), 0)
		b = append(append(b, p[1]...), 0)
	}
	return b
}

//go:wasmexport proxy_on_http_call_response
func onHTTPCallResponse(root, token, nHeaders, bodySize, nTrailers uint32) {
	status, stSt := header(6, ":status")
	all, _, stPairs := pairs(6)
	body, stBody := buffer(4, bodySize)
	var code, p, n uint32
	proxyGetStatus(unsafe.Pointer(&code), unsafe.Pointer(&p), unsafe.Pointer(&n))
	logf(2, "response token="+itoa(token)+" headers="+itoa(nHeaders)+" status="+status+
		" body="+body+" call_status="+itoa(code)+"/"+bytesAt(p, n)+" pairs="+all+
		" reads="+itoa(stSt)+"/"+itoa(stPairs)+"/"+itoa(stBody))
	if pending {
		logf(2, "proxy_done status="+itoa(proxyDone()))
	}
	if cfg["resume_on_response"] != "" {
		resumeHeld()
	}
}
