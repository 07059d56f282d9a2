//go:build wasip1 && !proxywasm_lean

// This file is not part of the reqcount module: build.sh copies it into a
// build-time copy of github.com/tetratelabs/proxy-wasm-go-sdk v0.24.0
// (proxywasm/internal). See README.md.

package internal

import "github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

// The rest of the SDK's callbacks, so that a plain build exports the same set
// as a TinyGo build of the SDK. -tags proxywasm_lean leaves them out: Envoy
// calls a callback only if the module exports it, so each one left out is a
// guest entry saved wherever the plugin would do nothing in it (proxy_on_log
// and proxy_on_response_headers run on every request). Conversions and the
// arena as in exports_wasip1.go: each callback rewinds the arena
// (startCallback), and one told a size up front (a body, TCP data) reserves
// room for it first (reserveArena). A shared stream (streams_wasip1.go) goes
// to its root's HttpContext without the SDK's maps.

//go:wasmexport proxy_on_request_body
func exportOnRequestBody(contextID, bodySize, endOfStream uint32) uint32 {
	s := startCallback()
	reserveArena(bodySize)
	var r uint32
	if c, ok := sharedStream(contextID); ok {
		r = uint32(c.OnHttpRequestBody(int(bodySize), endOfStream != 0))
	} else {
		r = uint32(proxyOnRequestBody(contextID, int(bodySize), endOfStream != 0))
	}
	endCallback(s)
	return r
}

//go:wasmexport proxy_on_request_trailers
func exportOnRequestTrailers(contextID, numTrailers uint32) uint32 {
	s := startCallback()
	var r uint32
	if c, ok := sharedStream(contextID); ok {
		r = uint32(c.OnHttpRequestTrailers(int(numTrailers)))
	} else {
		r = uint32(proxyOnRequestTrailers(contextID, int(numTrailers)))
	}
	endCallback(s)
	return r
}

//go:wasmexport proxy_on_response_headers
func exportOnResponseHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	s := startCallback()
	var r uint32
	if c, ok := sharedStream(contextID); ok {
		r = uint32(c.OnHttpResponseHeaders(int(numHeaders), endOfStream != 0))
	} else {
		r = uint32(proxyOnResponseHeaders(contextID, int(numHeaders), endOfStream != 0))
	}
	endCallback(s)
	return r
}

//go:wasmexport proxy_on_response_body
func exportOnResponseBody(contextID, bodySize, endOfStream uint32) uint32 {
	s := startCallback()
	reserveArena(bodySize)
	var r uint32
	if c, ok := sharedStream(contextID); ok {
		r = uint32(c.OnHttpResponseBody(int(bodySize), endOfStream != 0))
	} else {
		r = uint32(proxyOnResponseBody(contextID, int(bodySize), endOfStream != 0))
	}
	endCallback(s)
	return r
}

//go:wasmexport proxy_on_response_trailers
func exportOnResponseTrailers(contextID, numTrailers uint32) uint32 {
	s := startCallback()
	var r uint32
	if c, ok := sharedStream(contextID); ok {
		r = uint32(c.OnHttpResponseTrailers(int(numTrailers)))
	} else {
		r = uint32(proxyOnResponseTrailers(contextID, int(numTrailers)))
	}
	endCallback(s)
	return r
}

//go:wasmexport proxy_on_log
func exportOnLog(contextID uint32) {
	s := startCallback()
	if c, ok := sharedStream(contextID); ok {
		c.OnHttpStreamDone()
	} else {
		proxyOnLog(contextID)
	}
	endCallback(s)
}

//go:wasmexport proxy_on_queue_ready
func exportOnQueueReady(pluginContextID, queueID uint32) {
	s := startCallback()
	proxyOnQueueReady(pluginContextID, queueID)
	endCallback(s)
}

//go:wasmexport proxy_on_new_connection
func exportOnNewConnection(contextID uint32) uint32 {
	s := startCallback()
	r := uint32(proxyOnNewConnection(contextID))
	endCallback(s)
	return r
}

//go:wasmexport proxy_on_downstream_data
func exportOnDownstreamData(contextID, dataSize, endOfStream uint32) uint32 {
	s := startCallback()
	reserveArena(dataSize)
	r := uint32(proxyOnDownstreamData(contextID, int(dataSize), endOfStream != 0))
	endCallback(s)
	return r
}

//go:wasmexport proxy_on_downstream_connection_close
func exportOnDownstreamConnectionClose(contextID, peerType uint32) {
	s := startCallback()
	proxyOnDownstreamConnectionClose(contextID, types.PeerType(peerType))
	endCallback(s)
}

//go:wasmexport proxy_on_upstream_data
func exportOnUpstreamData(contextID, dataSize, endOfStream uint32) uint32 {
	s := startCallback()
	reserveArena(dataSize)
	r := uint32(proxyOnUpstreamData(contextID, int(dataSize), endOfStream != 0))
	endCallback(s)
	return r
}

//go:wasmexport proxy_on_upstream_connection_close
func exportOnUpstreamConnectionClose(contextID, peerType uint32) {
	s := startCallback()
	proxyOnUpstreamConnectionClose(contextID, types.PeerType(peerType))
	endCallback(s)
}
