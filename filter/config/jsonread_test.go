package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestReaderStrings checks string decoding against encoding/json.
func TestReaderStrings(t *testing.T) {
	for _, tc := range []struct{ name, literal, want string }{
		{"plain", `"web"`, "web"},
		{"empty", `""`, ""},
		{"one-letter escapes", `"\"\\\/\b\f\n\r\t"`, "\"\\/\b\f\n\r\t"},
		{"unicode escape", `"\u0041\u00e9\u20AC"`, "Aé€"},
		{"escaped NUL", `"\u0000"`, "\x00"},
		{"surrogate pair", `"\ud83d\ude00"`, "😀"},
		{"lone high surrogate", `"\ud800"`, "\ufffd"},
		{"lone high surrogate at the end of a pair", `"\ud800\ud83d\ude00"`, "\ufffd😀"},
		{"lone low surrogate", `"\udc00x"`, "\ufffdx"},
		{"high then not an escape", `"\ud800\\u"`, "\ufffd\\u"},
		{"valid UTF-8", `"é😀"`, "é😀"},
		{"encoded U+FFFD", "\"\xef\xbf\xbd\"", "\ufffd"},
		{"invalid byte", "\"a\xffb\"", "a\ufffdb"},
		{"truncated sequence", "\"\xe2\x82\"", "\ufffd\ufffd"},
		{"surrogate in UTF-8", "\"\xed\xa0\x80\"", "\ufffd\ufffd\ufffd"},
		{"invalid UTF-8 and an escape", "\"\xff\\n\"", "\ufffd\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := reader{data: []byte(tc.literal)}
			got, err := r.str(true)
			if err != nil || got != tc.want || r.pos != len(tc.literal) {
				t.Fatalf("str(%s) = %q, %v at %d; want %q", tc.literal, got, err, r.pos, tc.want)
			}
			var ref string
			if err := json.Unmarshal([]byte(tc.literal), &ref); err != nil || ref != got {
				t.Fatalf("str(%s) = %q; encoding/json: %q, %v", tc.literal, got, ref, err)
			}
		})
	}
}

// TestReaderSkip checks skip on values of each kind and on bad ones: the kind, where
// it stops, and the error.
func TestReaderSkip(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		kind      kind
		end       int // r.pos after skip
		err       string
	}{
		{"null", `null,`, kindNull, 4, ""},
		{"false", `false`, kindBool, 5, ""},
		{"number", `-12.5e+3]`, kindNumber, 8, ""},
		{"string", `"a\"b" `, kindString, 6, ""},
		{"empty object", `{ }x`, kindObject, 3, ""},
		{"nested", `{"a":[1,{"b":[]},"c"],"d":{}} 1`, kindObject, 29, ""},
		{"deepest", strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth), kindArray, 2 * maxDepth, ""},
		{"too deep", strings.Repeat("[", maxDepth+1), kindArray, 0, "invalid character '[' exceeded max depth"},
		{"unclosed", `[1,{"a":2}`, kindArray, 0, errEOF.Error()},
		{"bad element", `[1 2]`, kindArray, 0, "invalid character '2' after array element"},
		{"bad member", `{"a" 1}`, kindObject, 0, "invalid character '1' after object key"},
		{"not a value", `]`, 0, 0, "invalid character ']' looking for beginning of value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := reader{data: []byte(tc.doc)}
			k, err := r.skip()
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("skip(%.40s): %v, want error %q", tc.doc, err, tc.err)
				}
				return
			}
			if err != nil || k != tc.kind || r.pos != tc.end || len(r.open) != 0 {
				t.Fatalf("skip(%.40s) = %v, %v at %d (open %d); want %v at %d", tc.doc, k, err, r.pos, len(r.open), tc.kind, tc.end)
			}
		})
	}
}

// TestStringsAreCopies checks that no string of a Config aliases the document:
// the host reuses that memory after the callback.
func TestStringsAreCopies(t *testing.T) {
	doc := []byte(`{"cluster":"coll","authority":"op:80","path":"/in\u0066o","mode":"batch","flush_interval":"1s",
		"key_source":"static","service":"web","namespace":"shop","default_namespace":"apps","cluster_domain":"corp.example",
		"include":["*.shop"],"ignore_paths":["/h","/m\u0065trics"],"ignore_user_agents":["probe/"]}`)
	c, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	before := fmt.Sprintf("%#v", c)
	copy(doc, bytes.Repeat([]byte("#"), len(doc)))
	if after := fmt.Sprintf("%#v", c); after != before {
		t.Fatalf("overwriting the document changed the Config:\n%s\nwas\n%s", after, before)
	}
}
