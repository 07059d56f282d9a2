package wasmhost

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// hostFunc implements one import. It runs on the worker goroutine, inside a
// guest call; stack holds the parameters and receives the result.
type hostFunc func(w *Worker, mod api.Module, stack []uint64)

// guardHostCall wraps an import: it finds the worker, counts the call and
// enforces Envoy's restricted phases, where a forbidden call traps
// ("restricted_callback" in proxy-wasm-cpp-host) and so fails the VM.
func guardHostCall(idx int, full string, atStart, inMalloc bool, impl hostFunc) api.GoModuleFunc {
	mod, name, _ := strings.Cut(full, ".")
	label := statsName(mod, name)
	return func(ctx context.Context, m api.Module, stack []uint64) {
		w, ok := ctx.Value(workerKey{}).(*Worker)
		if !ok {
			panic(fmt.Errorf("wasmhost: %s called outside a worker", full))
		}
		w.hostCalls[idx].Add(1)
		switch w.phase {
		case phaseStart:
			if !atStart {
				panic(fmt.Errorf("wasmhost: %s called during %s: Envoy allows only logging, WASI and memory-growth calls before proxy_on_vm_start (restricted_callback)", label, w.phaseName))
			}
		case phaseMalloc:
			if !inMalloc {
				panic(fmt.Errorf("wasmhost: %s called during %s: Envoy allows only proxy_log, fd_write and clock_time_get while it allocates guest memory (restricted_callback)", label, w.phaseName))
			}
		}
		impl(w, m, stack)
	}
}

func u32(v uint64) uint32 { return uint32(v) }

// putU32 writes a 32-bit word the guest asked for; InvalidMemoryAccess if ptr is
// outside its memory.
func (w *Worker) putU32(ptr uint32, v uint32) Status {
	if !w.mem.WriteUint32Le(ptr, v) {
		return StatusInvalidMemoryAccess
	}
	return StatusOK
}

// putU64 is putU32 for a 64-bit word.
func (w *Worker) putU64(ptr uint32, v uint64) Status {
	if !w.mem.WriteUint64Le(ptr, v) {
		return StatusInvalidMemoryAccess
	}
	return StatusOK
}

func status(stack []uint64, s Status) { stack[0] = uint64(s) }

// read returns a view of guest memory (valid until the guest next runs).
func (w *Worker) read(ptr, size uint64) ([]byte, bool) {
	return w.mem.Read(u32(ptr), u32(size))
}

// copyOut copies data into memory the module allocates and writes the
// pointer and size to ptrPtr/sizePtr (proxy-wasm-cpp-host
// copyToPointerSize: nothing is allocated for empty data, and the pair is
// then 0, 0).
func (w *Worker) copyOut(data []byte, ptrPtr, sizePtr uint64) Status {
	var ptr uint32
	if len(data) > 0 {
		var ok bool
		if ptr, ok = w.alloc(uint32(len(data))); !ok {
			return StatusInvalidMemoryAccess
		}
		w.mem.Write(ptr, data)
	}
	return w.writePtrSize(ptr, uint32(len(data)), ptrPtr, sizePtr)
}

func (w *Worker) copyOutString(s string, ptrPtr, sizePtr uint64) Status {
	var ptr uint32
	if len(s) > 0 {
		var ok bool
		if ptr, ok = w.alloc(uint32(len(s))); !ok {
			return StatusInvalidMemoryAccess
		}
		w.mem.WriteString(ptr, s)
	}
	return w.writePtrSize(ptr, uint32(len(s)), ptrPtr, sizePtr)
}

func (w *Worker) writePtrSize(ptr, size uint32, ptrPtr, sizePtr uint64) Status {
	if !w.mem.WriteUint32Le(u32(ptrPtr), ptr) || !w.mem.WriteUint32Le(u32(sizePtr), size) {
		return StatusInvalidMemoryAccess
	}
	return StatusOK
}

// contextID is the context host calls act on: the effective context if the
// module set one during this callback and it still exists, else the one
// called (cpp-host contextOrEffectiveContext).
func (w *Worker) contextID() uint32 {
	if e := w.effective; e != 0 && (e == rootID || w.streams[e] != nil) {
		return e
	}
	return w.current
}

func (w *Worker) log(level LogLevel, msg string) {
	if level < w.h.cfg.LogLevel {
		return
	}
	w.h.logs.add(w.idx, level, msg)
	if w.starting && level >= LevelError {
		w.startErrLogs = append(w.startErrLogs, msg)
	}
}

// envFuncs are the env imports this host implements. Any other env import
// Envoy provides is answered with StatusUnimplemented (see unimplemented).
var envFuncs = map[string]hostFunc{
	"proxy_log":                          proxyLog,
	"proxy_get_log_level":                proxyGetLogLevel,
	"proxy_get_status":                   proxyGetStatus,
	"proxy_get_property":                 proxyGetProperty,
	"proxy_set_property":                 proxySetProperty,
	"proxy_send_local_response":          proxySendLocalResponse,
	"proxy_get_shared_data":              proxyGetSharedData,
	"proxy_set_shared_data":              proxySetSharedData,
	"proxy_register_shared_queue":        proxyRegisterSharedQueue,
	"proxy_resolve_shared_queue":         proxyResolveSharedQueue,
	"proxy_dequeue_shared_queue":         proxyDequeueSharedQueue,
	"proxy_enqueue_shared_queue":         proxyEnqueueSharedQueue,
	"proxy_get_header_map_value":         proxyGetHeaderMapValue,
	"proxy_add_header_map_value":         proxyAddHeaderMapValue,
	"proxy_replace_header_map_value":     proxyReplaceHeaderMapValue,
	"proxy_remove_header_map_value":      proxyRemoveHeaderMapValue,
	"proxy_get_header_map_pairs":         proxyGetHeaderMapPairs,
	"proxy_set_header_map_pairs":         proxySetHeaderMapPairs,
	"proxy_get_header_map_size":          proxyGetHeaderMapSize,
	"proxy_get_buffer_status":            proxyGetBufferStatus,
	"proxy_get_buffer_bytes":             proxyGetBufferBytes,
	"proxy_http_call":                    proxyHTTPCall,
	"proxy_set_tick_period_milliseconds": proxySetTickPeriod,
	"proxy_get_current_time_nanoseconds": proxyGetCurrentTime,
	"proxy_define_metric":                proxyDefineMetric,
	"proxy_increment_metric":             proxyIncrementMetric,
	"proxy_record_metric":                proxyRecordMetric,
	"proxy_get_metric":                   proxyGetMetric,
	"proxy_set_effective_context":        proxySetEffectiveContext,
	"proxy_done":                         proxyDone,
	"proxy_call_foreign_function":        proxyCallForeignFunction,
	"proxy_get_configuration":            proxyGetConfiguration,
	"proxy_continue_request":             func(w *Worker, _ api.Module, s []uint64) { status(s, w.continueStream(streamRequest)) },
	"proxy_continue_response":            func(w *Worker, _ api.Module, s []uint64) { status(s, w.continueStream(streamResponse)) },
	"proxy_clear_route_cache":            func(_ *Worker, _ api.Module, s []uint64) { status(s, StatusOK) },
	"proxy_continue_stream":              proxyContinueStream,
	"proxy_close_stream":                 proxyCloseStream,
	"pthread_equal":                      pthreadEqual,
	"emscripten_notify_memory_growth":    func(*Worker, api.Module, []uint64) {},
}

// unimplemented answers an import Envoy has but this host does not model
// (gRPC, body buffers): StatusUnimplemented, and a warning in the logs.
func unimplemented(name string) hostFunc {
	msg := "wasmhost: " + name + " is not implemented by this host: returning Unimplemented"
	return func(w *Worker, _ api.Module, stack []uint64) {
		w.h.logs.add(w.idx, LevelWarn, msg)
		status(stack, StatusUnimplemented)
	}
}

// proxy_log(level, ptr, size)
func proxyLog(w *Worker, _ api.Module, stack []uint64) {
	level := LogLevel(u32(stack[0]))
	if level >= numLevels {
		status(stack, StatusBadArgument)
		return
	}
	msg, ok := w.read(stack[1], stack[2])
	if !ok {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	w.log(level, string(msg))
	status(stack, StatusOK)
}

// proxy_get_log_level(*level)
func proxyGetLogLevel(w *Worker, _ api.Module, stack []uint64) {
	status(stack, w.putU32(u32(stack[0]), uint32(w.h.cfg.LogLevel)))
}

// proxy_get_status(*code, **msg, *msg_size): Envoy reports the status of the
// last failed callout (BrokenConnection, "reset") during
// proxy_on_http_call_response; 0, "" otherwise.
func proxyGetStatus(w *Worker, _ api.Module, stack []uint64) {
	if !w.mem.WriteUint32Le(u32(stack[0]), w.callStatus) {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	status(stack, w.copyOutString(w.callStatusMsg, stack[1], stack[2]))
}

// propertyKey turns a property path (segments separated by NUL) into the
// dotted key Config.Properties uses.
func propertyKey(path []byte) string {
	return strings.ReplaceAll(strings.TrimRight(string(path), "\x00"), "\x00", ".")
}

func (w *Worker) property(key string) ([]byte, bool) {
	if v, ok := w.props[key]; ok {
		return v, true
	}
	if v, ok := w.h.cfg.Properties[key]; ok {
		return v, true
	}
	if s := w.streamContext(); s != nil {
		if v, ok := s.property(key, w.h.cfg.Clusters); ok {
			return v, true
		}
	}
	switch key {
	case "plugin_root_id":
		return []byte(w.h.cfg.RootID), true
	case "plugin_name":
		return []byte(w.h.cfg.PluginName), true
	case "plugin_vm_id":
		return []byte(w.h.cfg.VMID), true
	}
	return nil, false
}

// property answers the stream properties this host models, as Envoy's wasm
// Context::findValue and the CEL StreamActivation do (serializeValue:
// strings as bytes, int64 as 8 little-endian bytes):
//   - xds.cluster_name: the stream info's upstream cluster info, which the
//     connection manager sets from the route (ActiveStream::setRoute /
//     refreshCachedRoute: the route entry's cluster, if the cluster manager
//     knows it) before any filter runs, so a held stream has it; NotFound
//     without a route or for an unknown cluster. The top-level
//     "cluster_name" of older Envoys (upstream host's cluster, else the route
//     entry's) is gone from the wasm tokens since Envoy 1.33 (PROPERTY_TOKENS
//     is plugin_name, plugin_root_id, plugin_vm_id, connection_id), which is
//     the oldest Envoy that runs modules built by upstream Go: NotFound here,
//     unless Config.Properties sets it.
//   - response.code and response.code_details once set (the response is
//     known: from proxy_on_response_headers on, or after a reset for the
//     details); response.flags always (Envoy's ResponseWrapper returns
//     legacyResponseFlags(), 0 when none is set).
func (s *stream) property(key string, clusters map[string]string) ([]byte, bool) {
	switch key {
	case "xds.cluster_name":
		if _, known := clusters[s.r.Cluster]; known && s.r.Cluster != "" {
			return []byte(s.r.Cluster), true
		}
	case "response.code":
		if s.respReady {
			if v, ok := s.resp.get([]byte(":status")); ok {
				code, _ := strconv.ParseInt(v, 10, 64)
				return binary.LittleEndian.AppendUint64(nil, uint64(code)), true
			}
		}
	case "response.code_details":
		if s.res.ResponseCodeDetails != "" {
			return []byte(s.res.ResponseCodeDetails), true
		}
	case "response.flags":
		return binary.LittleEndian.AppendUint64(nil, s.res.ResponseFlags), true
	}
	return nil, false
}

// proxy_get_property(path, path_size, **value, *value_size)
func proxyGetProperty(w *Worker, _ api.Module, stack []uint64) {
	path, ok := w.read(stack[0], stack[1])
	if !ok {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	v, found := w.property(propertyKey(path))
	if !found {
		status(stack, StatusNotFound)
		return
	}
	status(stack, w.copyOut(v, stack[2], stack[3]))
}

// proxy_set_property(path, path_size, value, value_size): stored per worker
// and visible to proxy_get_property.
func proxySetProperty(w *Worker, _ api.Module, stack []uint64) {
	path, ok1 := w.read(stack[0], stack[1])
	value, ok2 := w.read(stack[2], stack[3])
	if !ok1 || !ok2 {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	w.props[propertyKey(path)] = append([]byte(nil), value...)
	status(stack, StatusOK)
}

// streamContext returns the stream the current (or effective) context is,
// nil for the root context.
func (w *Worker) streamContext() *stream {
	return w.streams[w.contextID()]
}

// proxy_send_local_response(status, details, details_size, body, body_size,
// headers, headers_size, grpc_status)
func proxySendLocalResponse(w *Worker, _ api.Module, stack []uint64) {
	s := w.streamContext()
	if s == nil {
		status(stack, StatusBadArgument)
		return
	}
	details, ok1 := w.read(stack[1], stack[2])
	body, ok2 := w.read(stack[3], stack[4])
	hdrs, ok3 := w.read(stack[5], stack[6])
	if !ok1 || !ok2 || !ok3 {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	pairs, _ := parsePairs(hdrs)
	s.local = &LocalReply{
		Status:   u32(stack[0]),
		Details:  string(details),
		Body:     append([]byte(nil), body...),
		Headers:  pairs,
		GrpcCode: int32(u32(stack[7])),
	}
	if s.paused {
		// Envoy sends it after the VM call returns (addAfterVmCallAction).
		w.deferStream(s)
	}
	status(stack, StatusOK)
}

// proxy_get_shared_data(key, key_size, **value, *value_size, *cas)
func proxyGetSharedData(w *Worker, _ api.Module, stack []uint64) {
	key, ok := w.read(stack[0], stack[1])
	if !ok {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	v, cas, st := w.h.shared.get(string(key))
	if st != StatusOK {
		status(stack, st)
		return
	}
	if st := w.copyOut(v, stack[2], stack[3]); st != StatusOK {
		status(stack, st)
		return
	}
	status(stack, w.putU32(u32(stack[4]), cas))
}

// proxy_set_shared_data(key, key_size, value, value_size, cas)
func proxySetSharedData(w *Worker, _ api.Module, stack []uint64) {
	key, ok1 := w.read(stack[0], stack[1])
	value, ok2 := w.read(stack[2], stack[3])
	if !ok1 || !ok2 {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	status(stack, w.h.shared.set(string(key), value, u32(stack[4])))
}

// proxy_register_shared_queue(name, name_size, *token)
func proxyRegisterSharedQueue(w *Worker, _ api.Module, stack []uint64) {
	name, ok := w.read(stack[0], stack[1])
	if !ok {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	token := w.h.queues.register(w, w.h.cfg.VMID, string(name))
	status(stack, w.putU32(u32(stack[2]), token))
}

// proxy_resolve_shared_queue(vm_id, vm_id_size, name, name_size, *token)
func proxyResolveSharedQueue(w *Worker, _ api.Module, stack []uint64) {
	vmID, ok1 := w.read(stack[0], stack[1])
	name, ok2 := w.read(stack[2], stack[3])
	if !ok1 || !ok2 {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	token, found := w.h.queues.resolve(string(vmID), string(name))
	if !found {
		status(stack, StatusNotFound)
		return
	}
	status(stack, w.putU32(u32(stack[4]), token))
}

// proxy_dequeue_shared_queue(token, **data, *data_size)
func proxyDequeueSharedQueue(w *Worker, _ api.Module, stack []uint64) {
	data, st := w.h.queues.dequeue(u32(stack[0]))
	if st != StatusOK {
		status(stack, st)
		return
	}
	status(stack, w.copyOut(data, stack[1], stack[2]))
}

// proxy_enqueue_shared_queue(token, data, data_size)
func proxyEnqueueSharedQueue(w *Worker, _ api.Module, stack []uint64) {
	data, ok := w.read(stack[1], stack[2])
	if !ok {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	status(stack, w.h.queues.enqueue(u32(stack[0]), data))
}

// headerMap returns the map a call names, or the status Envoy answers when
// that map does not exist in the current context: BadArgument, or NotFound
// in the access-log phase.
func (w *Worker) headerMap(t MapType) (*headerMap, Status) {
	if t > mapTypeMax {
		return nil, StatusBadArgument
	}
	s := w.streamContext()
	switch t {
	case MapRequestHeaders:
		if s != nil && s.reqReady {
			return &s.req, StatusOK
		}
	case MapResponseHeaders:
		if s != nil && s.respReady {
			return &s.resp, StatusOK
		}
	case MapHTTPCallResponseHeaders:
		if w.callAnswered() && w.contextID() == rootID {
			return &w.callHeaders, StatusOK
		}
	case MapHTTPCallResponseTrailers:
		if w.callAnswered() && w.contextID() == rootID {
			return &w.callTrailers, StatusOK
		}
	}
	if s != nil && s.logPhase {
		return nil, StatusNotFound
	}
	return nil, StatusBadArgument
}

// proxy_get_header_map_value(type, key, key_size, **value, *value_size)
func proxyGetHeaderMapValue(w *Worker, _ api.Module, stack []uint64) {
	m, st := w.headerMap(MapType(u32(stack[0])))
	if st != StatusOK {
		status(stack, st)
		return
	}
	key, ok := w.read(stack[1], stack[2])
	if !ok {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	v, found := m.get(key)
	if !found {
		if w.h.mod.abi == ABI010 {
			// ABI 0.1.0 answers a missing header with an empty value.
			status(stack, w.copyOutString("", stack[3], stack[4]))
			return
		}
		status(stack, StatusNotFound)
		return
	}
	status(stack, w.copyOutString(v, stack[3], stack[4]))
}

func (w *Worker) readKeyValue(stack []uint64) (key, value string, st Status) {
	k, ok1 := w.read(stack[1], stack[2])
	v, ok2 := w.read(stack[3], stack[4])
	if !ok1 || !ok2 {
		return "", "", StatusInvalidMemoryAccess
	}
	return string(k), string(v), StatusOK
}

// proxy_add_header_map_value(type, key, key_size, value, value_size)
func proxyAddHeaderMapValue(w *Worker, _ api.Module, stack []uint64) {
	w.setHeaderMapValue(stack, headerMap.add)
}

// proxy_replace_header_map_value(type, key, key_size, value, value_size)
func proxyReplaceHeaderMapValue(w *Worker, _ api.Module, stack []uint64) {
	w.setHeaderMapValue(stack, headerMap.replace)
}

// setHeaderMapValue applies op (add or replace) to the map and key/value the
// call names.
func (w *Worker) setHeaderMapValue(stack []uint64, op func(headerMap, string, string) headerMap) {
	m, st := w.headerMap(MapType(u32(stack[0])))
	if st != StatusOK {
		status(stack, st)
		return
	}
	k, v, st := w.readKeyValue(stack)
	if st == StatusOK {
		*m = op(*m, k, v)
	}
	status(stack, st)
}

// proxy_remove_header_map_value(type, key, key_size)
func proxyRemoveHeaderMapValue(w *Worker, _ api.Module, stack []uint64) {
	m, st := w.headerMap(MapType(u32(stack[0])))
	if st != StatusOK {
		status(stack, st)
		return
	}
	k, ok := w.read(stack[1], stack[2])
	if !ok {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	*m = m.remove(string(k))
	status(stack, StatusOK)
}

// callAnswered reports whether a call's response is being delivered: during
// proxy_on_http_call_response for a call that got one, not for a reset. Envoy
// keeps the response message only for a call that succeeded
// (Context::onHttpCallSuccess sets http_call_response_, onHttpCallFailure does
// not): during a reset's callback the call's header maps and body do not
// exist, so a header read answers BadArgument and a body read NotFound.
func (w *Worker) callAnswered() bool { return w.callResp != nil && w.callResp.Status != 0 }

// proxy_get_header_map_pairs(type, **data, *data_size): a map that does not
// exist in the current context reads as empty, as Envoy's
// Context::getHeaderMapPairs answers (headerMapToPairs of a null map, in the
// access-log phase too; only a type beyond the last is BadArgument).
func proxyGetHeaderMapPairs(w *Worker, _ api.Module, stack []uint64) {
	m, st := w.headerMap(MapType(u32(stack[0])))
	if st != StatusOK && MapType(u32(stack[0])) <= mapTypeMax {
		st, m = StatusOK, &headerMap{}
	}
	if st != StatusOK {
		status(stack, st)
		return
	}
	if len(*m) == 0 {
		status(stack, w.copyOut(nil, stack[1], stack[2]))
		return
	}
	w.scratch = m.appendSerialized(w.scratch[:0])
	status(stack, w.copyOut(w.scratch, stack[1], stack[2]))
}

// proxy_set_header_map_pairs(type, data, data_size)
func proxySetHeaderMapPairs(w *Worker, _ api.Module, stack []uint64) {
	m, st := w.headerMap(MapType(u32(stack[0])))
	if st != StatusOK {
		status(stack, st)
		return
	}
	data, ok := w.read(stack[1], stack[2])
	if !ok {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	pairs, _ := parsePairs(data)
	*m = m.load(pairs)
	status(stack, StatusOK)
}

// proxy_get_header_map_size(type, *size): Envoy's HeaderMap::byteSize.
func proxyGetHeaderMapSize(w *Worker, _ api.Module, stack []uint64) {
	m, st := w.headerMap(MapType(u32(stack[0])))
	if st != StatusOK {
		status(stack, st)
		return
	}
	status(stack, w.putU32(u32(stack[1]), uint32(m.byteSize())))
}

// buffer returns a readable buffer, as Envoy's Context::getBuffer: the VM
// configuration always, the plugin configuration during proxy_on_configure,
// the callout response body during proxy_on_http_call_response.
func (w *Worker) buffer(t BufferType) ([]byte, bool) {
	switch t {
	case BufferVMConfiguration:
		return w.h.cfg.VMConfig, true
	case BufferPluginConfiguration:
		if w.pluginConfigReadable {
			return w.h.cfg.PluginConfig, true
		}
	case BufferHTTPCallResponseBody:
		if w.callAnswered() {
			return w.callResp.Body, true
		}
	}
	return nil, false
}

// proxy_get_buffer_status(type, *length, *flags)
func proxyGetBufferStatus(w *Worker, _ api.Module, stack []uint64) {
	t := BufferType(u32(stack[0]))
	if t > bufferTypeMax {
		status(stack, StatusBadArgument)
		return
	}
	b, ok := w.buffer(t)
	if !ok {
		status(stack, StatusNotFound)
		return
	}
	if !w.mem.WriteUint32Le(u32(stack[1]), uint32(len(b))) || !w.mem.WriteUint32Le(u32(stack[2]), 0) {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	status(stack, StatusOK)
}

// proxy_get_buffer_bytes(type, start, max_size, **data, *data_size): like
// proxy-wasm-cpp-host, the range is clipped to the buffer and nothing is
// written when it is empty; a start beyond the end is BadArgument.
func proxyGetBufferBytes(w *Worker, _ api.Module, stack []uint64) {
	t := BufferType(u32(stack[0]))
	if t > bufferTypeMax {
		status(stack, StatusBadArgument)
		return
	}
	b, ok := w.buffer(t)
	if !ok {
		status(stack, StatusNotFound)
		return
	}
	start, length := uint64(u32(stack[1])), uint64(u32(stack[2]))
	if start > uint64(len(b)) {
		status(stack, StatusBadArgument)
		return
	}
	if start+length > uint64(len(b)) {
		length = uint64(len(b)) - start
	}
	if length == 0 {
		status(stack, StatusOK)
		return
	}
	status(stack, w.copyOut(b[start:start+length], stack[3], stack[4]))
}

// proxy_set_tick_period_milliseconds(period): 0 stops the timer.
func proxySetTickPeriod(w *Worker, _ api.Module, stack []uint64) {
	w.setTickPeriod(time.Duration(u32(stack[0])) * time.Millisecond)
	status(stack, StatusOK)
}

// proxy_get_current_time_nanoseconds(*time)
func proxyGetCurrentTime(w *Worker, _ api.Module, stack []uint64) {
	status(stack, w.putU64(u32(stack[0]), uint64(time.Now().UnixNano())))
}

// Metric ids carry their type in the low two bits, as Envoy's do
// (kMetricTypeCounter 1, gauge 2, histogram 3).
func metricID(index int, t MetricType) uint32 { return uint32(index)<<2 | (uint32(t) + 1) }

func (w *Worker) metricByID(id uint32) *metric {
	i := int(id >> 2)
	if i >= len(w.metricsByID) || metricID(i, w.metricsByID[i].typ) != id {
		return nil
	}
	return w.metricsByID[i]
}

// proxy_define_metric(type, name, name_size, *id): each definition gets a new
// id; the stat behind it is shared by name across workers.
func proxyDefineMetric(w *Worker, _ api.Module, stack []uint64) {
	t := MetricType(u32(stack[0]))
	if t > MetricHistogram {
		status(stack, StatusBadArgument)
		return
	}
	name, ok := w.read(stack[1], stack[2])
	if !ok {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	m := w.h.metrics.define(t, string(name))
	id := metricID(len(w.metricsByID), t)
	w.metricsByID = append(w.metricsByID, m)
	status(stack, w.putU32(u32(stack[3]), id))
}

// proxy_increment_metric(id, offset i64): Envoy adds a positive offset to a
// counter (a non-positive one is BadArgument), adds or subtracts on a gauge,
// and refuses histograms.
func proxyIncrementMetric(w *Worker, _ api.Module, stack []uint64) {
	m := w.metricByID(u32(stack[0]))
	if m == nil {
		status(stack, StatusNotFound)
		return
	}
	offset := int64(stack[1])
	switch m.typ {
	case MetricCounter:
		if offset <= 0 {
			status(stack, StatusBadArgument)
			return
		}
		m.value.Add(offset)
	case MetricGauge:
		m.value.Add(offset)
		w.gaugeAdded(m, offset)
	default:
		status(stack, StatusBadArgument)
		return
	}
	status(stack, StatusOK)
}

// proxy_record_metric(id, value u64): counter += value, gauge = value,
// histogram records value.
func proxyRecordMetric(w *Worker, _ api.Module, stack []uint64) {
	m := w.metricByID(u32(stack[0]))
	if m == nil {
		status(stack, StatusNotFound)
		return
	}
	switch m.typ {
	case MetricCounter:
		m.value.Add(int64(stack[1]))
	case MetricGauge:
		m.value.Store(int64(stack[1]))
		w.gaugeMu.Lock()
		delete(w.gaugeOwn, m) // a set overwrites the shares: none is this worker's alone
		w.gaugeMu.Unlock()
	case MetricHistogram:
		m.record(stack[1])
	}
	status(stack, StatusOK)
}

// proxy_get_metric(id, *value u64): histograms are BadArgument.
func proxyGetMetric(w *Worker, _ api.Module, stack []uint64) {
	m := w.metricByID(u32(stack[0]))
	if m == nil {
		status(stack, StatusNotFound)
		return
	}
	if m.typ == MetricHistogram {
		status(stack, StatusBadArgument)
		return
	}
	status(stack, w.putU64(u32(stack[1]), uint64(m.value.Load())))
}

// proxy_set_effective_context(id), as cpp-host's set_effective_context: any
// context the VM still has (WasmBase::getContext: the root, and every stream
// from proxy_on_context_create until proxy_on_delete has returned, held ones
// included) becomes the one later host calls in this callback act on; an id
// the VM does not know (a stream already deleted, or never made) is
// BadArgument and changes nothing. Id 0 is the VM context, which makes the
// called context current again. Streams belong to the worker that created
// them: another worker's ids are unknown here.
func proxySetEffectiveContext(w *Worker, _ api.Module, stack []uint64) {
	id := u32(stack[0])
	if id != 0 && id != rootID && w.streams[id] == nil {
		status(stack, StatusBadArgument)
		return
	}
	w.effective = id
	status(stack, StatusOK)
}

// proxy_done(): ends a shutdown deferred by proxy_on_done returning false;
// proxy_on_delete(root) follows once the current callback returns.
func proxyDone(w *Worker, _ api.Module, stack []uint64) {
	if !w.pendingDone || w.doneCalled || w.contextID() != rootID {
		status(stack, StatusNotFound)
		return
	}
	w.doneCalled = true
	status(stack, StatusOK)
}

// proxy_call_foreign_function: this host registers no foreign functions.
func proxyCallForeignFunction(w *Worker, _ api.Module, stack []uint64) {
	if _, ok := w.read(stack[0], stack[1]); !ok {
		status(stack, StatusInvalidMemoryAccess)
		return
	}
	status(stack, StatusNotFound)
}

// proxy_get_configuration(**data, *size) (ABI 0.1.0): the plugin configuration.
func proxyGetConfiguration(w *Worker, _ api.Module, stack []uint64) {
	status(stack, w.copyOut(w.h.cfg.PluginConfig, stack[0], stack[1]))
}

// continueStream is Envoy's Context::continueStream on the current or
// effective context (cpp-host continue_stream uses
// contextOrEffectiveContext): Upstream is Unimplemented; on the root context,
// which has no decoder callbacks, Request and Response do nothing and answer
// Ok; on a stream, continueDecoding() is deferred until the VM call returns
// (addAfterVmCallAction), so a held stream resumes after the callback that
// resumed it (runDeferred), and one resumed inside its own
// proxy_on_request_headers proceeds when that returns.
func (w *Worker) continueStream(t int) Status {
	if t == 3 { // WasmStreamType::Upstream
		return StatusUnimplemented
	}
	s := w.streamContext()
	if s == nil || s.ended {
		return StatusOK
	}
	s.continued[t] = true
	if t == streamRequest && s.paused {
		w.deferStream(s)
	}
	return StatusOK
}

// proxy_continue_stream(type)
func proxyContinueStream(w *Worker, _ api.Module, stack []uint64) {
	t := u32(stack[0])
	if t > streamTypeMax {
		status(stack, StatusBadArgument)
		return
	}
	status(stack, w.continueStream(int(t)))
}

// proxy_close_stream(type)
func proxyCloseStream(w *Worker, _ api.Module, stack []uint64) {
	t := u32(stack[0])
	s := w.streamContext()
	if t > streamTypeMax || s == nil {
		status(stack, StatusBadArgument)
		return
	}
	s.closed[t] = true
	if s.paused && (t == streamRequest || t == streamResponse) {
		// Envoy resets the stream after the VM call (addAfterVmCallAction).
		w.deferStream(s)
	}
	status(stack, StatusOK)
}

// pthread_equal(a, b)
func pthreadEqual(_ *Worker, _ api.Module, stack []uint64) {
	if u32(stack[0]) == u32(stack[1]) {
		stack[0] = 1
	} else {
		stack[0] = 0
	}
}

// wasiOverrides replace wazero's WASI functions where Envoy behaves
// differently in a way a module can see.
var wasiOverrides = map[string]hostFunc{
	"fd_write":  wasiFdWrite,
	"proc_exit": wasiProcExit,
}

// WASI errno values used by the overrides.
const (
	errnoSuccess = 0
	errnoBadf    = 8
	errnoFault   = 21
	errnoNosys   = 52
)

// pollOneoff is poll_oneoff(in, out, nsubscriptions, *nevents) as the
// cpp-host of v answers it: ENOSYS before #533 (src/exports.cc at 94091cd^),
// from #533 on success with zero events, *nevents set to 0 (EFAULT if that
// word is outside memory), without waiting. Either way the call is counted
// in Stats.PollOneoff, by phase.
func pollOneoff(v WASI) hostFunc {
	return func(w *Worker, _ api.Module, stack []uint64) {
		if w.phase == phaseStart {
			w.pollAtStart.Add(1)
		} else {
			w.pollAfterStart.Add(1)
		}
		if v == WASIEnvoy133 {
			stack[0] = errnoNosys
			return
		}
		if !w.mem.WriteUint32Le(u32(stack[3]), 0) {
			stack[0] = errnoFault
			return
		}
		stack[0] = errnoSuccess
	}
}

// fd_write(fd, iovs, iovs_len, *nwritten): Envoy turns writes to stdout into
// info logs and to stderr into error logs (one line per call, trailing
// newline dropped); other descriptors are EBADF.
func wasiFdWrite(w *Worker, _ api.Module, stack []uint64) {
	fd := u32(stack[0])
	var level LogLevel
	switch fd {
	case 1:
		level = LevelInfo
	case 2:
		level = LevelError
	default:
		stack[0] = errnoBadf
		return
	}
	iovs, n := u32(stack[1]), u32(stack[2])
	vec, ok := w.mem.Read(iovs, n*8)
	if !ok {
		stack[0] = errnoFault
		return
	}
	var sb strings.Builder
	for i := uint32(0); i < n; i++ {
		ptr := binary.LittleEndian.Uint32(vec[8*i:])
		size := binary.LittleEndian.Uint32(vec[8*i+4:])
		b, ok := w.mem.Read(ptr, size)
		if !ok {
			stack[0] = errnoFault
			return
		}
		sb.Write(b)
	}
	msg := sb.String()
	written := uint32(len(msg))
	if msg != "" {
		w.log(level, strings.TrimSuffix(msg, "\n"))
	}
	if !w.mem.WriteUint32Le(u32(stack[3]), written) {
		stack[0] = errnoFault
		return
	}
	stack[0] = errnoSuccess
}

// proc_exit(code): Envoy logs it and carries on, which leaves a Go or Rust
// runtime in an undefined state; this host treats it as a crash instead.
func wasiProcExit(w *Worker, _ api.Module, stack []uint64) {
	code := u32(stack[0])
	w.log(LevelError, fmt.Sprintf("wasi proc_exit(%d)", code))
	panic(fmt.Errorf("wasmhost: module called proc_exit(%d)", code))
}

// gaugeAdded records a worker's own increment of gauge m (Worker.Gauge).
func (w *Worker) gaugeAdded(m *metric, offset int64) {
	w.gaugeMu.Lock()
	defer w.gaugeMu.Unlock()
	if w.gaugeOwn == nil {
		w.gaugeOwn = map[*metric]int64{}
	}
	w.gaugeOwn[m] += offset
}

// Gauge returns what this worker's increments of the gauge the module
// defined as name add up to: its own share of the process-wide stat
// (Host.Gauge), e.g. one VM's figure of a gauge every VM adds its own value
// to. It is 0 for a gauge the worker never incremented or last set with
// proxy_record_metric (a set overwrites the shares); meaningful for gauges
// the module only increments, as the filter's reqcount.vm.* gauges.
func (w *Worker) Gauge(name string) int64 {
	m := w.h.metrics.lookup(MetricGauge, name)
	w.gaugeMu.Lock()
	defer w.gaugeMu.Unlock()
	return w.gaugeOwn[m]
}
