package grafana

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/reqcount/reqcount/e2e/admin"
	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// repoRoot walks up from the working directory to the directory that holds go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// firstDifference returns the first line (from 1) where got and want differ,
// or 0 when they are the same bytes.
func firstDifference(got, want []byte) int {
	if bytes.Equal(got, want) {
		return 0
	}
	g, w := bytes.SplitAfter(got, []byte("\n")), bytes.SplitAfter(want, []byte("\n"))
	for i := range min(len(g), len(w)) {
		if !bytes.Equal(g[i], w[i]) {
			return i + 1
		}
	}
	return min(len(g), len(w)) + 1
}

func TestFirstDifference(t *testing.T) {
	tests := []struct {
		name      string
		got, want string
		line      int
	}{
		{"same", "a\nb\n", "a\nb\n", 0},
		{"second line", "a\nb\n", "a\nc\n", 2},
		{"trailing space", "a \n", "a\n", 1},
		{"missing final newline", "a\nb", "a\nb\n", 2},
		{"one more line", "a\nb\nc\n", "a\nb\n", 3},
		{"empty", "", "a\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := firstDifference([]byte(tt.got), []byte(tt.want)); got != tt.line {
				t.Errorf("firstDifference(%q, %q) = %d, want %d", tt.got, tt.want, got, tt.line)
			}
		})
	}
}

// TestCommittedDashboard: reqcount.json is byte for byte what the generator
// writes, so the committed dashboard cannot drift from its source.
func TestCommittedDashboard(t *testing.T) {
	want, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(repoRoot(t), File))
	if err != nil {
		t.Fatal(err)
	}
	if line := firstDifference(got, want); line != 0 {
		t.Errorf("%s differs from what envoy/grafana generates, from line %d on: run `make dashboard` and commit the result", File, line)
	}
}

// exported is what /stats/prometheus shows of the compiled filter, every
// metric defined: its family names with their types.
func exported(t *testing.T) map[string]string {
	t.Helper()
	path := filepath.Join(repoRoot(t), "build", "filter.wasm")
	bin, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s missing: run `make build` (make test does)", path) // never a skip: the check must not look green without the module
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mod, err := wasmhost.Compile(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	h, err := wasmhost.New(ctx, mod, wasmhost.Config{
		// hold set, so that the hold's metrics are defined too.
		PluginConfig: []byte(`{"cluster":"operator","flush_interval":"1s","hold":["web.shop"]}`),
		Clusters:     map[string]string{"operator": ""},
		Dispatch:     func(_ wasmhost.Callout, reply func(wasmhost.Response)) { reply(wasmhost.Response{Status: 200}) },
		ManualTicks:  true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	// A counted request: its key's per-service counter is defined at the
	// key's tick, within one flush interval (10 ticks of 100ms).
	if _, err := h.Worker(0).Request(ctx, wasmhost.Request{Headers: [][2]string{{":authority", "api.shop"}, {":path", "/"}, {":method", "GET"}}}); err != nil {
		t.Fatal(err)
	}
	for range 12 {
		if err := h.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The tags Istio's bootstrap has with mesh-stats.yaml's extraStatTags.
	tags, err := admin.IstioTags("destination_service_name", "destination_service_namespace")
	if err != nil {
		t.Fatal(err)
	}
	families := map[string]string{}
	for _, f := range admin.MetricFamilies(admin.HostStats(h)(), tags) {
		families[f.GetName()] = strings.ToLower(f.GetType().String())
	}
	if families["reqcount_requests_total"] == "" {
		t.Fatalf("the per-service counter is not among the module's metrics %v", slices.Sorted(maps.Keys(families)))
	}
	return families
}

// selected returns the metric names an expression selects (its vector
// selectors' __name__ equality matchers), or an error if it does not parse or
// selects a series by anything but an exact name.
func selected(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr) // Prometheus's defaults: no experimental functions
	if err != nil {
		return nil, err
	}
	var names []string
	var bad error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName {
				if m.Type != labels.MatchEqual {
					bad = fmt.Errorf("%s: select the filter's metrics by their exact names", vs)
				}
				names = append(names, m.Value)
			}
		}
		return nil
	})
	return names, bad
}

// family returns the family a series name belongs to: a histogram's
// _bucket, _sum and _count series are its family's.
func family(name string, families map[string]string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && families[base] == "histogram" {
			return base
		}
	}
	return name
}

// TestDashboardMetrics: every metric the dashboard queries is one the
// compiled filter exports (so a rename in the filter fails here), and every
// metric the filter exports is on the dashboard.
func TestDashboardMetrics(t *testing.T) {
	js, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	qs, err := Queries(js)
	if err != nil {
		t.Fatal(err)
	}
	families := exported(t)
	onDashboard := map[string]bool{}
	for _, q := range qs {
		names, err := selected(q.Expr)
		if err != nil {
			t.Errorf("%s: %v", q.Path, err)
			continue
		}
		for _, n := range names {
			f := family(n, families)
			if families[f] == "" {
				t.Errorf("%s: %s is not a metric the filter exports", q.Path, n)
			}
			if families[f] == "histogram" && f == n {
				t.Errorf("%s: %s is a histogram: query its _bucket, _sum or _count", q.Path, n)
			}
			onDashboard[f] = true
		}
	}
	var missing []string
	for f := range families {
		if !onDashboard[f] {
			missing = append(missing, f)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the filter exports %v, which no panel shows", missing)
	}
}

func TestSelected(t *testing.T) {
	families := map[string]string{"reqcount_hold_time_ms": "histogram", "reqcount_keys": "gauge"}
	tests := []struct {
		expr    string
		want    []string
		wantErr string
	}{
		{expr: `sum(rate(reqcount_requests_total{destination_service_name=~"$service"}[1m]))`, want: []string{"reqcount_requests_total"}},
		{expr: `sum(reqcount_vm_memory_bytes) / sum(reqcount_vm_instances)`, want: []string{"reqcount_vm_memory_bytes", "reqcount_vm_instances"}},
		{expr: `histogram_quantile(0.5, sum by (le) (rate(reqcount_hold_time_ms_bucket[1m])))`, want: []string{"reqcount_hold_time_ms"}},
		{expr: `{__name__=~"reqcount_.+"}`, wantErr: "exact names"},
		{expr: `sum(rate(reqcount_keys[1m])`, wantErr: "unclosed"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			names, err := selected(tt.expr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("selected: %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var fams []string
			for _, n := range names {
				fams = append(fams, family(n, families))
			}
			if !slices.Equal(fams, tt.want) {
				t.Errorf("families %v, want %v", fams, tt.want)
			}
		})
	}
}

func TestQueries(t *testing.T) {
	tests := []struct {
		name    string
		js      string
		want    []Query
		wantErr string
	}{
		{
			name: "targets anywhere, intervals interpolated",
			js:   `{"panels":[{"targets":[{"expr":"rate(a[$__rate_interval])"}]},{"panels":[{"targets":[{"expr":"b[${__interval}]"}]}]}]}`,
			want: []Query{{"panels[0].targets[0].expr", "rate(a[1m])"}, {"panels[1].panels[0].targets[0].expr", "b[1m]"}},
		},
		{
			name: "query variables",
			js: `{"templating":{"list":[{"type":"datasource","query":"prometheus"},` +
				`{"type":"query","query":"label_values(x{a=\"$b\",c=\"d\"}, e)"},` +
				`{"type":"query","query":{"query":"query_result(sum(y))","refId":"A"}},` +
				`{"type":"query","query":"label_values(e)"}]}}`,
			want: []Query{{"templating.list[1].query", `x{a="$b",c="d"}`}, {"templating.list[2].query.query", "sum(y)"}, {"templating.list[3].query", "vector(0)"}},
		},
		{name: "expr not a string", js: `{"panels":[{"targets":[{"expr":1}]}]}`, wantErr: "not a string"},
		{name: "variable form not read", js: `{"templating":{"list":[{"type":"query","query":"metrics(reqcount_.*)"}]}}`, wantErr: "does not read"},
		{name: "variable without a query", js: `{"templating":{"list":[{"type":"query"}]}}`, wantErr: "no query string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Queries([]byte(tt.js))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Queries: %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Queries = %q\nwant %q", got, tt.want)
			}
		})
	}
}
