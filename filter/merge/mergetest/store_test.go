package mergetest

import (
	"errors"
	"testing"

	"github.com/reqcount/reqcount/filter/merge"
)

// TestEnvoyCASRules checks the store against Envoy's SharedData::set rules,
// one sequence of operations per rule.
func TestEnvoyCASRules(t *testing.T) {
	type op struct {
		set     bool
		value   string
		cas     uint32 // for a set; 0xffff: the token the last get returned
		wantErr error
		// for a get
		want    string
		wantOK  bool
		wantCas uint32
	}
	const lastCas = 0xffff
	tests := []struct {
		name string
		ops  []op
	}{
		{"a missing key reads as missing", []op{{want: "", wantOK: false}}},
		{"CAS 0 creates, with the first token", []op{
			{set: true, value: "a"}, {want: "a", wantOK: true, wantCas: 1}}},
		{"CAS 0 is unconditional", []op{
			{set: true, value: "a"}, {set: true, value: "b"}, {want: "b", wantOK: true, wantCas: 2}}},
		{"a non-zero CAS on a missing key succeeds", []op{
			{set: true, value: "a", cas: 77}, {want: "a", wantOK: true, wantCas: 1}}},
		{"the current token succeeds", []op{
			{set: true, value: "a"}, {want: "a", wantOK: true, wantCas: 1},
			{set: true, value: "b", cas: lastCas}, {want: "b", wantOK: true, wantCas: 2}}},
		{"a stale token fails and leaves the value", []op{
			{set: true, value: "a"}, {set: true, value: "b"},
			{set: true, value: "c", cas: 1, wantErr: merge.ErrCasMismatch}, {want: "b", wantOK: true, wantCas: 2}}},
		{"a token no value carries is a create-if-absent (merge.Create)", []op{
			{set: true, value: "a", cas: ^uint32(0)}, {want: "a", wantOK: true, wantCas: 1},
			{set: true, value: "b", cas: ^uint32(0), wantErr: merge.ErrCasMismatch}, {want: "a", wantOK: true, wantCas: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			var got uint32
			for i, o := range tt.ops {
				if o.set {
					cas := o.cas
					if cas == lastCas {
						cas = got
					}
					if err := s.Set("k", []byte(o.value), cas); !errors.Is(err, o.wantErr) {
						t.Fatalf("op %d: Set(%q, cas %d) = %v, want %v", i, o.value, cas, err, o.wantErr)
					}
					continue
				}
				v, cas, ok, err := s.Get("k")
				if err != nil || ok != o.wantOK || string(v) != o.want || (ok && cas != o.wantCas) {
					t.Fatalf("op %d: Get = %q, %d, %v, %v; want %q, %d, %v", i, v, cas, ok, err, o.want, o.wantCas, o.wantOK)
				}
				got = cas
			}
		})
	}
}

// TestTokensSkipZero: the token counter wraps past 0, which no value
// carries (CAS 0 means unconditional).
func TestTokensSkipZero(t *testing.T) {
	s := New()
	s.nextCas = ^uint32(0)
	if err := s.Set("a", nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("b", nil, 0); err != nil {
		t.Fatal(err)
	}
	_, ca, _, _ := s.Get("a")
	_, cb, _, _ := s.Get("b")
	if ca != ^uint32(0) || cb != 1 {
		t.Fatalf("tokens %d, %d; want %d, 1", ca, cb, ^uint32(0))
	}
}

// TestTwoCreatorsBothWin is the race FACTS.md §2 warns about: two workers
// that both read "missing" and both write succeed, the later replacing the
// earlier.
func TestTwoCreatorsBothWin(t *testing.T) {
	s := New()
	_, cas1, ok1, _ := s.Get("k")
	_, cas2, ok2, _ := s.Get("k")
	if ok1 || ok2 {
		t.Fatal("key exists")
	}
	if err := s.Set("k", []byte("first"), cas1); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("k", []byte("second"), cas2); err != nil {
		t.Fatalf("the second create failed: %v (Envoy lets it replace the first)", err)
	}
	if v, _, _, _ := s.Get("k"); string(v) != "second" {
		t.Fatalf("value %q, want the later write", v)
	}
}
