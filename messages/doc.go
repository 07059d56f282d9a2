// Package messages holds the wire format the reqcount filter sends to its
// collector, and an encoder and decoder for it.
//
// # Purpose
//
// The filter counts requests per (service, namespace) in each Envoy worker and
// periodically reports them as [RequestCount] messages. The usual consumer is
// a scale-to-zero operator that scales a target up from zero when it hears
// about it. This package is the single definition of that message, so the
// filter, the operator and any scaler or test collector agree byte for byte.
//
// The package imports nothing outside the standard library and is its own
// module (go 1.22), so any consumer can import it without pulling in the
// filter or the proxy-wasm SDK.
//
// # The operator contract
//
// The operator serves POST /informer/incoming-request (port 8013). It reads
// exactly ONE JSON object per request body, as
//
//	{"count":3,"svc":"checkout","namespace":"shop"}
//
// with json.NewDecoder(body).Decode: an array is answered with 400, and after
// the first object any further data in the body is silently ignored. So in
// single mode the filter sends one POST per message, encoded by [AppendJSON]
// (or [AppendFields]). It answers 200 with
// {"message":"Request received successfully!"}, 400 for a bad body and 405 for
// any other method.
//
// Collectors that accept batches take a JSON array of the same objects in one
// body, encoded by [AppendBatchJSON]:
//
//	[{"count":3,"svc":"checkout","namespace":"shop"},{"count":1,"svc":"cart","namespace":"shop"}]
//
// # Encoding
//
// The encoders append to a caller-owned buffer and allocate nothing when it has
// room, so the filter's flush path can reuse one buffer forever. Their output
// is byte-identical to encoding/json's [encoding/json.Marshal] for every input,
// including the escaping of quotes, backslashes, control characters, '<', '>',
// '&', U+2028, U+2029 and invalid UTF-8; tests and fuzz targets check this
// against encoding/json itself.
//
// # Decoding
//
// [Decode] is for consumers: it accepts one object or an array of objects,
// refuses trailing data, and validates every message (see
// [RequestCount.Validate]). Validation failures are reported as [*FieldError]
// values that name the array index and the field.
package messages
