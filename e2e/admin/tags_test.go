package admin

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// perService is the per-service counter as the filter defines it (Istio's
// key=.=value;.; spelling), with Envoy's namespace.
const perService = "wasmcustom.reqcount.destination_service_name=.=web;.;destination_service_namespace=.=shop;.;requests_total"

// regexTags builds a config of (name, regex) pairs, with or without Envoy's
// default extractors.
func regexTags(t *testing.T, defaults bool, pairs ...string) *Tags {
	t.Helper()
	cfg := &metricsv3.StatsConfig{UseAllDefaultTags: wrapperspb.Bool(defaults)}
	for i := 0; i < len(pairs); i += 2 {
		cfg.StatsTags = append(cfg.StatsTags, &metricsv3.TagSpecifier{
			TagName: pairs[i], TagValue: &metricsv3.TagSpecifier_Regex{Regex: pairs[i+1]},
		})
	}
	tags, err := NewTags(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tags
}

func istio(t *testing.T) *Tags {
	t.Helper()
	tags, err := IstioTags("destination_service_name", "destination_service_namespace")
	if err != nil {
		t.Fatal(err)
	}
	return tags
}

func TestExtract(t *testing.T) {
	tests := []struct {
		name     string
		tags     func(t *testing.T) *Tags
		stat     string
		wantName string
		wantTags []Tag
	}{
		{
			name: "Istio's extra stat tags on the per-service counter",
			tags: istio, stat: perService,
			wantName: "wasmcustom.reqcount.requests_total",
			wantTags: []Tag{{"destination_service_name", "web"}, {"destination_service_namespace", "shop"}},
		},
		{
			name: "Istio's tags leave the filter's other stats alone",
			tags: istio, stat: "wasmcustom.reqcount.requests_uncounted.ip_literal",
			wantName: "wasmcustom.reqcount.requests_uncounted.ip_literal",
		},
		{
			// Envoy's TagSpecifier docs: the first group is cut, the second is the value.
			name: "Envoy's example: two groups",
			tags: func(t *testing.T) *Tags { return regexTags(t, false, "envoy.cluster_name", `^cluster\.((.+?)\.)`) },
			stat: "cluster.foo_cluster.upstream_rq_timeout", wantName: "cluster.upstream_rq_timeout",
			wantTags: []Tag{{"envoy.cluster_name", "foo_cluster"}},
		},
		{
			name: "Envoy's user-agent example, without its lookahead",
			tags: func(t *testing.T) *Tags {
				return regexTags(t, false, "envoy.http_user_agent", `^http\..*?\.user_agent\.((.+?)\.)\w+?$`)
			},
			stat:     "http.connection_manager_1.user_agent.ios.downstream_cx_total",
			wantName: "http.connection_manager_1.user_agent.downstream_cx_total",
			wantTags: []Tag{{"envoy.http_user_agent", "ios"}},
		},
		{
			name: "one group: it is both the cut and the value",
			tags: func(t *testing.T) *Tags { return regexTags(t, false, "shard", `(\.shard_\d+)`) },
			stat: "db.shard_7.reads", wantName: "db.reads",
			wantTags: []Tag{{"shard", ".shard_7"}},
		},
		{
			name: "no group: no tag, nothing cut",
			tags: func(t *testing.T) *Tags { return regexTags(t, false, "none", `reads`) },
			stat: "db.reads", wantName: "db.reads",
		},
		{
			name: "a name that matches nothing",
			tags: istio, stat: "wasmcustom.reqcount.requests_counted",
			wantName: "wasmcustom.reqcount.requests_counted",
		},
		{
			name: "a regex that matches twice: only the first match",
			tags: func(t *testing.T) *Tags { return regexTags(t, false, "k", IstioTagRegex("k")) },
			stat: "k=.=a;.;k=.=b;.;name", wantName: "k=.=b;.;name",
			wantTags: []Tag{{"k", "a"}},
		},
		{
			name: "every regex runs over the original name; cuts are united",
			tags: func(t *testing.T) *Tags { return regexTags(t, false, "a", `(a\.(\w+)\.)`, "b", `(one\.(\w+)\.)`) },
			stat: "p.a.one.two.end", wantName: "p.end",
			wantTags: []Tag{{"a", "one"}, {"b", "two"}},
		},
		{
			name: "the same in reverse order: same name, tags in configuration order",
			tags: func(t *testing.T) *Tags { return regexTags(t, false, "b", `(one\.(\w+)\.)`, "a", `(a\.(\w+)\.)`) },
			stat: "p.a.one.two.end", wantName: "p.end",
			wantTags: []Tag{{"b", "two"}, {"a", "one"}},
		},
		{
			name: "extractors anchored on a first token run after the others",
			tags: func(t *testing.T) *Tags {
				return regexTags(t, false, "cluster", `^cluster\.((.+?)\.)`, "code", `_rq(_(\d{3}))$`)
			},
			stat: "cluster.web.upstream_rq_200", wantName: "cluster.upstream_rq",
			wantTags: []Tag{{"code", "200"}, {"cluster", "web"}},
		},
		{
			name: "two extractors of one tag name: the first that matches wins",
			tags: func(t *testing.T) *Tags {
				return regexTags(t, false, "x", `(\.(zz)\.)`, "x", `(\.(b)\.)`, "x", `(\.(c)\.)`)
			},
			stat: "a.b.c.d", wantName: "ac.d",
			wantTags: []Tag{{"x", "b"}},
		},
		{
			name: "Envoy's default response_code extractor, on by default",
			tags: func(t *testing.T) *Tags { return mustTags(t, nil) },
			stat: "wasmcustom.x.upstream_rq_200", wantName: "wasmcustom.x.upstream_rq",
			wantTags: []Tag{{"envoy.response_code", "200"}},
		},
		{
			name: "use_all_default_tags false turns Envoy's defaults off",
			tags: func(t *testing.T) *Tags { return regexTags(t, false) },
			stat: "wasmcustom.x.upstream_rq_200", wantName: "wasmcustom.x.upstream_rq_200",
		},
		{
			name: "a fixed value tags every stat",
			tags: func(t *testing.T) *Tags {
				return mustTags(t, &metricsv3.StatsConfig{
					UseAllDefaultTags: wrapperspb.Bool(false),
					StatsTags: []*metricsv3.TagSpecifier{{
						TagName: "pod", TagValue: &metricsv3.TagSpecifier_FixedValue{FixedValue: "p1"},
					}},
				})
			},
			stat: "wasmcustom.reqcount.keys", wantName: "wasmcustom.reqcount.keys",
			wantTags: []Tag{{"pod", "p1"}},
		},
		{
			name: "nil Tags extract nothing",
			tags: func(*testing.T) *Tags { return nil },
			stat: perService, wantName: perService,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotName, gotTags := tt.tags(t).Extract(tt.stat)
			if gotName != tt.wantName || !slices.Equal(gotTags, tt.wantTags) {
				t.Errorf("Extract(%q) = %q, %v; want %q, %v", tt.stat, gotName, gotTags, tt.wantName, tt.wantTags)
			}
		})
	}
}

func mustTags(t *testing.T, cfg *metricsv3.StatsConfig) *Tags {
	t.Helper()
	tags, err := NewTags(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tags
}

func TestRegexPrefix(t *testing.T) {
	tests := []struct{ regex, want string }{
		{`^cluster\.((.+?)\.)`, "cluster"},
		{`^http(?=\.).*?\.user_agent\.((.+?)\.)\w+?$`, "http"},
		{`^server$`, "server"},
		{`^cluster(\.(.+);)`, ""},
		{`(destination_service_name=\.=(.*?);\.;)`, ""},
		{`^\.x`, ""},
		{`_rq(_(\d{3}))$`, ""},
	}
	for _, tt := range tests {
		if got := regexPrefix(tt.regex); got != tt.want {
			t.Errorf("regexPrefix(%q) = %q, want %q", tt.regex, got, tt.want)
		}
	}
}

func TestParseBootstrap(t *testing.T) {
	tests := []struct {
		name     string
		yaml     string
		stat     string
		wantName string
		wantErr  string
	}{
		{
			name: "stats_tags as envoy/envoy.yaml spells them",
			yaml: `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 9901}}}
stats_config:
  stats_tags:
    - tag_name: destination_service_name
      regex: "(destination_service_name=\\.=(.*?);\\.;)"
    - tag_name: destination_service_namespace
      regex: "(destination_service_namespace=\\.=(.*?);\\.;)"
static_resources:
  listeners:
    - name: x
      filter_chains: [{filters: [{name: f, typed_config: {"@type": type.googleapis.com/some.Unlinked}}]}]
`,
			stat: perService, wantName: "wasmcustom.reqcount.requests_total",
		},
		{name: "no stats_config: Envoy's defaults only", yaml: "admin: {}\n", stat: perService, wantName: perService},
		{name: "not YAML", yaml: "stats_config: [", wantErr: "bootstrap"},
		{name: "unknown field", yaml: "stats_config: {stats_tagz: []}\n", wantErr: "stats_tagz"},
		{
			name:    "empty tag_name (Envoy: \"tag_name cannot be empty\")",
			yaml:    "stats_config: {stats_tags: [{regex: \"(a)\"}]}\n",
			wantErr: "tag_name is empty",
		},
		{
			name:    "a lookahead Go cannot compile is an error",
			yaml:    "stats_config: {stats_tags: [{tag_name: ua, regex: \"^http(?=\\\\.)(x)\"}]}\n",
			wantErr: "stats_tags[0] (ua): regex",
		},
		{
			name:    "no regex for a tag name Envoy has no default for",
			yaml:    "stats_config: {stats_tags: [{tag_name: mine}]}\n",
			wantErr: `"mine" is not one of Envoy's default tags`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tags, err := ParseBootstrap([]byte(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := tags.Extract(tt.stat); got != tt.wantName {
				t.Errorf("Extract(%q) = %q, want %q", tt.stat, got, tt.wantName)
			}
		})
	}
}

// TestRepoBootstrap: the stats_tags in envoy/envoy.yaml give plain Envoy the
// labels Istio gives with extraStatTags.
func TestRepoBootstrap(t *testing.T) {
	want := istio(t)
	for _, file := range []string{"envoy.yaml", "envoy-header.yaml"} {
		t.Run(file, func(t *testing.T) {
			tags, err := LoadBootstrap(filepath.Join("..", "..", "envoy", file))
			if err != nil {
				t.Fatal(err)
			}
			for _, stat := range []string{perService, "wasmcustom.reqcount.requests_counted", "wasmcustom.reqcount.keys"} {
				gotName, gotTags := tags.Extract(stat)
				wantName, wantTags := want.Extract(stat)
				if gotName != wantName || !slices.Equal(gotTags, wantTags) {
					t.Errorf("Extract(%q) = %q, %v; Istio gives %q, %v", stat, gotName, gotTags, wantName, wantTags)
				}
			}
		})
	}
}
