package config_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/reqcount/reqcount/filter/config"
)

// FuzzParse feeds Parse hostile documents. It must never panic; every refusal is
// a *config.Error whose message names its field (or says the document as a whole
// is at fault); every accepted configuration satisfies the invariants the plugin
// relies on. The seed corpus is in testdata/fuzz/FuzzParse, plus the seeds below.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{"cluster":"c"}`,
		`{"cluster":"c","wake_after":"0s","include":["*.ml"],"exclude":["web.*"],"ignore_paths":["/healthz"],"ignore_user_agents":["kube-probe/"]}`,
		`{"cluster":"c","key_source":"static","service":"web","namespace":"shop","flush_interval":"1009ms"}`,
		`{"cluster":"c","memo_size":0,"max_keys":1048576,"mode":"batch"}`,
		`{"cluster":"c","cluster":"d"}`,
		`[]`, `null`, `{`, `{"Cluster":"c"}`, `{"cluster":"c"} {}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data)
		if err != nil {
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not a *config.Error", err, err)
			}
			if ce.Reason == "" {
				t.Fatalf("refusal without a reason: %#v", ce)
			}
			msg := err.Error()
			if ce.Field != "" && !strings.Contains(msg, fmt.Sprintf("field %q", ce.Field)) {
				t.Fatalf("message %q does not name field %q", msg, ce.Field)
			}
			if ce.Field == "" && !strings.HasPrefix(msg, "configuration: ") {
				t.Fatalf("document-level message %q", msg)
			}
			return
		}
		switch {
		case c.Cluster == "" || c.Authority == "" || !strings.HasPrefix(c.Path, "/"):
			t.Fatalf("accepted without cluster, authority or path: %+v", c)
		case c.FlushInterval < time.Millisecond || c.Timeout < time.Millisecond || c.WakeAfter < 0:
			t.Fatalf("accepted a duration out of range: %+v", c)
		case c.MaxKeys < 1 || c.MaxKeys > config.MaxMaxKeys || c.MemoSize < 0 || c.MemoSize > config.MaxMemoSize:
			t.Fatalf("accepted a bound out of range: %+v", c)
		case c.Slices() < 1 || c.TickPeriod()*time.Duration(c.Slices()) != c.FlushInterval || c.TickPeriod()%time.Millisecond != 0:
			t.Fatalf("flush interval %v splits into %d ticks of %v", c.FlushInterval, c.Slices(), c.TickPeriod())
		case c.KeySource == config.KeySourceStatic && !c.Counts(c.Service, c.Namespace):
			t.Fatalf("accepted a static key that is never counted: %+v", c)
		}
		for _, p := range append(append([]config.Pattern{}, c.Include...), c.Exclude...) {
			if q, ok := config.ParsePattern(p.String()); !ok || q != p {
				t.Fatalf("pattern %q does not parse back", p)
			}
		}
	})
}
