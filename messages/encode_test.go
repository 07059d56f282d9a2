package messages

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
)

// trickyStrings are names that exercise every escaping rule of encoding/json.
// They are shared by the table tests, the allocation tests and the fuzz seeds.
var trickyStrings = []struct {
	name string
	s    string
}{
	{"empty", ""},
	{"plain label", "checkout"},
	{"quote", `a"b`},
	{"backslash", `a\b`},
	{"slash is not escaped", "a/b"},
	{"short control escapes", "\b\f\n\r\t"},
	{"NUL", "\x00"},
	{"other controls", "\x01\x07\x0b\x0e\x1b\x1f"},
	{"DEL is not escaped", "\x7f"},
	{"HTML characters", "<script>&amp;</script>"},
	{"U+2028 line separator", "a\u2028b"},
	{"U+2029 paragraph separator", "a\u2029b"},
	{"U+2027 and U+202A are not escaped", "\u2027\u202a"},
	{"literal U+FFFD is copied", "\ufffd"},
	{"invalid byte 0xff", "a\xffb"},
	{"lone continuation byte", "\x80"},
	{"truncated 3-byte sequence", "\xe2\x80"},
	{"truncated at end", "ok\xe2"},
	{"overlong encoding of slash", "\xc0\xaf"},
	{"UTF-16 surrogate encoded in UTF-8", "\xed\xa0\x80"},
	{"beyond U+10FFFF", "\xf4\x90\x80\x80"},
	{"multi-byte runes", "日本語-ß-😀"},
	{"everything at once", "\"\\\x00<\u2028\xff>&\n日\x1f"},
	{"long run before escape", strings.Repeat("x", 300) + "\n" + strings.Repeat("y", 300)},
}

// allBytes is every byte value once, in order, as one string: together with
// trickyStrings it covers each ASCII escaping decision and each invalid
// leading byte.
func allBytes() string {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return string(b)
}

// trickyCounts covers the integer formatting edge cases.
var trickyCounts = []int{0, 1, -1, 9, 10, 1234567, -1234567, math.MaxInt32, math.MinInt32, math.MaxInt, math.MinInt}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json.Marshal(%#v): %v", v, err)
	}
	return b
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	type tc struct {
		name string
		m    RequestCount
	}
	var cases []tc
	for _, s := range trickyStrings {
		cases = append(cases,
			tc{"svc " + s.name, RequestCount{Count: 1, Svc: s.s, Namespace: "default"}},
			tc{"namespace " + s.name, RequestCount{Count: 2, Svc: "svc", Namespace: s.s}},
		)
	}
	cases = append(cases, tc{"all 256 bytes in both names", RequestCount{Count: 3, Svc: allBytes(), Namespace: allBytes()}})
	for _, c := range trickyCounts {
		cases = append(cases, tc{"count " + strconv.Itoa(c), RequestCount{Count: c, Svc: "a", Namespace: "b"}})
	}
	cases = append(cases, tc{"zero value", RequestCount{}})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := marshal(t, c.m)
			if got := AppendJSON(nil, c.m); !bytes.Equal(got, want) {
				t.Errorf("AppendJSON(nil, %#v)\n got %s\nwant %s", c.m, got, want)
			}
			if got := AppendFields(nil, c.m.Count, c.m.Svc, c.m.Namespace); !bytes.Equal(got, want) {
				t.Errorf("AppendFields(nil, %#v)\n got %s\nwant %s", c.m, got, want)
			}
			// Appending must keep what dst already holds.
			prefix := []byte("prefix:")
			if got := AppendJSON(prefix, c.m); !bytes.Equal(got, append([]byte("prefix:"), want...)) {
				t.Errorf("AppendJSON(%q, %#v) = %s, want the prefix kept", prefix, c.m, got)
			}
		})
	}
}

// TestAppendJSONGolden pins the exact bytes for a few inputs, so the encoder is
// checked against the contract itself and not only against encoding/json.
func TestAppendJSONGolden(t *testing.T) {
	cases := []struct {
		name string
		m    RequestCount
		want string
	}{
		{"plain", RequestCount{Count: 3, Svc: "checkout", Namespace: "shop"}, `{"count":3,"svc":"checkout","namespace":"shop"}`},
		{"negative count", RequestCount{Count: -42, Svc: "a", Namespace: "b"}, `{"count":-42,"svc":"a","namespace":"b"}`},
		{"short escapes", RequestCount{Count: 1, Svc: "\"\\\b\f\n\r\t", Namespace: "x"}, `{"count":1,"svc":"\"\\\b\f\n\r\t","namespace":"x"}`},
		{"u00XX escapes", RequestCount{Count: 1, Svc: "\x00\x1f<>&", Namespace: "x"}, `{"count":1,"svc":"\u0000\u001f\u003c\u003e\u0026","namespace":"x"}`},
		{"separators and invalid UTF-8", RequestCount{Count: 1, Svc: "\u2028\u2029", Namespace: "\xff\xe2\x80"}, `{"count":1,"svc":"\u2028\u2029","namespace":"\ufffd\ufffd\ufffd"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := string(AppendJSON(nil, c.m)); got != c.want {
				t.Errorf("AppendJSON(nil, %#v)\n got %s\nwant %s", c.m, got, c.want)
			}
		})
	}
}

func TestAppendBatchJSON(t *testing.T) {
	tricky := make([]RequestCount, 0, len(trickyStrings))
	for i, s := range trickyStrings {
		tricky = append(tricky, RequestCount{Count: trickyCounts[i%len(trickyCounts)], Svc: s.s, Namespace: trickyStrings[len(trickyStrings)-1-i].s})
	}
	cases := []struct {
		name string
		ms   []RequestCount
		// want is the expected output when it is worth pinning; otherwise
		// only json.Marshal is compared against.
		want string
	}{
		{"nil slice is null like json.Marshal", nil, `null`},
		{"empty slice is an empty array", []RequestCount{}, `[]`},
		{"one message", []RequestCount{{Count: 1, Svc: "a", Namespace: "b"}}, `[{"count":1,"svc":"a","namespace":"b"}]`},
		{"two messages", []RequestCount{{Count: 1, Svc: "a", Namespace: "b"}, {Count: 2, Svc: "c", Namespace: "d"}},
			`[{"count":1,"svc":"a","namespace":"b"},{"count":2,"svc":"c","namespace":"d"}]`},
		{"tricky messages", tricky, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := AppendBatchJSON(nil, c.ms)
			if want := marshal(t, c.ms); !bytes.Equal(got, want) {
				t.Errorf("AppendBatchJSON differs from json.Marshal\n got %s\nwant %s", got, want)
			}
			if c.want != "" && string(got) != c.want {
				t.Errorf("AppendBatchJSON = %s, want %s", got, c.want)
			}
			if got := AppendBatchJSON([]byte("p"), c.ms); !bytes.HasPrefix(got, []byte("p")) || !bytes.Equal(got[1:], AppendBatchJSON(nil, c.ms)) {
				t.Errorf("AppendBatchJSON with prefix = %s, want the prefix kept", got)
			}
		})
	}
}

// TestEncodersDoNotAllocate checks the promise the flush path relies on: with
// room in dst, encoding allocates nothing, escapes or not.
func TestEncodersDoNotAllocate(t *testing.T) {
	hard := RequestCount{Count: math.MinInt, Svc: "\"\\\x00<\u2028\xff>&\n日\x1f", Namespace: allBytes()}
	plain := RequestCount{Count: 12345, Svc: "checkout", Namespace: "shop"}
	batch := []RequestCount{plain, hard, plain}
	buf := make([]byte, 0, 64<<10)

	cases := []struct {
		name string
		fn   func()
	}{
		{"AppendJSON plain", func() { buf = AppendJSON(buf[:0], plain) }},
		{"AppendJSON escapes", func() { buf = AppendJSON(buf[:0], hard) }},
		{"AppendFields escapes", func() { buf = AppendFields(buf[:0], hard.Count, hard.Svc, hard.Namespace) }},
		{"AppendBatchJSON", func() { buf = AppendBatchJSON(buf[:0], batch) }},
		{"AppendBatchJSON nil", func() { buf = AppendBatchJSON(buf[:0], nil) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if allocs := testing.AllocsPerRun(100, c.fn); allocs != 0 {
				t.Errorf("%v allocations per call, want 0", allocs)
			}
		})
	}
}

// FuzzAppendJSON compares AppendFields, AppendJSON and AppendBatchJSON with
// encoding/json on arbitrary counts and names.
func FuzzAppendJSON(f *testing.F) {
	for i, s := range trickyStrings {
		f.Add(trickyCounts[i%len(trickyCounts)], s.s, trickyStrings[len(trickyStrings)-1-i].s)
	}
	f.Add(7, allBytes(), "ns")
	f.Fuzz(func(t *testing.T, count int, svc, namespace string) {
		m := RequestCount{Count: count, Svc: svc, Namespace: namespace}
		want := marshal(t, m)
		if got := AppendFields([]byte("p"), count, svc, namespace); !bytes.Equal(got[1:], want) || got[0] != 'p' {
			t.Fatalf("AppendFields(%q, %d, %q, %q)\n got %s\nwant p%s", "p", count, svc, namespace, got, want)
		}
		if got := AppendJSON(nil, m); !bytes.Equal(got, want) {
			t.Fatalf("AppendJSON(nil, %#v)\n got %s\nwant %s", m, got, want)
		}
		ms := []RequestCount{m, {Count: -count, Svc: namespace, Namespace: svc}}
		if got, want := AppendBatchJSON(nil, ms), marshal(t, ms); !bytes.Equal(got, want) {
			t.Fatalf("AppendBatchJSON(nil, %#v)\n got %s\nwant %s", ms, got, want)
		}
	})
}

// The benchmark inputs look like what the filter flushes: short labels,
// nothing to escape.
func benchMessages(n int) []RequestCount {
	ms := make([]RequestCount, n)
	for i := range ms {
		ms[i] = RequestCount{Count: i + 1, Svc: "service-" + strconv.Itoa(i), Namespace: "namespace-" + strconv.Itoa(i%50)}
	}
	return ms
}

func BenchmarkAppendJSON(b *testing.B) {
	m := RequestCount{Count: 1234, Svc: "checkout-frontend", Namespace: "production"}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(AppendJSON(nil, m))))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf = AppendJSON(buf[:0], m)
	}
}

func BenchmarkAppendBatchJSON10000(b *testing.B) {
	ms := benchMessages(10000)
	buf := AppendBatchJSON(nil, ms) // sized once, reused: the flush path's pattern
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	b.ResetTimer() // the setup's allocations are not the encoder's
	for i := 0; i < b.N; i++ {
		buf = AppendBatchJSON(buf[:0], ms)
	}
}

// BenchmarkMarshalJSON and BenchmarkMarshalBatchJSON10000 are encoding/json
// doing the same work, for comparison.
func BenchmarkMarshalJSON(b *testing.B) {
	m := RequestCount{Count: 1234, Svc: "checkout-frontend", Namespace: "production"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := json.Marshal(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalBatchJSON10000(b *testing.B) {
	ms := benchMessages(10000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := json.Marshal(ms); err != nil {
			b.Fatal(err)
		}
	}
}
