// Package callhook is where the filter's build of the SDK (filter/_sdkabi) and
// the plugin meet for HTTP calls: a call whose headers were serialised once,
// and the one header of an answer the plugin reads, without the garbage the
// SDK's DispatchHttpCall and GetHttpCallResponseHeaders leave on every call
// (a new serialisation of the headers and of the empty trailers, a callback
// record, a whole [][2]string header list per answer). Plain Go, no SDK: the
// build's copy of the SDK imports it and sets Dispatch and ResponseHeader;
// elsewhere (the SDK's native test host) they stay nil and the plugin uses the
// SDK's public API for the same calls.
package callhook

import "encoding/binary"

// Dispatch, when set, is the SDK's DispatchHttpCall for headers already in
// the ABI's pairs encoding (AppendPairs) and no trailers: the same
// proxy_http_call with the same bytes (cluster, headers, body, an empty
// trailer map, timeout in milliseconds), and cb registered under the SDK's
// active context, as DispatchHttpCall registers it. A non-nil error is the
// host's refusal (the SDK's types.ErrorStatus* values); cb is then never
// called.
var Dispatch func(cluster string, headers, body []byte, timeoutMs uint32,
	cb func(numHeaders, bodySize, numTrailers int)) (calloutID uint32, err error)

// ResponseHeader, when set, reads the first value of one header of the call
// being answered (proxy_get_header_map_value on the call's response headers),
// as the SDK's GetHttpRequestHeader reads a request header: a missing header
// is the SDK's types.ErrorStatusNotFound. The value aliases the bytes the host
// copied in, valid until the callback returns (filter/_sdkabi's arena).
var ResponseHeader func(key string) (string, error)

// AppendPairs appends headers in the proxy-wasm pairs encoding to buf and
// returns it: a little-endian u32 count, a u32 key length and a u32 value
// length per pair, then each key and each value followed by a NUL. The bytes
// are those of the SDK's own serialisation (internal.SerializeMap) and what
// proxy-wasm-cpp-host's PairsUtil::toPairs reads.
func AppendPairs(buf []byte, headers [][2]string) []byte {
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(headers)))
	for _, h := range headers {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(h[0])))
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(h[1])))
	}
	for _, h := range headers {
		buf = append(buf, h[0]...)
		buf = append(buf, 0)
		buf = append(buf, h[1]...)
		buf = append(buf, 0)
	}
	return buf
}
