//go:build wasip1

// This file is not part of the reqcount module: build.sh copies it into a
// build-time copy of github.com/tetratelabs/proxy-wasm-go-sdk v0.24.0
// (proxywasm/internal), in place of abi_hostcalls_mock.go. See README.md.

package internal

import "unsafe"

// The SDK declares its host calls in abi_hostcalls.go for TinyGo only, with
// Go's int for every size and **byte / *int for values the host returns.
// Upstream Go on wasm has a 64-bit int and 64-bit pointers, while the
// proxy-wasm ABI (v0.2.1, as implemented by proxy-wasm-cpp-host) passes every
// pointer and size as an i32 "Word". So the raw imports below use uint32 for
// sizes, ids and enums, *byte for data the guest hands over, *uint32 for
// 32-bit words the host writes back, and int64/uint64 only where the ABI has
// an i64 (increment_metric, record_metric). The exported Proxy* functions keep
// the SDK's Go signatures so the rest of the SDK compiles unchanged.
//
// //go:noescape is sound for every import: the host copies what it reads and
// writes only through the out-parameters before it returns, and never keeps a
// guest address. Out-parameters for calls that re-enter the guest use the
// package variable out (see there).

// out is where the host writes the words it returns (an address and a size,
// a CAS token) for the calls that copy data into the guest. It is a package
// variable, not a local, on purpose: to make that copy the host first calls
// back into the guest (proxy_on_memory_allocate), and Go may move or shrink the
// calling goroutine's stack during that call; a local's address handed to the
// host before it would then point into a stale stack, the host's write would
// be lost and the caller would read an empty value. Globals never move. One set
// is enough: the guest is single-threaded and proxy_on_memory_allocate makes
// no host call of its own.
var out struct{ data, size, cas uint32 }

// result returns what a call that copies data in answered through out: the
// data's address as a pointer, and its size; nil and 0 when the call failed.
// A failed call wrote nothing, so out still holds an earlier call's address,
// which may point into a block the GC has freed since (a callback's reserved
// arena block): turned into a pointer and seen by the GC, that would be a bad
// pointer, so it is never converted.
func result(st uint32) (*byte, int) {
	if Status(st) != StatusOK {
		return nil, 0
	}
	return hostPtr(out.data), int(out.size)
}

// hostPtr turns a guest address written by the host back into a pointer
// (0 gives nil). The address comes from exportOnMemoryAllocate during the
// running callback, i.e. it points into an arena block the allocator holds,
// and Go's GC does not move heap objects, so the pointer is valid and, once
// the SDK holds it, keeps the block alive by itself. (unsafe.Add from nil is
// the same integer-to-pointer step as unsafe.Pointer(uintptr(addr)), spelled
// so that go vet's unsafeptr check does not flag this deliberate one.)
func hostPtr(addr uint32) *byte {
	return (*byte)(unsafe.Add(nil, addr))
}

//go:wasmimport env proxy_log
//go:noescape
func hostLog(logLevel uint32, messageData *byte, messageSize uint32) uint32

// ProxyLog logs a message at logLevel.
func ProxyLog(logLevel LogLevel, messageData *byte, messageSize int) Status {
	return Status(hostLog(uint32(logLevel), messageData, uint32(messageSize)))
}

//go:wasmimport env proxy_send_local_response
//go:noescape
func hostSendLocalResponse(statusCode uint32, statusCodeDetailData *byte, statusCodeDetailsSize uint32,
	bodyData *byte, bodySize uint32, headersData *byte, headersSize uint32, grpcStatus int32) uint32

// ProxySendLocalResponse answers the current HTTP stream locally.
func ProxySendLocalResponse(statusCode uint32, statusCodeDetailData *byte, statusCodeDetailsSize int,
	bodyData *byte, bodySize int, headersData *byte, headersSize int, grpcStatus int32) Status {
	return Status(hostSendLocalResponse(statusCode, statusCodeDetailData, uint32(statusCodeDetailsSize),
		bodyData, uint32(bodySize), headersData, uint32(headersSize), grpcStatus))
}

//go:wasmimport env proxy_get_shared_data
//go:noescape
func hostGetSharedData(keyData *byte, keySize uint32, returnValueData *uint32, returnValueSize *uint32, returnCas *uint32) uint32

// ProxyGetSharedData reads a shared-data value and its CAS token.
func ProxyGetSharedData(keyData *byte, keySize int, returnValueData **byte, returnValueSize *int, returnCas *uint32) Status {
	missed = 0
	st := hostGetSharedData(keyData, uint32(keySize), &out.data, &out.size, &out.cas)
	if st != 0 && growForMissed() { // a copy larger than the arena
		st = hostGetSharedData(keyData, uint32(keySize), &out.data, &out.size, &out.cas)
	}
	*returnValueData, *returnValueSize = result(st)
	*returnCas = out.cas
	return Status(st)
}

//go:wasmimport env proxy_set_shared_data
//go:noescape
func hostSetSharedData(keyData *byte, keySize uint32, valueData *byte, valueSize uint32, cas uint32) uint32

// ProxySetSharedData writes a shared-data value (cas 0: unconditionally).
func ProxySetSharedData(keyData *byte, keySize int, valueData *byte, valueSize int, cas uint32) Status {
	return Status(hostSetSharedData(keyData, uint32(keySize), valueData, uint32(valueSize), cas))
}

//go:wasmimport env proxy_register_shared_queue
//go:noescape
func hostRegisterSharedQueue(nameData *byte, nameSize uint32, returnID *uint32) uint32

// ProxyRegisterSharedQueue creates or opens a shared queue of this VM.
func ProxyRegisterSharedQueue(nameData *byte, nameSize int, returnID *uint32) Status {
	return Status(hostRegisterSharedQueue(nameData, uint32(nameSize), returnID))
}

//go:wasmimport env proxy_resolve_shared_queue
//go:noescape
func hostResolveSharedQueue(vmIDData *byte, vmIDSize uint32, nameData *byte, nameSize uint32, returnID *uint32) uint32

// ProxyResolveSharedQueue looks up an existing shared queue of a VM.
func ProxyResolveSharedQueue(vmIDData *byte, vmIDSize int, nameData *byte, nameSize int, returnID *uint32) Status {
	return Status(hostResolveSharedQueue(vmIDData, uint32(vmIDSize), nameData, uint32(nameSize), returnID))
}

//go:wasmimport env proxy_dequeue_shared_queue
//go:noescape
func hostDequeueSharedQueue(queueID uint32, returnValueData *uint32, returnValueSize *uint32) uint32

// ProxyDequeueSharedQueue takes the item at the front of a shared queue.
func ProxyDequeueSharedQueue(queueID uint32, returnValueData **byte, returnValueSize *int) Status {
	missed = 0
	st := hostDequeueSharedQueue(queueID, &out.data, &out.size)
	if st != 0 && growForMissed() { // a copy larger than the arena
		st = hostDequeueSharedQueue(queueID, &out.data, &out.size)
	}
	*returnValueData, *returnValueSize = result(st)
	return Status(st)
}

//go:wasmimport env proxy_enqueue_shared_queue
//go:noescape
func hostEnqueueSharedQueue(queueID uint32, valueData *byte, valueSize uint32) uint32

// ProxyEnqueueSharedQueue appends an item to a shared queue.
func ProxyEnqueueSharedQueue(queueID uint32, valueData *byte, valueSize int) Status {
	return Status(hostEnqueueSharedQueue(queueID, valueData, uint32(valueSize)))
}

//go:wasmimport env proxy_get_header_map_value
//go:noescape
func hostGetHeaderMapValue(mapType uint32, keyData *byte, keySize uint32, returnValueData *uint32, returnValueSize *uint32) uint32

// ProxyGetHeaderMapValue reads one header (or trailer) value.
func ProxyGetHeaderMapValue(mapType MapType, keyData *byte, keySize int, returnValueData **byte, returnValueSize *int) Status {
	st := hostGetHeaderMapValue(uint32(mapType), keyData, uint32(keySize), &out.data, &out.size)
	*returnValueData, *returnValueSize = result(st)
	return Status(st)
}

//go:wasmimport env proxy_add_header_map_value
//go:noescape
func hostAddHeaderMapValue(mapType uint32, keyData *byte, keySize uint32, valueData *byte, valueSize uint32) uint32

// ProxyAddHeaderMapValue adds a header (or trailer) value.
func ProxyAddHeaderMapValue(mapType MapType, keyData *byte, keySize int, valueData *byte, valueSize int) Status {
	return Status(hostAddHeaderMapValue(uint32(mapType), keyData, uint32(keySize), valueData, uint32(valueSize)))
}

//go:wasmimport env proxy_replace_header_map_value
//go:noescape
func hostReplaceHeaderMapValue(mapType uint32, keyData *byte, keySize uint32, valueData *byte, valueSize uint32) uint32

// ProxyReplaceHeaderMapValue sets a header (or trailer) value.
func ProxyReplaceHeaderMapValue(mapType MapType, keyData *byte, keySize int, valueData *byte, valueSize int) Status {
	return Status(hostReplaceHeaderMapValue(uint32(mapType), keyData, uint32(keySize), valueData, uint32(valueSize)))
}

//go:wasmimport env proxy_remove_header_map_value
//go:noescape
func hostRemoveHeaderMapValue(mapType uint32, keyData *byte, keySize uint32) uint32

// ProxyRemoveHeaderMapValue removes a header (or trailer).
func ProxyRemoveHeaderMapValue(mapType MapType, keyData *byte, keySize int) Status {
	return Status(hostRemoveHeaderMapValue(uint32(mapType), keyData, uint32(keySize)))
}

//go:wasmimport env proxy_get_header_map_pairs
//go:noescape
func hostGetHeaderMapPairs(mapType uint32, returnValueData *uint32, returnValueSize *uint32) uint32

// ProxyGetHeaderMapPairs reads a whole header (or trailer) map, serialized.
func ProxyGetHeaderMapPairs(mapType MapType, returnValueData **byte, returnValueSize *int) Status {
	missed = 0
	st := hostGetHeaderMapPairs(uint32(mapType), &out.data, &out.size)
	if st != 0 && growForMissed() { // a copy larger than the arena
		st = hostGetHeaderMapPairs(uint32(mapType), &out.data, &out.size)
	}
	*returnValueData, *returnValueSize = result(st)
	return Status(st)
}

//go:wasmimport env proxy_set_header_map_pairs
//go:noescape
func hostSetHeaderMapPairs(mapType uint32, mapData *byte, mapSize uint32) uint32

// ProxySetHeaderMapPairs replaces a whole header (or trailer) map.
func ProxySetHeaderMapPairs(mapType MapType, mapData *byte, mapSize int) Status {
	return Status(hostSetHeaderMapPairs(uint32(mapType), mapData, uint32(mapSize)))
}

//go:wasmimport env proxy_get_buffer_bytes
//go:noescape
func hostGetBufferBytes(bufferType uint32, start uint32, maxSize uint32, returnBufferData *uint32, returnBufferSize *uint32) uint32

// ProxyGetBufferBytes reads up to maxSize bytes from start of a buffer.
func ProxyGetBufferBytes(bufferType BufferType, start int, maxSize int, returnBufferData **byte, returnBufferSize *int) Status {
	missed = 0
	st := hostGetBufferBytes(uint32(bufferType), uint32(start), uint32(maxSize), &out.data, &out.size)
	if st != 0 && growForMissed() { // a copy larger than the arena
		st = hostGetBufferBytes(uint32(bufferType), uint32(start), uint32(maxSize), &out.data, &out.size)
	}
	*returnBufferData, *returnBufferSize = result(st)
	return Status(st)
}

//go:wasmimport env proxy_set_buffer_bytes
//go:noescape
func hostSetBufferBytes(bufferType uint32, start uint32, maxSize uint32, bufferData *byte, bufferSize uint32) uint32

// ProxySetBufferBytes replaces maxSize bytes from start of a buffer.
func ProxySetBufferBytes(bufferType BufferType, start int, maxSize int, bufferData *byte, bufferSize int) Status {
	return Status(hostSetBufferBytes(uint32(bufferType), uint32(start), uint32(maxSize), bufferData, uint32(bufferSize)))
}

//go:wasmimport env proxy_continue_stream
func hostContinueStream(streamType uint32) uint32

// ProxyContinueStream resumes a paused stream.
func ProxyContinueStream(streamType StreamType) Status {
	return Status(hostContinueStream(uint32(streamType)))
}

//go:wasmimport env proxy_close_stream
func hostCloseStream(streamType uint32) uint32

// ProxyCloseStream closes or resets a stream.
func ProxyCloseStream(streamType StreamType) Status {
	return Status(hostCloseStream(uint32(streamType)))
}

//go:wasmimport env proxy_http_call
//go:noescape
func hostHttpCall(upstreamData *byte, upstreamSize uint32, headerData *byte, headerSize uint32,
	bodyData *byte, bodySize uint32, trailersData *byte, trailersSize uint32, timeout uint32, calloutIDPtr *uint32) uint32

// ProxyHttpCall dispatches an HTTP call to an upstream cluster; timeout is in
// milliseconds and the callout token is written to calloutIDPtr.
func ProxyHttpCall(upstreamData *byte, upstreamSize int, headerData *byte, headerSize int,
	bodyData *byte, bodySize int, trailersData *byte, trailersSize int, timeout uint32, calloutIDPtr *uint32,
) Status {
	return Status(hostHttpCall(upstreamData, uint32(upstreamSize), headerData, uint32(headerSize),
		bodyData, uint32(bodySize), trailersData, uint32(trailersSize), timeout, calloutIDPtr))
}

//go:wasmimport env proxy_call_foreign_function
//go:noescape
func hostCallForeignFunction(funcNamePtr *byte, funcNameSize uint32, paramPtr *byte, paramSize uint32, returnData *uint32, returnSize *uint32) uint32

// ProxyCallForeignFunction calls a function the host registered by name.
func ProxyCallForeignFunction(funcNamePtr *byte, funcNameSize int, paramPtr *byte, paramSize int, returnData **byte, returnSize *int) Status {
	st := hostCallForeignFunction(funcNamePtr, uint32(funcNameSize), paramPtr, uint32(paramSize), &out.data, &out.size)
	*returnData, *returnSize = result(st)
	return Status(st)
}

//go:wasmimport env proxy_set_tick_period_milliseconds
func hostSetTickPeriodMilliseconds(period uint32) uint32

// ProxySetTickPeriodMilliseconds sets the root context's timer (0 stops it).
func ProxySetTickPeriodMilliseconds(period uint32) Status {
	return Status(hostSetTickPeriodMilliseconds(period))
}

//go:wasmimport env proxy_set_effective_context
func hostSetEffectiveContext(contextID uint32) uint32

// ProxySetEffectiveContext makes contextID the context later host calls act on,
// and, when the host accepts it, the SDK's active context too, as the SDK's own
// proxytest host does. That is what makes an HTTP call dispatched from a stream
// after SetEffectiveContext(root) the root context's own call: the SDK registers
// a callout under its active context (vmstate.go registerHttpCallOut) and drops
// the answer when that context is gone (abi_callback_l7.go), while Envoy always
// answers on the root context, often after the stream ended. Every callback sets
// the active context again on entry, so the change lasts only for the rest of the
// current callback, as the host's effective context does.
func ProxySetEffectiveContext(contextID uint32) Status {
	st := Status(hostSetEffectiveContext(contextID))
	if st == StatusOK {
		currentState.setActiveContextID(contextID)
	}
	return st
}

//go:wasmimport env proxy_done
func hostDone() uint32

// ProxyDone tells the host a context that deferred its deletion is done.
func ProxyDone() Status {
	return Status(hostDone())
}

//go:wasmimport env proxy_define_metric
//go:noescape
func hostDefineMetric(metricType uint32, metricNameData *byte, metricNameSize uint32, returnMetricIDPtr *uint32) uint32

// ProxyDefineMetric defines a counter, gauge or histogram.
func ProxyDefineMetric(metricType MetricType, metricNameData *byte, metricNameSize int, returnMetricIDPtr *uint32) Status {
	return Status(hostDefineMetric(uint32(metricType), metricNameData, uint32(metricNameSize), returnMetricIDPtr))
}

//go:wasmimport env proxy_increment_metric
func hostIncrementMetric(metricID uint32, offset int64) uint32

// ProxyIncrementMetric adds offset (an i64 in the ABI) to a metric.
func ProxyIncrementMetric(metricID uint32, offset int64) Status {
	return Status(hostIncrementMetric(metricID, offset))
}

//go:wasmimport env proxy_record_metric
func hostRecordMetric(metricID uint32, value uint64) uint32

// ProxyRecordMetric sets a metric to value (an i64 in the ABI).
func ProxyRecordMetric(metricID uint32, value uint64) Status {
	return Status(hostRecordMetric(metricID, value))
}

//go:wasmimport env proxy_get_metric
//go:noescape
func hostGetMetric(metricID uint32, returnMetricValue *uint64) uint32

// ProxyGetMetric reads a metric; the host writes 8 bytes at returnMetricValue.
func ProxyGetMetric(metricID uint32, returnMetricValue *uint64) Status {
	return Status(hostGetMetric(metricID, returnMetricValue))
}

//go:wasmimport env proxy_get_property
//go:noescape
func hostGetProperty(pathData *byte, pathSize uint32, returnValueData *uint32, returnValueSize *uint32) uint32

// ProxyGetProperty reads a host property by its serialized path.
func ProxyGetProperty(pathData *byte, pathSize int, returnValueData **byte, returnValueSize *int) Status {
	missed = 0
	st := hostGetProperty(pathData, uint32(pathSize), &out.data, &out.size)
	if st != 0 && growForMissed() { // a copy larger than the arena
		st = hostGetProperty(pathData, uint32(pathSize), &out.data, &out.size)
	}
	*returnValueData, *returnValueSize = result(st)
	return Status(st)
}

//go:wasmimport env proxy_set_property
//go:noescape
func hostSetProperty(pathData *byte, pathSize uint32, valueData *byte, valueSize uint32) uint32

// ProxySetProperty writes a host property by its serialized path.
func ProxySetProperty(pathData *byte, pathSize int, valueData *byte, valueSize int) Status {
	return Status(hostSetProperty(pathData, uint32(pathSize), valueData, uint32(valueSize)))
}
