//go:build wasip1

// This file is not part of the reqcount module: build.sh copies it into a
// build-time copy of github.com/tetratelabs/proxy-wasm-go-sdk v0.24.0
// (proxywasm/internal). See README.md.

package internal

import "github.com/reqcount/reqcount/filter/callhook"

// HTTP calls without the SDK's garbage per call (filter/callhook): the SDK's
// DispatchHttpCall serialises the call's headers and its empty trailers anew on
// every call and allocates a callback record; GetHttpCallResponseHeaders builds
// a [][2]string of every response header, where the filter reads only
// :status. A lease holder of aggregate: envoy with 10 000 keys makes about a
// hundred calls a tick, and that garbage, 200-odd bytes a call, is what started
// its GC cycles (the heap then grows to twice the live heap, and linear memory
// never shrinks). The hooks make the same host calls with the same bytes.

func init() {
	callhook.Dispatch = dispatchPairs
	callhook.ResponseHeader = callResponseHeader
}

// noTrailers is what the SDK's DispatchHttpCall passes for nil trailers:
// SerializeMap(nil), a zero count.
var noTrailers [4]byte

// dispatchPairs is DispatchHttpCall (hostcall.go) with the headers serialised
// by the caller: the same proxy_http_call, and the callback registered as
// RegisterHttpCallout registers it (registerCallout).
func dispatchPairs(cluster string, headers, body []byte, timeoutMs uint32,
	cb func(numHeaders, bodySize, numTrailers int)) (uint32, error) {
	if len(headers) == 0 {
		headers = noTrailers[:] // an empty map (the host then refuses the call: no :path)
	}
	var bodyPtr *byte
	if len(body) > 0 {
		bodyPtr = &body[0]
	}
	var calloutID uint32
	st := ProxyHttpCall(StringBytePtr(cluster), len(cluster), &headers[0], len(headers),
		bodyPtr, len(body), &noTrailers[0], len(noTrailers), timeoutMs, &calloutID)
	if st != StatusOK {
		return 0, StatusToError(st)
	}
	registerCallout(calloutID, cb)
	return calloutID, nil
}

// callResponseHeader is the SDK's getMapValue (hostcall.go) for the call
// response's headers: the first value of key, aliasing the arena.
func callResponseHeader(key string) (string, error) {
	var raw *byte
	var size int
	if st := ProxyGetHeaderMapValue(MapTypeHttpCallResponseHeaders, StringBytePtr(key), len(key), &raw, &size); st != StatusOK {
		return "", StatusToError(st)
	}
	return RawBytePtrToString(raw, size), nil
}

// Callback records (vmstate.go's httpCallbackAttribute) are reused: the SDK
// allocates one per call and drops it when the answer comes
// (proxyOnHttpCallResponse), while the export keeps it, once the SDK is done
// with it, for the next call (recycleCallout).
var freeCallouts []*httpCallbackAttribute

// maxFreeCallouts bounds the records kept for reuse (as the filter's answer
// pools, filter/flush.go's maxAnswers).
const maxFreeCallouts = 1024

// registerCallout is vmstate.go's registerHttpCallOut with a reused record:
// the callout belongs to the root of the SDK's active context, and its answer
// goes back to that context.
func registerCallout(calloutID uint32, cb func(numHeaders, bodySize, numTrailers int)) {
	s := currentState
	r := s.pluginContexts[s.contextIDToRootID[s.activeContextID]]
	var a *httpCallbackAttribute
	if n := len(freeCallouts); n > 0 {
		a = freeCallouts[n-1]
		freeCallouts[n-1] = nil
		freeCallouts = freeCallouts[:n-1]
	} else {
		a = new(httpCallbackAttribute)
	}
	a.callback, a.callerContextID = cb, s.activeContextID
	r.httpCallbacks[calloutID] = a
}

// calloutRecord returns the record the SDK holds for a callout of root
// rootID, or nil: the export takes it before the SDK deletes it.
func calloutRecord(rootID, calloutID uint32) *httpCallbackAttribute {
	if r, ok := currentState.pluginContexts[rootID]; ok {
		return r.httpCallbacks[calloutID]
	}
	return nil
}

// recycleCallout keeps a record the SDK no longer holds (its answer was
// handled) for the next call; its callback is dropped at once, so that a
// kept record holds nothing alive.
func recycleCallout(a *httpCallbackAttribute) {
	if a == nil || len(freeCallouts) >= maxFreeCallouts {
		return
	}
	*a = httpCallbackAttribute{}
	freeCallouts = append(freeCallouts, a)
}
