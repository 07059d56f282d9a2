package messages

import (
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends the JSON encoding of m to dst and returns the extended
// buffer. The bytes appended are exactly those of json.Marshal(m), for every
// m; nothing is allocated when dst has room for them.
//
// It does not validate m: the encoder reports what it is given, and
// consumers validate with [Decode].
func AppendJSON(dst []byte, m RequestCount) []byte {
	return AppendFields(dst, m.Count, m.Svc, m.Namespace)
}

// AppendFields is [AppendJSON] for a message given as its three fields, for
// callers that keep counts and names apart and would otherwise build a
// RequestCount only to encode it. Same output, same guarantees.
func AppendFields(dst []byte, count int, svc, namespace string) []byte {
	dst = append(dst, `{"count":`...)
	dst = strconv.AppendInt(dst, int64(count), 10)
	dst = append(dst, `,"svc":`...)
	dst = appendString(dst, svc)
	dst = append(dst, `,"namespace":`...)
	dst = appendString(dst, namespace)
	return append(dst, '}')
}

// AppendBatchJSON appends the JSON encoding of ms, an array of messages, to
// dst and returns the extended buffer. The bytes appended are exactly those
// of json.Marshal(ms) for every ms: that includes a nil slice, which encodes
// as null, while an empty non-nil slice encodes as []. Neither is a useful
// batch (Decode refuses both), so senders should not send an empty batch.
// Nothing is allocated when dst has room.
func AppendBatchJSON(dst []byte, ms []RequestCount) []byte {
	if ms == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i := range ms {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendJSON(dst, ms[i])
	}
	return append(dst, ']')
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string exactly as encoding/json's
// Marshal does (with its default HTML escaping): '"' and '\\' get a
// backslash; \b \f \n \r \t get their short escapes; other control
// characters and '<', '>', '&' become \u00XX; U+2028 and U+2029 become
// \u2028 and \u2029 (they break JSONP); each byte of invalid UTF-8 becomes
// \ufffd. Everything else, DEL and a literal U+FFFD included, is copied.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0 // s[start:i] is pending, needing no escape
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if !asciiNeedsEscape(b) {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// asciiNeedsEscape reports whether encoding/json escapes the ASCII byte b
// when HTML escaping is on (json.Marshal's default).
func asciiNeedsEscape(b byte) bool {
	return b < 0x20 || b == '"' || b == '\\' || b == '<' || b == '>' || b == '&'
}
