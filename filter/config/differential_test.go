package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// Parse reads JSON with its own reader (jsonread.go) where it used encoding/json.
// These tests hold it to the old parser, kept as referenceParse: for any input
// both accept or both refuse, with the same message, and what both accept is the
// same Config.

// deep returns n opening brackets, what a value nested n deep starts with.
func deep(open string, n int) string { return strings.Repeat(open, n) }

// differentialCases are documents on the edges of the JSON grammar and of the
// old parser's behaviour.
var differentialCases = []struct{ name, doc string }{
	{"smallest", `{"cluster":"c"}`},
	{"every field", `{"cluster":"c","authority":"a:1","path":"/p","mode":"batch","flush_interval":"250ms","timeout":"1s",
		"key_source":"static","service":"web","namespace":"shop","service_header":"x-s","namespace_header":"x-n",
		"default_namespace":"d","cluster_domain":"Corp.Example.","max_keys":5,"wake_after":"0s","include":["*.shop"],
		"exclude":["db.*"],"ignore_paths":["/healthz"],"ignore_user_agents":["kube-probe/"],"memo_size":0,"aggregate":"worker"}`},
	{"whitespace everywhere", " \t\r\n{ \"cluster\" : \"c\" , \"include\" : [ \"a.b\" , \"*.c\" ] }\n "},

	// The document as a whole.
	{"empty", ``},
	{"JSON whitespace", " \t\r\n"},
	{"vertical tab", "\v"},
	{"vertical tab before", "\v{\"cluster\":\"c\"}"},
	{"no-break space before", "\u00a0{\"cluster\":\"c\"}"},
	{"byte order mark", "\ufeff{\"cluster\":\"c\"}"},
	{"null", `null`},
	{"null in spaces", " null "},
	{"null then data", `nullx`},
	{"true", `true`},
	{"false then data", `falsex`},
	{"number", `42`},
	{"number then data", `42x`},
	{"negative zero", `-0`},
	{"bad number", `-x`},
	{"string", `"c"`},
	{"string then data", `"c"x`},
	{"array", `[{"cluster":"c"}]`},
	{"array then bracket", `[1]]`},
	{"empty object", `{}`},
	{"empty object with space", `{ }`},
	{"empty array", `[ ]`},
	{"not JSON", `cluster: c`},
	{"single quotes", `{'cluster':'c'}`},
	{"trailing object", `{"cluster":"c"} {}`},
	{"trailing garbage", `{"cluster":"c"}x`},
	{"trailing comma after", `{"cluster":"c"},`},
	{"trailing newline", "{\"cluster\":\"c\"}\n"},
	{"trailing NUL", "{\"cluster\":\"c\"}\x00"},
	{"at the size limit", `{"cluster":"c"}` + strings.Repeat(" ", MaxConfigSize-15)},
	{"over the size limit", `{"cluster":"c"}` + strings.Repeat(" ", MaxConfigSize-14)},

	// Object syntax.
	{"truncated", `{"cluster":"c"`},
	{"truncated after comma", `{"cluster":"c",`},
	{"truncated in a key", `{"clus`},
	{"truncated after a key", `{"cluster"`},
	{"truncated after a colon", `{"cluster":`},
	{"trailing comma", `{"cluster":"c",}`},
	{"leading comma", `{,"cluster":"c"}`},
	{"no colon", `{"cluster" "c"}`},
	{"no comma", `{"cluster":"c" "mode":"batch"}`},
	{"number then key", `{"max_keys":1"cluster":"c"}`},
	{"closed by a bracket", `{"cluster":"c"]`},
	{"object closed by a bracket", `{]`},
	{"array closed by a brace", `[}`},
	{"array trailing comma", `[1,]`},
	{"array leading comma", `[,1]`},
	{"key not a string", `{1:2}`},
	{"bare key", `{cluster:"c"}`},

	// Field names.
	{"unknown field", `{"cluster":"c","clusterr":"x"}`},
	{"unknown field truncated after", `{"bogus"`},
	{"unknown field then garbage", `{"bogus"x`},
	{"unknown field after a syntax error", `{"cluster":x,"bogus":1}`},
	{"unknown field after a type error", `{"cluster":1,"bogus":1}`},
	{"unknown field after data", `{"cluster":"c","bogus"`},
	{"upper case", `{"CLUSTER":"c"}`},
	{"a case variant after a valid field", `{"cluster":"c","Mode":"batch"}`},
	{"long s folds to s", "{\"clu\u017fter\":\"c\"}"},
	{"escaped name", `{"\u0063luster":"c"}`},
	{"repeated through an escape", `{"cluster":"c","clust\u0065r":"d"}`},
	{"repeated after a type error", `{"cluster":1,"cluster":2}`},
	{"repeated null", `{"mode":null,"mode":null,"cluster":"c"}`},
	{"name with invalid UTF-8", "{\"clus\xffter\":\"c\"}"},
	{"empty name", `{"":1}`},

	// Strings.
	{"one-letter escapes", `{"cluster":"c","ignore_user_agents":["a\"b\\c\/d\be\ff\ng\rh\ti"]}`},
	{"escape in a value", `{"cluster":"\u0063"}`},
	{"surrogate pair", `{"cluster":"\ud83d\ude00"}`},
	{"surrogate pair upper case", `{"cluster":"\uD83D\uDE00"}`},
	{"lone high surrogate", `{"cluster":"\ud800"}`},
	{"lone high surrogate then text", `{"cluster":"\ud800x"}`},
	{"lone low surrogate", `{"cluster":"\udc00"}`},
	{"high high low", `{"cluster":"\ud800\ud800\udc00"}`},
	{"high then other escape", `{"cluster":"\ud800\u0041"}`},
	{"high then one-letter escape", `{"cluster":"\ud800\n"}`},
	{"low high", `{"cluster":"\udc00\ud800"}`},
	{"escaped NUL", `{"cluster":"c\u0000"}`},
	{"invalid UTF-8", "{\"cluster\":\"c\xff\"}"},
	{"invalid UTF-8 in a list", "{\"cluster\":\"c\",\"ignore_user_agents\":[\"a\xc3\"]}"},
	{"truncated UTF-8", "{\"cluster\":\"\xe2\x82\"}"},
	{"overlong UTF-8", "{\"cluster\":\"\xc0\xaf\"}"},
	{"surrogate in UTF-8", "{\"cluster\":\"\xed\xa0\x80\"}"},
	{"encoded U+FFFD", "{\"cluster\":\"\xef\xbf\xbd\"}"},
	{"valid UTF-8", `{"cluster":"c","ignore_user_agents":["é"]}`},
	{"control character", "{\"cluster\":\"c\x01\"}"},
	{"raw newline", "{\"cluster\":\"c\n\"}"},
	{"DEL unescaped", "{\"cluster\":\"c\x7f\"}"},
	{"bad escape", `{"cluster":"\x"}`},
	{"escaped single quote", `{"cluster":"\'"}`},
	{"short unicode escape", `{"cluster":"\u12"}`},
	{"bad hex digit", `{"cluster":"\u12G4"}`},
	{"truncated escape", `{"cluster":"\`},
	{"truncated unicode escape", `{"cluster":"\u12`},
	{"unterminated string", `{"cluster":"c`},

	// Numbers and literals.
	{"max_keys -0", `{"cluster":"c","max_keys":-0}`},
	{"max_keys 1e2", `{"cluster":"c","max_keys":1e2}`},
	{"max_keys 1E+2", `{"cluster":"c","max_keys":1E+2}`},
	{"max_keys 1.0", `{"cluster":"c","max_keys":1.0}`},
	{"max_keys 0.5", `{"cluster":"c","max_keys":0.5}`},
	{"max_keys 1e-2", `{"cluster":"c","max_keys":1e-2}`},
	{"max_keys MaxInt64+1", `{"cluster":"c","max_keys":9223372036854775808}`},
	{"max_keys MaxInt64", `{"cluster":"c","max_keys":9223372036854775807}`},
	{"max_keys MinInt64", `{"cluster":"c","max_keys":-9223372036854775808}`},
	{"memo_size MinInt64-1", `{"cluster":"c","memo_size":-9223372036854775809}`},
	{"memo_size 1e999", `{"cluster":"c","memo_size":1e999}`},
	{"memo_size 7", `{"cluster":"c","memo_size":7}`},
	{"leading zero", `{"cluster":"c","max_keys":01}`},
	{"negative leading zero", `{"cluster":"c","max_keys":-01}`},
	{"dot without digits", `{"cluster":"c","max_keys":1.}`},
	{"dot then exponent", `{"cluster":"c","max_keys":1.e5}`},
	{"leading dot", `{"cluster":"c","max_keys":.5}`},
	{"plus sign", `{"cluster":"c","max_keys":+1}`},
	{"bare minus", `{"cluster":"c","max_keys":-}`},
	{"exponent without digits", `{"cluster":"c","max_keys":1e}`},
	{"exponent sign without digits", `{"cluster":"c","max_keys":1e+}`},
	{"hexadecimal", `{"cluster":"c","max_keys":0x10}`},
	{"underscore", `{"cluster":"c","max_keys":1_000}`},
	{"NaN", `{"cluster":"c","max_keys":NaN}`},
	{"truncated number", `{"cluster":"c","max_keys":-`},
	{"truncated exponent", `{"cluster":"c","max_keys":1e`},
	{"number at the end", `{"cluster":"c","max_keys":1`},
	{"number for a string", `{"cluster":1.5e3}`},
	{"truncated true", `{"cluster":tru`},
	{"bad true", `{"cluster":trux}`},
	{"bad false", `{"cluster":fals}`},
	{"bad null", `{"cluster":nul}`},
	{"capital True", `{"cluster":True}`},

	// Nulls and kinds.
	{"null field", `{"cluster":"c","mode":null}`},
	{"null cluster", `{"cluster":null}`},
	{"null number field", `{"cluster":"c","max_keys":null}`},
	{"null list", `{"cluster":"c","include":null}`},
	{"null in a list", `{"cluster":"c","include":[null]}`},
	{"null in an ignore list", `{"cluster":"c","ignore_paths":["/a",null]}`},
	{"empty lists", `{"cluster":"c","include":[],"exclude":[],"ignore_paths":[],"ignore_user_agents":[]}`},
	{"string for a list", `{"cluster":"c","include":"a.b"}`},
	{"number in a list", `{"cluster":"c","include":["a.b",1]}`},
	{"bool in a list", `{"cluster":"c","exclude":[true]}`},
	{"list in a list", `{"cluster":"c","include":[["a.b"]]}`},
	{"object in a list", `{"cluster":"c","include":[{"a":"b"}]}`},
	{"type error then syntax error in a list", `{"cluster":"c","include":[1,}`},
	{"object for a string", `{"cluster":{"a":[1,{"b":null}]}}`},
	{"array for a string", `{"cluster":["c"]}`},
	{"bool for a number", `{"cluster":"c","max_keys":true}`},
	{"string for a number", `{"cluster":"c","max_keys":"5"}`},
	{"object for a number", `{"cluster":"c","memo_size":{}}`},
	{"two type errors", `{"cluster":[],"mode":{}}`},
	{"type error then syntax error", `{"cluster":1,"mode":}`},
	{"type error then trailing data", `{"cluster":1} x`},

	// Nesting: encoding/json refuses more than 10000 levels.
	{"array 10000 deep", deep("[", 10000) + strings.Repeat("]", 10000)},
	{"array 10001 deep", deep("[", 10001) + strings.Repeat("]", 10001)},
	{"object 10001 deep", `{"cluster":` + strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10001)},
	{"object 10001 deep then unknown field", `{"cluster":` + strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000) + `,"bogus":1}`},
	{"field 10000 deep", `{"cluster":` + deep("[", 9999) + strings.Repeat("]", 9999) + `}`},
	{"field 10001 deep", `{"cluster":` + deep("[", 10000) + strings.Repeat("]", 10000) + `}`},
	{"field 10001 deep then unknown field", `{"cluster":` + deep("[", 10000) + strings.Repeat("]", 10000) + `,"bogus":1}`},
	{"field 10002 deep then unknown field", `{"cluster":` + deep("[", 10001) + strings.Repeat("]", 10001) + `,"bogus":1}`},
	{"field 10001 deep then syntax error", `{"cluster":` + deep("[", 10000) + strings.Repeat("]", 10000) + `,x}`},
	{"field 10001 deep truncated", `{"cluster":` + deep("[", 10000)},
	{"list 10001 deep", `{"include":` + deep("[", 10000) + strings.Repeat("]", 10000) + `}`},
	{"unclosed arrays", deep("[", 20000)},
}

// TestMatchesReference checks Parse against the old parser on differentialCases.
func TestMatchesReference(t *testing.T) {
	for _, tc := range differentialCases {
		t.Run(tc.name, func(t *testing.T) { compareWithReference(t, []byte(tc.doc)) })
	}
}

// FuzzParseMatchesEncodingJSON checks Parse against the old parser, built on
// encoding/json, on arbitrary input. Seeds: differentialCases and FuzzParse's
// corpus (plus testdata/fuzz/FuzzParseMatchesEncodingJSON, where the fuzzer
// writes an input on which they differ).
func FuzzParseMatchesEncodingJSON(f *testing.F) {
	for _, tc := range differentialCases {
		f.Add([]byte(tc.doc))
	}
	for _, seed := range corpus(f, filepath.Join("testdata", "fuzz", "FuzzParse")) {
		f.Add(seed)
	}
	f.Fuzz(compareWithReference)
}

// compareWithReference fails t unless Parse and referenceParse agree on data.
func compareWithReference(t *testing.T, data []byte) {
	in := append([]byte(nil), data...)
	got, err := Parse(data)
	want, wantErr := referenceParse(data)
	if !bytes.Equal(data, in) {
		t.Fatalf("Parse changed its input")
	}
	switch {
	case err == nil && wantErr == nil:
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Parse(%q) = %+v, encoding/json: %+v", data, got, want)
		}
	case err == nil || wantErr == nil:
		t.Fatalf("Parse(%q): %v, encoding/json: %v", data, err, wantErr)
	case err.Error() != wantErr.Error() || err.(*Error).Field != wantErr.(*Error).Field:
		t.Fatalf("Parse(%q):\n %v\nencoding/json:\n %v", data, err, wantErr)
	case !reflect.DeepEqual(got, Config{}):
		t.Fatalf("Parse(%q) returned %+v with its error", data, got)
	}
}

// corpus reads the inputs of a fuzz target's seed corpus: files of the form
//
//	go test fuzz v1
//	[]byte("...")
func corpus(tb testing.TB, dir string) [][]byte {
	files, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for _, file := range files {
		b, err := os.ReadFile(filepath.Join(dir, file.Name()))
		if err != nil {
			tb.Fatal(err)
		}
		header, value, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		quoted, ok := strings.CutPrefix(value, "[]byte(")
		quoted, ok2 := strings.CutSuffix(quoted, ")")
		s, err := strconv.Unquote(quoted)
		if header != "go test fuzz v1" || !ok || !ok2 || err != nil {
			tb.Fatalf("%s: not a []byte seed of go test fuzz v1", file.Name())
		}
		out = append(out, []byte(s))
	}
	return out
}
