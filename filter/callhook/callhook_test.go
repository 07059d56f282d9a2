package callhook

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// The pairs encoding, byte by byte: what the SDK's internal.SerializeMap
// writes for the same headers (v0.24.0, serde.go), and what cpp-host's
// PairsUtil::toPairs reads.
func TestAppendPairs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers [][2]string
		want    []byte
	}{
		{"none", nil, []byte{0, 0, 0, 0}},
		{"one", [][2]string{{":method", "POST"}}, []byte("\x01\x00\x00\x00" +
			"\x07\x00\x00\x00\x04\x00\x00\x00" +
			":method\x00POST\x00")},
		{"empty value", [][2]string{{":path", "/x"}, {"a", ""}}, []byte("\x02\x00\x00\x00" +
			"\x05\x00\x00\x00\x02\x00\x00\x00" + "\x01\x00\x00\x00\x00\x00\x00\x00" +
			":path\x00/x\x00" + "a\x00\x00")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := AppendPairs(nil, tc.headers); !bytes.Equal(got, tc.want) {
				t.Fatalf("AppendPairs = %q, want %q", got, tc.want)
			}
			// Appends: what buf held stays.
			if got := AppendPairs([]byte("ab"), tc.headers); !bytes.Equal(got, append([]byte("ab"), tc.want...)) {
				t.Fatalf("AppendPairs after \"ab\" = %q", got)
			}
			if got := parse(t, AppendPairs(nil, tc.headers)); len(got) != len(tc.headers) {
				t.Fatalf("read back %d pairs, want %d", len(got), len(tc.headers))
			} else {
				for i := range got {
					if got[i] != tc.headers[i] {
						t.Fatalf("pair %d read back as %q, want %q", i, got[i], tc.headers[i])
					}
				}
			}
		})
	}
}

// The call headers of the filter, serialised into a reused buffer, allocate
// nothing once the buffer is large enough.
func TestAppendPairsReused(t *testing.T) {
	hs := [][2]string{{":method", "POST"}, {":path", "/informer/incoming-request"},
		{":authority", "elasti-operator-controller-service:8013"}, {"content-type", "application/json"}}
	buf := AppendPairs(nil, hs)
	if n := testing.AllocsPerRun(100, func() { buf = AppendPairs(buf[:0], hs) }); n != 0 {
		t.Fatalf("%.1f allocations per serialisation into a reused buffer, want 0", n)
	}
}

// parse reads the pairs encoding the way cpp-host's toPairs does: sizes first,
// then the NUL-terminated keys and values.
func parse(t *testing.T, b []byte) [][2]string {
	t.Helper()
	n := int(binary.LittleEndian.Uint32(b))
	sizes, data := b[4:4+8*n], b[4+8*n:]
	var out [][2]string
	for i := range n {
		kl, vl := int(binary.LittleEndian.Uint32(sizes[8*i:])), int(binary.LittleEndian.Uint32(sizes[8*i+4:]))
		if data[kl] != 0 || data[kl+1+vl] != 0 {
			t.Fatalf("pair %d: no NUL after the key or the value", i)
		}
		out = append(out, [2]string{string(data[:kl]), string(data[kl+1 : kl+1+vl])})
		data = data[kl+1+vl+1:]
	}
	if len(data) != 0 {
		t.Fatalf("%d bytes after the last pair", len(data))
	}
	return out
}
