package wasmhost

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestHeaderMapEdits(t *testing.T) {
	base := [][2]string{{":path", "/a"}, {"X-Dup", "1"}, {"x-other", "o"}, {"x-dup", "2"}}
	tests := []struct {
		name string
		edit func(headerMap) headerMap
		want [][2]string
	}{
		{
			name: "load lowercases keys",
			edit: func(m headerMap) headerMap { return m },
			want: [][2]string{{":path", "/a"}, {"x-dup", "1"}, {"x-other", "o"}, {"x-dup", "2"}},
		},
		{
			name: "add appends",
			edit: func(m headerMap) headerMap { return m.add("X-New", "n") },
			want: [][2]string{{":path", "/a"}, {"x-dup", "1"}, {"x-other", "o"}, {"x-dup", "2"}, {"x-new", "n"}},
		},
		{
			name: "replace keeps the first position and drops the rest",
			edit: func(m headerMap) headerMap { return m.replace("X-DUP", "r") },
			want: [][2]string{{":path", "/a"}, {"x-dup", "r"}, {"x-other", "o"}},
		},
		{
			name: "replace of a missing key appends",
			edit: func(m headerMap) headerMap { return m.replace("x-new", "n") },
			want: [][2]string{{":path", "/a"}, {"x-dup", "1"}, {"x-other", "o"}, {"x-dup", "2"}, {"x-new", "n"}},
		},
		{
			name: "remove drops every value",
			edit: func(m headerMap) headerMap { return m.remove("x-dup") },
			want: [][2]string{{":path", "/a"}, {"x-other", "o"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.edit(headerMap(nil).load(base)).pairs()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHeaderMapGet(t *testing.T) {
	m := headerMap(nil).load([][2]string{{"x-dup", "1"}, {"x-dup", "2"}})
	tests := []struct {
		key       string
		want      string
		wantFound bool
	}{
		{key: "x-dup", want: "1", wantFound: true},
		{key: "X-Dup", want: "1", wantFound: true},
		{key: "x-du", wantFound: false},
		{key: "", wantFound: false},
	}
	for _, tt := range tests {
		if got, found := m.get([]byte(tt.key)); got != tt.want || found != tt.wantFound {
			t.Errorf("get(%q) = %q, %v; want %q, %v", tt.key, got, found, tt.want, tt.wantFound)
		}
	}
}

func TestPairsEncoding(t *testing.T) {
	m := headerMap(nil).load([][2]string{{":status", "200"}, {"k", ""}})
	enc := m.appendSerialized(nil)
	want := []byte("\x02\x00\x00\x00" + "\x07\x00\x00\x00\x03\x00\x00\x00" + "\x01\x00\x00\x00\x00\x00\x00\x00" + ":status\x00200\x00k\x00\x00")
	if !bytes.Equal(enc, want) || len(enc) != m.serializedSize() {
		t.Fatalf("encoding = %q (size %d), want %q", enc, m.serializedSize(), want)
	}
	tests := []struct {
		name   string
		in     []byte
		want   [][2]string
		wantOK bool
	}{
		{name: "round trip", in: enc, want: [][2]string{{":status", "200"}, {"k", ""}}, wantOK: true},
		{name: "empty", in: nil, wantOK: false},
		{name: "count beyond the buffer", in: []byte("\x09\x00\x00\x00"), wantOK: false},
		{name: "lengths beyond the buffer", in: enc[:len(enc)-3], wantOK: false},
		{name: "no pairs", in: []byte("\x00\x00\x00\x00"), want: [][2]string{}, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parsePairs(tt.in)
			if ok != tt.wantOK || (ok && !reflect.DeepEqual(got, tt.want)) {
				t.Errorf("parsePairs = %q, %v; want %q, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestLogStore(t *testing.T) {
	var out strings.Builder
	var s logStore
	s.init(2, &out)
	s.add(0, LevelInfo, "one")
	s.add(1, LevelError, "two")
	s.add(1, LevelInfo, "three")
	if got := s.messages(LevelInfo); !reflect.DeepEqual(got, []string{"one"}) {
		t.Errorf("info messages = %q, want [one] (the third line is over the cap)", got)
	}
	if got := s.droppedCount(); got != 1 {
		t.Errorf("dropped = %d, want 1", got)
	}
	want := "[worker 0] info: one\n[worker 1] error: two\n[worker 1] info: three\n"
	if out.String() != want {
		t.Errorf("LogOutput got %q, want %q (every line, kept or not)", out.String(), want)
	}
}
