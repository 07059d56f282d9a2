package envoy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/reqcount/reqcount/envoy/grafana"
)

// Every PromQL expression in the repository parses with Prometheus's own
// parser. They are found mechanically, so that a new one cannot escape:
//
//   - Markdown (every *.md of the repository): each fenced code block tagged
//     promql holds one expression. A fenced block with no tag that mentions a
//     reqcount_ metric is an error: tag it promql, or text if it is not a
//     query.
//   - YAML under envoy/: every string field named query or expr, at any depth
//     (the ElastiService's trigger query).
//   - Grafana dashboards, envoy/grafana/*.json: every expr field and query
//     variable (grafana.Queries), with Grafana's interval variables
//     interpolated.

// promQuery is one expression and where it was found.
type promQuery struct {
	where, expr string
}

// promQL is Prometheus's parser with its defaults (no experimental functions),
// as a Prometheus server without feature flags parses.
var promQL = parser.NewParser(parser.Options{})

// markdownQueries returns the expressions of the promql blocks of a Markdown file.
func markdownQueries(path string, data []byte) ([]promQuery, error) {
	var qs []promQuery
	var (
		in       bool
		fence    string
		tag      string
		start    int
		body     strings.Builder
		mentions bool
	)
	n := 0
	for line := range bytes.Lines(data) {
		n++
		l := strings.TrimRight(string(line), "\r\n")
		trimmed := strings.TrimLeft(l, " ")
		if !in {
			for _, f := range []string{"```", "~~~"} {
				if strings.HasPrefix(trimmed, f) {
					in, fence, start = true, f, n
					tag, _, _ = strings.Cut(strings.TrimSpace(strings.TrimLeft(trimmed, f[:1])), " ")
					body.Reset()
					mentions = false
				}
			}
			continue
		}
		if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]+" ") == "" {
			in = false
			where := fmt.Sprintf("%s:%d", path, start)
			switch {
			case tag == "promql":
				if strings.TrimSpace(body.String()) == "" {
					return nil, fmt.Errorf("%s: an empty promql block", where)
				}
				qs = append(qs, promQuery{where, body.String()})
			case tag == "" && mentions:
				return nil, fmt.Errorf("%s: a code block without a language that mentions a reqcount_ metric: tag it ```promql (it is then parsed as one expression), or ```text if it is not a query", where)
			}
			continue
		}
		body.WriteString(l + "\n")
		mentions = mentions || strings.Contains(l, "reqcount_")
	}
	if in {
		return nil, fmt.Errorf("%s:%d: code block not closed", path, start)
	}
	return qs, nil
}

// yamlQueries returns every string field named query or expr in the YAML
// documents of a file.
func yamlQueries(path string, data []byte) ([]promQuery, error) {
	var qs []promQuery
	for i, doc := range splitDocuments(data) {
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i+1, err)
		}
		var v any
		if err := json.Unmarshal(js, &v); err != nil {
			return nil, err
		}
		var walk func(at string, v any) error
		walk = func(at string, v any) error {
			switch v := v.(type) {
			case map[string]any:
				keys := make([]string, 0, len(v))
				for k := range v {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					if k == "query" || k == "expr" {
						s, ok := v[k].(string)
						if !ok {
							return fmt.Errorf("%s: %s.%s is not a string", path, at, k)
						}
						qs = append(qs, promQuery{fmt.Sprintf("%s: document %d: %s.%s", path, i+1, at, k), s})
						continue
					}
					if err := walk(at+"."+k, v[k]); err != nil {
						return err
					}
				}
			case []any:
				for j, e := range v {
					if err := walk(fmt.Sprintf("%s[%d]", at, j), e); err != nil {
						return err
					}
				}
			}
			return nil
		}
		if err := walk("", v); err != nil {
			return nil, err
		}
	}
	return qs, nil
}

// dashboardQueries returns a Grafana dashboard's expressions.
func dashboardQueries(path string, data []byte) ([]promQuery, error) {
	gqs, err := grafana.Queries(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var qs []promQuery
	for _, q := range gqs {
		qs = append(qs, promQuery{path + ": " + q.Path, q.Expr})
	}
	return qs, nil
}

// parseAll parses every expression, joining the errors.
func parseAll(qs []promQuery) error {
	var errs []error
	for _, q := range qs {
		if _, err := promQL.ParseExpr(q.expr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", q.where, q.expr, err))
		}
	}
	return errors.Join(errs...)
}

// repoQueries finds the expressions of the repository whose root is root.
func repoQueries(root string) ([]promQuery, error) {
	var qs []promQuery
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || rel == "build") {
				return filepath.SkipDir // git's, and make's outputs
			}
			return nil
		}
		var extract func(string, []byte) ([]promQuery, error)
		switch {
		case strings.HasSuffix(rel, ".md"):
			extract = markdownQueries
		case strings.HasPrefix(rel, "envoy"+string(filepath.Separator)) && (strings.HasSuffix(rel, ".yaml") || strings.HasSuffix(rel, ".yml")):
			extract = yamlQueries
		case filepath.Dir(rel) == filepath.Join("envoy", "grafana") && strings.HasSuffix(rel, ".json"):
			extract = dashboardQueries
		default:
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		found, err := extract(filepath.ToSlash(rel), data)
		qs = append(qs, found...)
		return err
	})
	return qs, err
}

func TestPromQL(t *testing.T) {
	qs, err := repoQueries("..")
	if err != nil {
		t.Fatal(err)
	}
	if err := parseAll(qs); err != nil {
		t.Error(err)
	}
	// The walk must reach each place that holds queries today.
	per := map[string]int{}
	for _, q := range qs {
		file, _, _ := strings.Cut(q.where, ":")
		per[file]++
	}
	for _, file := range []string{"README.md", "envoy/README.md", "envoy/istio/QUICKSTART.md", "envoy/kubeelasti/elastiservice.yaml", "envoy/grafana/reqcount.json"} {
		if per[file] == 0 {
			t.Errorf("no PromQL expression found in %s (found %v)", file, per)
		}
	}
	t.Logf("%d expressions parsed: %v", len(qs), per)
}

func TestPromQLFails(t *testing.T) {
	const good = `sum(rate(reqcount_requests_total{destination_service_name="web"}[1m])) or vector(0)`
	md := func(fence, tag, body string) string {
		return "text\n\n" + fence + tag + "\n" + body + "\n" + fence + "\n"
	}
	tests := []struct {
		name    string
		extract func(string, []byte) ([]promQuery, error)
		input   string
		want    int    // expressions found
		wantErr string // "" means every one parses
	}{
		{name: "markdown promql block", extract: markdownQueries, input: md("```", "promql", good), want: 1},
		{name: "markdown ~~~ fence, indented", extract: markdownQueries, input: "- item\n\n  ~~~promql\n  " + good + "\n  ~~~\n", want: 1},
		{name: "markdown expression over lines, with a comment", extract: markdownQueries, input: md("```", "promql", "# requests per second\nsum(\n  rate(reqcount_keys[1m])\n)"), want: 1},
		{name: "markdown text and sh blocks are not queries", extract: markdownQueries, input: md("```", "text", "reqcount_x{") + md("```", "sh", "curl … | grep reqcount_"), want: 0},
		{name: "markdown promql block broken", extract: markdownQueries, input: md("```", "promql", "sum(rate(reqcount_requests_total[1m])"), want: 1, wantErr: "unclosed left parenthesis"},
		{name: "markdown two expressions in one block", extract: markdownQueries, input: md("```", "promql", "reqcount_keys\nreqcount_keys"), want: 1, wantErr: "parse error"},
		{name: "markdown Grafana variable in a block", extract: markdownQueries, input: md("```", "promql", "rate(reqcount_keys[$__rate_interval])"), want: 1, wantErr: "parse error"},
		{name: "markdown untagged block with a query", extract: markdownQueries, input: md("```", "", good), wantErr: "tag it ```promql"},
		{name: "markdown empty promql block", extract: markdownQueries, input: md("```", "promql", ""), wantErr: "empty promql block"},
		{name: "markdown block not closed", extract: markdownQueries, input: "```promql\n" + good + "\n", wantErr: "not closed"},

		{name: "yaml query", extract: yamlQueries, input: "spec:\n  triggers:\n    - metadata:\n        query: '" + good + "'\n", want: 1},
		{name: "yaml expr at any depth, every document", extract: yamlQueries, input: "a: [{b: {expr: up}}]\n---\nexpr: 'rate(x[5m])'\n", want: 2},
		{name: "yaml query broken", extract: yamlQueries, input: "metadata:\n  query: 'sum(rate(reqcount_requests_total[1m]) or vector(0)'\n", want: 1, wantErr: "unclosed left parenthesis"},
		{name: "yaml query with a bad duration", extract: yamlQueries, input: "query: 'rate(reqcount_requests_total[1 m])'\n", want: 1, wantErr: "parse error"},
		{name: "yaml query not a string", extract: yamlQueries, input: "query: {a: 1}\n", wantErr: "not a string"},

		{name: "dashboard targets and variables", extract: dashboardQueries, input: `{"panels":[{"targets":[{"expr":"sum(rate(reqcount_keys[$__rate_interval]))"}]}],` +
			`"templating":{"list":[{"type":"query","query":"label_values(reqcount_requests_total{destination_service_namespace=~\"$namespace\"}, destination_service_name)"}]}}`, want: 2},
		{name: "dashboard expr broken", extract: dashboardQueries, input: `{"panels":[{"targets":[{"expr":"sum(rate(reqcount_keys[$__rate_interval])"}]}]}`, want: 1, wantErr: "unclosed left parenthesis"},
		{name: "dashboard variable outside a string", extract: dashboardQueries, input: `{"panels":[{"targets":[{"expr":"rate(reqcount_keys[$window])"}]}]}`, want: 1, wantErr: "parse error"},
		{name: "dashboard variable selector broken", extract: dashboardQueries, input: `{"templating":{"list":[{"type":"query","query":"label_values(reqcount_requests_total{a=\"b\", destination_service_name)"}]}}`, want: 1, wantErr: "parse error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			qs, err := tt.extract("input", []byte(tt.input))
			if err == nil {
				if len(qs) != tt.want {
					t.Fatalf("found %d expressions %q, want %d", len(qs), qs, tt.want)
				}
				err = parseAll(qs)
			}
			if err != nil {
				t.Log(err)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("%v, want it to pass", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("passed, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("%v\nwant an error containing %q", err, tt.wantErr)
			}
		})
	}
}
