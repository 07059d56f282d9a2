package messages

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
)

// ErrNoMessages is returned by [Decode] for an empty array: a sender has no
// reason to report nothing, so an empty batch is treated as a sender bug.
var ErrNoMessages = errors.New("messages: no messages")

// Decode parses a request body holding either one [RequestCount] object (what
// the operator's endpoint takes) or a JSON array of them (what batch
// collectors take), and validates every message with
// [RequestCount.Validate]. Leading whitespace decides which form it is.
//
// The body must be exactly one JSON value: trailing data after it, other than
// whitespace, is an error (unlike the operator's json.Decoder, which silently
// drops it). null, an empty body and an empty array ([ErrNoMessages]) are
// errors too.
//
// Field matching follows encoding/json, as the operator's does: unknown fields
// are ignored, so a newer sender may add fields without breaking consumers;
// names match case-insensitively; a repeated field keeps its last value.
//
// Errors about a message's content are [*FieldError] values, with Index set
// to the array position (-1 for a single object); malformed JSON is reported
// as an error wrapping encoding/json's *json.SyntaxError.
func Decode(body []byte) ([]RequestCount, error) {
	rest := trimSpace(body)
	if len(rest) == 0 {
		return nil, errors.New("messages: empty body, want a JSON object or array")
	}
	switch rest[0] {
	case '{':
		var m RequestCount
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, decodeError(-1, err)
		}
		if err := m.Validate(); err != nil {
			return nil, err
		}
		return []RequestCount{m}, nil
	case '[':
		// Element by element, so that an error can name the index and so
		// that null or non-object elements are refused instead of being
		// read as zero messages.
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, decodeError(-1, err)
		}
		if len(raws) == 0 {
			return nil, ErrNoMessages
		}
		ms := make([]RequestCount, len(raws))
		for i, raw := range raws {
			if kind := jsonKind(raw); kind != "object" {
				return nil, &FieldError{Index: i, Problem: "want an object, got " + kind}
			}
			if err := json.Unmarshal(raw, &ms[i]); err != nil {
				return nil, decodeError(i, err)
			}
			if err := ms[i].Validate(); err != nil {
				var fe *FieldError
				if errors.As(err, &fe) {
					fe.Index = i
				}
				return nil, err
			}
		}
		return ms, nil
	default:
		// Not an object or array: report malformed JSON as such, and
		// well-formed JSON of the wrong kind by its kind.
		if !json.Valid(body) {
			return nil, decodeError(-1, json.Unmarshal(body, new(json.RawMessage)))
		}
		return nil, errors.New("messages: body is " + jsonKind(rest) + ", want a JSON object or array")
	}
}

// decodeError turns an encoding/json error into this package's errors: a
// value of the wrong type becomes a *FieldError naming the field, anything
// else (malformed JSON, trailing data) is wrapped.
func decodeError(index int, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &FieldError{Index: index, Field: te.Field, Problem: "want " + wantName(te.Type) + ", got " + te.Value}
	}
	return fmt.Errorf("messages: malformed JSON: %w", err)
}

// wantName describes the Go type a JSON value failed to decode into.
func wantName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int:
		// Says the size so that overflow ("got number 1e30") reads right.
		return "a " + strconv.Itoa(strconv.IntSize) + "-bit integer"
	case reflect.String:
		return "a string"
	case reflect.Struct:
		return "an object"
	}
	return t.String()
}

// jsonKind names the kind of the well-formed JSON value that starts b after
// optional whitespace.
func jsonKind(b []byte) string {
	b = trimSpace(b)
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}

// trimSpace drops leading JSON whitespace (RFC 8259: space, tab, LF, CR).
func trimSpace(b []byte) []byte {
	for len(b) > 0 {
		switch b[0] {
		case ' ', '\t', '\n', '\r':
			b = b[1:]
		default:
			return b
		}
	}
	return b
}
