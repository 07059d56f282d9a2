package wasmhost

import (
	"encoding/binary"
	"strings"
)

type header struct{ key, value string }

// headerMap is an ordered multi-map with lowercase keys, like Envoy's
// HeaderMap as the proxy-wasm calls see it.
type headerMap []header

// load replaces the map's contents with src, reusing its storage.
func (m headerMap) load(src [][2]string) headerMap {
	m = m[:0]
	for _, kv := range src {
		m = append(m, header{lowerASCII(kv[0]), kv[1]})
	}
	return m
}

// get returns the first value of key; Envoy lowercases the key it looks up.
func (m headerMap) get(key []byte) (string, bool) {
	for i := range m {
		if equalLower(m[i].key, key) {
			return m[i].value, true
		}
	}
	return "", false
}

// add appends a value (Envoy addCopy).
func (m headerMap) add(key, value string) headerMap {
	return append(m, header{lowerASCII(key), value})
}

// replace sets the first value of key and drops the others, or appends it
// (Envoy setCopy).
func (m headerMap) replace(key, value string) headerMap {
	key = lowerASCII(key)
	out := m[:0]
	found := false
	for _, h := range m {
		if h.key == key {
			if found {
				continue
			}
			found = true
			h.value = value
		}
		out = append(out, h)
	}
	if !found {
		out = append(out, header{key, value})
	}
	return out
}

// remove drops every value of key (Envoy remove).
func (m headerMap) remove(key string) headerMap {
	key = lowerASCII(key)
	out := m[:0]
	for _, h := range m {
		if h.key != key {
			out = append(out, h)
		}
	}
	return out
}

// byteSize is Envoy's HeaderMap::byteSize: the keys' and values' lengths.
func (m headerMap) byteSize() int {
	n := 0
	for _, h := range m {
		n += len(h.key) + len(h.value)
	}
	return n
}

// serializedSize is the length of the ABI's pairs encoding of m.
func (m headerMap) serializedSize() int {
	n := 4 + 8*len(m)
	for _, h := range m {
		n += len(h.key) + 1 + len(h.value) + 1
	}
	return n
}

// appendSerialized appends the ABI's pairs encoding (proxy-wasm-cpp-host
// marshalPairs): u32 count, then u32 key length and u32 value length per
// pair, then each key and value followed by a NUL; little-endian.
func (m headerMap) appendSerialized(buf []byte) []byte {
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(m)))
	for _, h := range m {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(h.key)))
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(h.value)))
	}
	for _, h := range m {
		buf = append(buf, h.key...)
		buf = append(buf, 0)
		buf = append(buf, h.value...)
		buf = append(buf, 0)
	}
	return buf
}

// pairs returns a copy of m as key/value pairs.
func (m headerMap) pairs() [][2]string {
	out := make([][2]string, len(m))
	for i, h := range m {
		out[i] = [2]string{h.key, h.value}
	}
	return out
}

// parsePairs decodes the ABI's pairs encoding. Like proxy-wasm-cpp-host's
// toPairs, a buffer too short for what it announces yields no pairs; ok is
// false then (and for an empty buffer, which cpp-host also reads as none).
func parsePairs(b []byte) (pairs [][2]string, ok bool) {
	if len(b) < 4 {
		return nil, false
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(4)+uint64(n)*8 > uint64(len(b)) {
		return nil, false
	}
	sizes := b[4 : 4+8*int(n)]
	data := b[4+8*int(n):]
	pairs = make([][2]string, n)
	for i := range pairs {
		kl := int(binary.LittleEndian.Uint32(sizes[8*i:]))
		vl := int(binary.LittleEndian.Uint32(sizes[8*i+4:]))
		if kl+1+vl+1 > len(data) || kl < 0 || vl < 0 {
			return nil, false
		}
		pairs[i][0] = string(data[:kl])
		data = data[kl+1:]
		pairs[i][1] = string(data[:vl])
		data = data[vl+1:]
	}
	return pairs, true
}

// lowerASCII lowercases s, without allocating when it already is.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// equalLower reports whether key, lowercased, equals lower.
func equalLower(lower string, key []byte) bool {
	if len(lower) != len(key) {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if lower[i] != c {
			return false
		}
	}
	return true
}
