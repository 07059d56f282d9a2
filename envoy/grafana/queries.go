package grafana

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Query is one PromQL expression a dashboard sends to Prometheus.
type Query struct {
	// Path is where the dashboard JSON holds it: "panels[3].targets[1].expr",
	// "templating.list[2].query".
	Path string
	// Expr is the expression as Prometheus's parser would see it: Grafana's
	// interval variables replaced (Interpolate), a query variable's series
	// selector taken out of label_values().
	Expr string
}

// Queries returns every PromQL expression in a dashboard's JSON: each "expr"
// field anywhere in it (panel targets, rows' panels, annotations, whatever
// holds one), and each query variable's query. A query variable whose query
// is not one of Grafana's Prometheus forms (label_values(…), query_result(…),
// or an expression) is an error, so that no query goes unread.
func Queries(dashboardJSON []byte) ([]Query, error) {
	var doc any
	if err := json.Unmarshal(dashboardJSON, &doc); err != nil {
		return nil, err
	}
	var qs []Query
	var walk func(path string, v any) error
	walk = func(path string, v any) error {
		switch v := v.(type) {
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys) // a stable order for the messages
			for _, k := range keys {
				p := k
				if path != "" {
					p = path + "." + k
				}
				if k == "expr" {
					s, ok := v[k].(string)
					if !ok {
						return fmt.Errorf("%s: not a string", p)
					}
					qs = append(qs, Query{Path: p, Expr: Interpolate(s)})
					continue
				}
				if err := walk(p, v[k]); err != nil {
					return err
				}
			}
		case []any:
			for i, e := range v {
				if err := walk(path+"["+strconv.Itoa(i)+"]", e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk("", doc); err != nil {
		return nil, err
	}

	var d struct {
		Templating struct {
			List []struct {
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(dashboardJSON, &d); err != nil {
		return nil, err
	}
	for i, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		path := fmt.Sprintf("templating.list[%d].query", i)
		q, ok := v.Query.(string)
		if !ok {
			// Grafana's newer object form holds the same string in "query".
			m, isMap := v.Query.(map[string]any)
			if q, ok = m["query"].(string); !isMap || !ok {
				return nil, fmt.Errorf("%s: no query string", path)
			}
			path += ".query"
		}
		expr, err := VariableExpr(q)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		qs = append(qs, Query{Path: path, Expr: Interpolate(expr)})
	}
	return qs, nil
}

// intervalVariables are Grafana's built-in variables that stand for a
// duration in a query (a range or a subquery step).
var intervalVariables = regexp.MustCompile(`\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}`)

// Interpolate returns expr with Grafana's interval variables ($__rate_interval,
// $__interval, $__range, also as ${…}) replaced by a duration, 1m: what
// Prometheus receives in their place, as far as its parser cares. Dashboard
// variables inside label matchers ("$namespace") are strings to the parser
// and stay; one anywhere else stays too, and fails to parse.
func Interpolate(expr string) string {
	return intervalVariables.ReplaceAllString(expr, "1m")
}

var (
	labelValues      = regexp.MustCompile(`^\s*label_values\(\s*(.*?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)
	labelValuesLabel = regexp.MustCompile(`^\s*label_values\(\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)
	queryResult      = regexp.MustCompile(`^\s*query_result\((.*)\)\s*$`)
	otherFunction    = regexp.MustCompile(`^\s*(label_names|metrics)\(`)
)

// VariableExpr returns the PromQL inside a Prometheus query variable's query:
// the series selector of label_values(<selector>, <label>), the expression of
// query_result(<expr>), or the query itself (Grafana runs a plain expression
// as a query). label_values(<label>) has none: it returns "vector(0)", which
// parses. label_names() and metrics() take a regex or selector Grafana
// checks itself: an error here, as a form this package does not read.
func VariableExpr(q string) (string, error) {
	if m := labelValues.FindStringSubmatch(q); m != nil {
		return m[1], nil
	}
	if labelValuesLabel.MatchString(q) {
		return "vector(0)", nil
	}
	if m := queryResult.FindStringSubmatch(q); m != nil {
		return m[1], nil
	}
	if otherFunction.MatchString(q) || strings.HasPrefix(strings.TrimSpace(q), "label_values(") {
		return "", fmt.Errorf("%q: a variable query this package does not read", q)
	}
	return q, nil
}
