package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// intWant is how a count of the wrong JSON type is described on this platform.
var intWant = "want a " + strconv.Itoa(strconv.IntSize) + "-bit integer, got "

const notLabel = " is not a DNS-1123 label (lower-case alphanumerics and '-', at most 63 characters)"

func TestDecode(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	label64 := strings.Repeat("a", 64)
	cases := []struct {
		name string
		body string
		want []RequestCount
		// wantErr is the exact error text, when an error is expected.
		wantErr string
		// wantField, if set, is the *FieldError the error must be.
		wantField *FieldError
		// wantSyntax says the error must wrap a *json.SyntaxError.
		wantSyntax bool
	}{
		// Accepted bodies.
		{name: "single object", body: `{"count":3,"svc":"checkout","namespace":"shop"}`,
			want: []RequestCount{{Count: 3, Svc: "checkout", Namespace: "shop"}}},
		{name: "single object with surrounding whitespace", body: " \t\r\n{ \"count\" : 1 , \"svc\" : \"a\" , \"namespace\" : \"b\" }\n\t ",
			want: []RequestCount{{Count: 1, Svc: "a", Namespace: "b"}}},
		{name: "fields in another order", body: `{"namespace":"b","svc":"a","count":2}`,
			want: []RequestCount{{Count: 2, Svc: "a", Namespace: "b"}}},
		{name: "array of two", body: `[{"count":1,"svc":"a","namespace":"b"},{"count":2,"svc":"c","namespace":"d"}]`,
			want: []RequestCount{{Count: 1, Svc: "a", Namespace: "b"}, {Count: 2, Svc: "c", Namespace: "d"}}},
		{name: "array with whitespace", body: "\n[ {\"count\":1,\"svc\":\"a\",\"namespace\":\"b\"} ,\n {\"count\":5,\"svc\":\"a\",\"namespace\":\"b\"} ]\n",
			want: []RequestCount{{Count: 1, Svc: "a", Namespace: "b"}, {Count: 5, Svc: "a", Namespace: "b"}}},
		{name: "unknown fields are ignored like the operator does", body: `{"count":1,"svc":"a","namespace":"b","window":"1s","extra":{"x":[1]}}`,
			want: []RequestCount{{Count: 1, Svc: "a", Namespace: "b"}}},
		{name: "field names match case-insensitively like the operator", body: `{"Count":1,"SVC":"a","NameSpace":"b"}`,
			want: []RequestCount{{Count: 1, Svc: "a", Namespace: "b"}}},
		{name: "repeated field keeps the last value", body: `{"count":1,"count":9,"svc":"a","namespace":"b"}`,
			want: []RequestCount{{Count: 9, Svc: "a", Namespace: "b"}}},
		{name: "largest count", body: `{"count":9223372036854775807,"svc":"a","namespace":"b"}`,
			want: []RequestCount{{Count: int(^uint(0) >> 1), Svc: "a", Namespace: "b"}}},
		{name: "63-character labels", body: `{"count":1,"svc":"` + label63 + `","namespace":"` + label63 + `"}`,
			want: []RequestCount{{Count: 1, Svc: label63, Namespace: label63}}},
		{name: "labels with digits and inner dashes", body: `{"count":1,"svc":"0-a--b-9","namespace":"1"}`,
			want: []RequestCount{{Count: 1, Svc: "0-a--b-9", Namespace: "1"}}},
		{name: "escaped characters that decode to a label", body: `{"count":1,"svc":"\u0061b","namespace":"b"}`,
			want: []RequestCount{{Count: 1, Svc: "ab", Namespace: "b"}}},

		// Not one well-formed value.
		{name: "empty body", body: ``, wantErr: "messages: empty body, want a JSON object or array"},
		{name: "whitespace only", body: " \n\t", wantErr: "messages: empty body, want a JSON object or array"},
		{name: "trailing garbage after object", body: `{"count":1,"svc":"a","namespace":"b"}x`, wantSyntax: true,
			wantErr: "messages: malformed JSON: invalid character 'x' after top-level value"},
		{name: "second object after the first", body: `{"count":1,"svc":"a","namespace":"b"}{"count":1,"svc":"c","namespace":"d"}`, wantSyntax: true,
			wantErr: "messages: malformed JSON: invalid character '{' after top-level value"},
		{name: "trailing garbage after array", body: `[{"count":1,"svc":"a","namespace":"b"}],`, wantSyntax: true,
			wantErr: "messages: malformed JSON: invalid character ',' after top-level value"},
		{name: "truncated object", body: `{"count":1,"svc":"a"`, wantSyntax: true,
			wantErr: "messages: malformed JSON: unexpected end of JSON input"},
		{name: "truncated array", body: `[{"count":1,"svc":"a","namespace":"b"}`, wantSyntax: true,
			wantErr: "messages: malformed JSON: unexpected end of JSON input"},
		{name: "not JSON", body: `count=1`, wantSyntax: true,
			wantErr: "messages: malformed JSON: invalid character 'c' looking for beginning of value"},
		{name: "single quotes", body: `{'count':1}`, wantSyntax: true,
			wantErr: "messages: malformed JSON: invalid character '\\'' looking for beginning of object key string"},

		// Well-formed, wrong shape.
		{name: "null", body: ` null `, wantErr: "messages: body is null, want a JSON object or array"},
		{name: "string", body: `"checkout"`, wantErr: "messages: body is string, want a JSON object or array"},
		{name: "number", body: `1`, wantErr: "messages: body is number, want a JSON object or array"},
		{name: "bool", body: `true`, wantErr: "messages: body is bool, want a JSON object or array"},
		{name: "empty array", body: ` [ ] `, wantErr: "messages: no messages"},
		{name: "null element", body: `[null]`,
			wantField: &FieldError{Index: 0, Problem: "want an object, got null"},
			wantErr:   "messages: [0]: want an object, got null"},
		{name: "number element after a good one", body: `[{"count":1,"svc":"a","namespace":"b"}, 1]`,
			wantField: &FieldError{Index: 1, Problem: "want an object, got number"}},
		{name: "nested array", body: `[[{"count":1,"svc":"a","namespace":"b"}]]`,
			wantField: &FieldError{Index: 0, Problem: "want an object, got array"}},

		// Fields of the wrong JSON type.
		{name: "count as string", body: `{"count":"1","svc":"a","namespace":"b"}`,
			wantField: &FieldError{Index: -1, Field: "count", Problem: intWant + "string"},
			wantErr:   "messages: count: " + intWant + "string"},
		{name: "count as fraction", body: `{"count":1.5,"svc":"a","namespace":"b"}`,
			wantField: &FieldError{Index: -1, Field: "count", Problem: intWant + "number 1.5"}},
		{name: "count as exponent", body: `{"count":1e3,"svc":"a","namespace":"b"}`,
			wantField: &FieldError{Index: -1, Field: "count", Problem: intWant + "number 1e3"}},
		{name: "count overflows int", body: `[{"count":1,"svc":"a","namespace":"b"},{"count":99999999999999999999,"svc":"a","namespace":"b"}]`,
			wantField: &FieldError{Index: 1, Field: "count", Problem: intWant + "number 99999999999999999999"},
			wantErr:   "messages: [1].count: " + intWant + "number 99999999999999999999"},
		{name: "count as bool", body: `{"count":true,"svc":"a","namespace":"b"}`,
			wantField: &FieldError{Index: -1, Field: "count", Problem: intWant + "bool"}},
		{name: "count matched case-insensitively is still named count", body: `{"COUNT":"x","svc":"a","namespace":"b"}`,
			wantField: &FieldError{Index: -1, Field: "count", Problem: intWant + "string"}},
		{name: "svc as number", body: `{"count":1,"svc":5,"namespace":"b"}`,
			wantField: &FieldError{Index: -1, Field: "svc", Problem: "want a string, got number"}},
		{name: "namespace as object", body: `[{"count":1,"svc":"a","namespace":{}}]`,
			wantField: &FieldError{Index: 0, Field: "namespace", Problem: "want a string, got object"}},

		// Validation.
		{name: "count missing", body: `{"svc":"a","namespace":"b"}`,
			wantField: &FieldError{Index: -1, Field: "count", Problem: "0 is less than 1"},
			wantErr:   "messages: count: 0 is less than 1"},
		{name: "count null", body: `{"count":null,"svc":"a","namespace":"b"}`,
			wantField: &FieldError{Index: -1, Field: "count", Problem: "0 is less than 1"}},
		{name: "count zero", body: `{"count":0,"svc":"a","namespace":"b"}`,
			wantField: &FieldError{Index: -1, Field: "count", Problem: "0 is less than 1"}},
		{name: "count negative", body: `[{"count":-3,"svc":"a","namespace":"b"}]`,
			wantField: &FieldError{Index: 0, Field: "count", Problem: "-3 is less than 1"}},
		{name: "svc missing", body: `{"count":1,"namespace":"b"}`,
			wantField: &FieldError{Index: -1, Field: "svc", Problem: "is empty, want a DNS-1123 label"},
			wantErr:   "messages: svc: is empty, want a DNS-1123 label"},
		{name: "svc not a label, third of an array", body: `[{"count":1,"svc":"a","namespace":"b"},{"count":1,"svc":"a","namespace":"b"},{"count":1,"svc":"Bad_Name","namespace":"b"}]`,
			wantField: &FieldError{Index: 2, Field: "svc", Problem: `"Bad_Name"` + notLabel},
			wantErr:   `messages: [2].svc: "Bad_Name" is not a DNS-1123 label (lower-case alphanumerics and '-', at most 63 characters)`},
		{name: "svc 64 characters", body: `{"count":1,"svc":"` + label64 + `","namespace":"b"}`,
			wantField: &FieldError{Index: -1, Field: "svc", Problem: strconv.Quote(label64) + notLabel}},
		{name: "svc is a host name", body: `{"count":1,"svc":"a.b.svc.cluster.local","namespace":"b"}`,
			wantField: &FieldError{Index: -1, Field: "svc", Problem: `"a.b.svc.cluster.local"` + notLabel}},
		{name: "svc starts with dash", body: `{"count":1,"svc":"-a","namespace":"b"}`,
			wantField: &FieldError{Index: -1, Field: "svc", Problem: `"-a"` + notLabel}},
		{name: "svc invalid UTF-8 becomes U+FFFD", body: "{\"count\":1,\"svc\":\"a\xffb\",\"namespace\":\"b\"}",
			wantField: &FieldError{Index: -1, Field: "svc", Problem: "\"a\ufffdb\"" + notLabel}},
		{name: "namespace missing", body: `{"count":1,"svc":"a"}`,
			wantField: &FieldError{Index: -1, Field: "namespace", Problem: "is empty, want a DNS-1123 label"}},
		{name: "namespace ends with dash", body: `[{"count":1,"svc":"a","namespace":"b-"}]`,
			wantField: &FieldError{Index: 0, Field: "namespace", Problem: `"b-"` + notLabel}},
		{name: "first bad field wins", body: `{"count":0,"svc":"A","namespace":"B"}`,
			wantField: &FieldError{Index: -1, Field: "count", Problem: "0 is less than 1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Decode([]byte(c.body))
			wantOK := c.wantErr == "" && c.wantField == nil && !c.wantSyntax
			if wantOK {
				if err != nil {
					t.Fatalf("Decode(%q) error: %v", c.body, err)
				}
				if !reflect.DeepEqual(got, c.want) {
					t.Fatalf("Decode(%q) = %#v, want %#v", c.body, got, c.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Decode(%q) = %#v, want an error", c.body, got)
			}
			if got != nil {
				t.Errorf("Decode(%q) returned messages %#v with its error", c.body, got)
			}
			if c.wantErr != "" && err.Error() != c.wantErr {
				t.Errorf("Decode(%q) error\n got %s\nwant %s", c.body, err, c.wantErr)
			}
			var fe *FieldError
			isField := errors.As(err, &fe)
			if c.wantField != nil {
				if !isField {
					t.Errorf("Decode(%q) error %v (%T), want a *FieldError", c.body, err, err)
				} else if *fe != *c.wantField {
					t.Errorf("Decode(%q) error = %#v, want %#v", c.body, *fe, *c.wantField)
				}
			} else if isField {
				t.Errorf("Decode(%q) error %#v is a *FieldError, want another kind", c.body, *fe)
			}
			var se *json.SyntaxError
			if isSyntax := errors.As(err, &se); isSyntax != c.wantSyntax {
				t.Errorf("Decode(%q) error %v wraps *json.SyntaxError: %v, want %v", c.body, err, isSyntax, c.wantSyntax)
			}
			if c.name == "empty array" && !errors.Is(err, ErrNoMessages) {
				t.Errorf("Decode(%q) error %v is not ErrNoMessages", c.body, err)
			}
		})
	}
}

func TestIsDNS1123Label(t *testing.T) {
	cases := []struct {
		name string
		s    string
		want bool
	}{
		{"one letter", "a", true},
		{"one digit", "0", true},
		{"letters digits dashes", "my-svc-2", true},
		{"starts with digit", "9lives", true},
		{"double dash inside", "a--b", true},
		{"63 characters", strings.Repeat("z", 63), true},
		{"empty", "", false},
		{"64 characters", strings.Repeat("z", 64), false},
		{"only a dash", "-", false},
		{"leading dash", "-a", false},
		{"trailing dash", "a-", false},
		{"upper case", "Checkout", false},
		{"underscore", "a_b", false},
		{"dot", "a.b", false},
		{"space", "a b", false},
		{"non-ASCII", "café", false},
		{"NUL", "a\x00", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := IsDNS1123Label(c.s); got != c.want {
				t.Errorf("IsDNS1123Label(%q) = %v, want %v", c.s, got, c.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	long := strings.Repeat("x", 1000)
	cases := []struct {
		name string
		m    RequestCount
		want *FieldError // nil: valid
	}{
		{"valid", RequestCount{Count: 1, Svc: "a", Namespace: "b"}, nil},
		{"count zero", RequestCount{Count: 0, Svc: "a", Namespace: "b"}, &FieldError{-1, "count", "0 is less than 1"}},
		{"count negative", RequestCount{Count: -7, Svc: "a", Namespace: "b"}, &FieldError{-1, "count", "-7 is less than 1"}},
		{"svc empty", RequestCount{Count: 1, Svc: "", Namespace: "b"}, &FieldError{-1, "svc", "is empty, want a DNS-1123 label"}},
		{"svc bad", RequestCount{Count: 1, Svc: "Bad_Name", Namespace: "b"}, &FieldError{-1, "svc", `"Bad_Name"` + notLabel}},
		{"namespace bad", RequestCount{Count: 1, Svc: "a", Namespace: "kube.system"}, &FieldError{-1, "namespace", `"kube.system"` + notLabel}},
		{"huge name is quoted short", RequestCount{Count: 1, Svc: long, Namespace: "b"},
			&FieldError{-1, "svc", strconv.Quote(long[:126]) + "... (1000 bytes)" + notLabel}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.m.Validate()
			if c.want == nil {
				if err != nil {
					t.Fatalf("Validate(%#v) = %v, want nil", c.m, err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate(%#v) = %v (%T), want a *FieldError", c.m, err, err)
			}
			if *fe != *c.want {
				t.Errorf("Validate(%#v) = %#v, want %#v", c.m, *fe, *c.want)
			}
		})
	}
}

func TestFieldErrorError(t *testing.T) {
	cases := []struct {
		name string
		err  FieldError
		want string
	}{
		{"array element field", FieldError{2, "svc", "bad"}, "messages: [2].svc: bad"},
		{"single object field", FieldError{-1, "count", "bad"}, "messages: count: bad"},
		{"whole array element", FieldError{0, "", "want an object, got null"}, "messages: [0]: want an object, got null"},
		{"no index, no field", FieldError{-1, "", "bad"}, "messages: bad"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.err.Error(); got != c.want {
				t.Errorf("Error() = %q, want %q", got, c.want)
			}
		})
	}
}

// FuzzDecode feeds arbitrary bodies to Decode. Whatever it accepts must be
// valid, well-formed JSON, and must survive a round trip through the
// encoders unchanged; whatever it refuses must be refused with this
// package's errors, never a panic.
func FuzzDecode(f *testing.F) {
	seeds := []string{
		`{"count":3,"svc":"checkout","namespace":"shop"}`,
		`[{"count":1,"svc":"a","namespace":"b"},{"count":2,"svc":"c","namespace":"d"}]`,
		` [ ] `, `null`, `[null]`, `{}`, `[1]`, `"x"`,
		`{"count":"1","svc":"a","namespace":"b"}`,
		`{"count":99999999999999999999,"svc":"a","namespace":"b"}`,
		`{"count":1,"svc":"Bad_Name","namespace":"b"}`,
		`{"count":1,"svc":"a\u2028","namespace":"<b>"}`,
		"{\"count\":1,\"svc\":\"a\xff\",\"namespace\":\"b\"}",
		`{"count":1,"svc":"a","namespace":"b"}trailing`,
		`{"Count":1,"SVC":"a","namespace":"b","extra":[1,{"x":null}]}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ms, err := Decode(body)
		if err != nil {
			if ms != nil {
				t.Fatalf("Decode(%q) returned messages with error %v", body, err)
			}
			if !strings.HasPrefix(err.Error(), "messages: ") {
				t.Fatalf("Decode(%q) error %q lacks the package prefix", body, err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("Decode(%q) accepted malformed JSON", body)
		}
		if len(ms) == 0 {
			t.Fatalf("Decode(%q) returned no messages and no error", body)
		}
		for i, m := range ms {
			if err := m.Validate(); err != nil {
				t.Fatalf("Decode(%q)[%d] = %#v is invalid: %v", body, i, m, err)
			}
			again, err := Decode(AppendJSON(nil, m))
			if err != nil || len(again) != 1 || again[0] != m {
				t.Fatalf("round trip of %#v through AppendJSON: %#v, %v", m, again, err)
			}
		}
		enc := AppendBatchJSON(nil, ms)
		if want, _ := json.Marshal(ms); !bytes.Equal(enc, want) {
			t.Fatalf("AppendBatchJSON(%#v)\n got %s\nwant %s", ms, enc, want)
		}
		again, err := Decode(enc)
		if err != nil || !reflect.DeepEqual(again, ms) {
			t.Fatalf("round trip of %#v through AppendBatchJSON: %#v, %v", ms, again, err)
		}
	})
}
