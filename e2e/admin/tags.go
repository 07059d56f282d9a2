package admin

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"
)

// Tag is one tag Envoy extracted from a stat name: a Prometheus label.
type Tag struct {
	Name  string // the TagSpecifier's tag_name, e.g. destination_service_name
	Value string // what the regex's second group matched, e.g. web
}

// Tags turns full stat names into tag-extracted names and tags the way Envoy's
// TagProducerImpl does (source/common/stats/tag_producer_impl.cc and
// tag_extractor_impl.cc):
//
//   - Each extractor is a tag name with a regex (or a fixed value, which tags
//     every stat). The regex is searched in the ORIGINAL full name, never in
//     what earlier extractors left, and only its first match counts. If the
//     regex has no capture group it tags nothing. Its first group is the text
//     to cut out of the name; its second group, if it has one, is the tag's
//     value (else the first group is).
//   - The tag-extracted name is the full name with every cut removed at once.
//   - Extractors whose regex starts with ^word\. run only on names whose first
//     dot-separated token is word; they run after the others (Envoy keeps them
//     in a map by that token). Within each set, configuration order.
//   - When several extractors share a tag name, the first one that matches
//     tags the stat; the others are skipped.
//
// Envoy compiles configured regexes with std::regex (ECMAScript); this uses
// Go's RE2 syntax, which agrees on everything Envoy's and Istio's tag regexes
// use but lookahead: a regex Go cannot compile is an error, not a silent
// difference.
//
// The zero Tags extracts nothing: names pass through unchanged.
type Tags struct {
	unprefixed []extractor
	byPrefix   map[string][]extractor
}

type extractor struct {
	name   string
	re     *regexp.Regexp // nil for a fixed value
	fixed  string
	prefix string // first token the name must have, from a ^word\. regex
}

// Envoy's default tag extractors (source/common/config/well_known_names.cc),
// applied unless stats_config.use_all_default_tags is false. All but these two
// are anchored on Envoy's own stat prefixes (cluster., http., listener.,
// vhost., mongo., …) or token patterns of them, so they never match a
// "wasmcustom." name; these two are anchored on the name's end and can.
var envoyDefaultTags = []struct{ name, regex string }{
	{"envoy.response_code", `_rq(_(\d{3}))$`},
	{"envoy.response_code_class", `_rq_((\d))xx$`},
}

// NewTags builds the extractors of an Envoy StatsConfig: Envoy's defaults that
// can match a "wasmcustom." name (unless use_all_default_tags is false), then
// stats_tags in order. A nil config means Envoy's defaults only. A stats_tags
// entry with neither regex nor fixed_value names one of Envoy's defaults, as
// in Envoy; only the emulated ones are accepted.
func NewTags(cfg *metricsv3.StatsConfig) (*Tags, error) {
	t := &Tags{byPrefix: map[string][]extractor{}}
	if cfg.GetUseAllDefaultTags() == nil || cfg.GetUseAllDefaultTags().GetValue() {
		for _, d := range envoyDefaultTags {
			if err := t.addRegex(d.name, d.regex); err != nil {
				return nil, err
			}
		}
	}
	for i, spec := range cfg.GetStatsTags() {
		name := spec.GetTagName()
		if name == "" {
			return nil, fmt.Errorf("stats_tags[%d]: tag_name is empty", i)
		}
		var err error
		switch v := spec.GetTagValue().(type) {
		case *metricsv3.TagSpecifier_FixedValue:
			t.unprefixed = append(t.unprefixed, extractor{name: name, fixed: v.FixedValue})
		case *metricsv3.TagSpecifier_Regex:
			if v.Regex != "" {
				err = t.addRegex(name, v.Regex)
				break
			}
			err = t.addDefault(name)
		default:
			err = t.addDefault(name)
		}
		if err != nil {
			return nil, fmt.Errorf("stats_tags[%d] (%s): %w", i, name, err)
		}
	}
	return t, nil
}

// addDefault adds Envoy's default extractor called name (a TagSpecifier with
// no regex).
func (t *Tags) addDefault(name string) error {
	for _, d := range envoyDefaultTags {
		if d.name == name {
			return t.addRegex(d.name, d.regex)
		}
	}
	return fmt.Errorf("no regex, and %q is not one of Envoy's default tags that this host emulates", name)
}

func (t *Tags) addRegex(name, expr string) error {
	re, err := regexp.Compile(expr)
	if err != nil {
		return fmt.Errorf("regex %q: %w", expr, err)
	}
	e := extractor{name: name, re: re, prefix: regexPrefix(expr)}
	if e.prefix == "" {
		t.unprefixed = append(t.unprefixed, e)
	} else {
		t.byPrefix[e.prefix] = append(t.byPrefix[e.prefix], e)
	}
	return nil
}

// regexPrefix is Envoy's TagExtractorImplBase::extractRegexPrefix: the word
// after a leading ^ when a \. (or (?=\.)) follows it, or when it ends the regex
// with $.
func regexPrefix(expr string) string {
	if !strings.HasPrefix(expr, "^") {
		return ""
	}
	for i := 1; i < len(expr); i++ {
		c := expr[i]
		if c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		if i == 1 {
			return ""
		}
		rest := expr[i:]
		last := i == len(expr)-1
		if !last && (strings.HasPrefix(rest, `\.`) || strings.HasPrefix(rest, `(?=\.)`)) || last && c == '$' {
			return expr[1:i]
		}
		return ""
	}
	return ""
}

// Extract returns the tag-extracted name of the full stat name and its tags,
// in the order Envoy produces them.
func (t *Tags) Extract(name string) (string, []Tag) {
	if t == nil {
		return name, nil
	}
	var tags []Tag
	var cuts [][2]int
	seen := map[string]bool{}
	apply := func(e extractor) {
		if seen[e.name] {
			return // another extractor of this name already tagged the stat
		}
		if e.re == nil {
			tags = append(tags, Tag{e.name, e.fixed})
			seen[e.name] = true
			return
		}
		m := e.re.FindStringSubmatchIndex(name)
		if m == nil || len(m) < 4 {
			return // no match, or no group to cut
		}
		value := m[2:4] // a second group is the value; without one, the first is
		if len(m) >= 6 {
			value = m[4:6]
		}
		tags = append(tags, Tag{e.name, span(name, value)})
		seen[e.name] = true
		if m[2] >= 0 {
			cuts = append(cuts, [2]int{m[2], m[3]})
		}
	}
	for _, e := range t.unprefixed {
		apply(e)
	}
	if token, _, ok := strings.Cut(name, "."); ok {
		for _, e := range t.byPrefix[token] {
			apply(e)
		}
	}
	return removeSpans(name, cuts), tags
}

// span returns the text of a submatch; a group that did not take part is "".
func span(s string, loc []int) string {
	if loc[0] < 0 {
		return ""
	}
	return s[loc[0]:loc[1]]
}

// removeSpans removes the union of the [start, end) spans from s (Envoy's
// StringUtil::removeCharacters over an IntervalSet).
func removeSpans(s string, spans [][2]int) string {
	if len(spans) == 0 {
		return s
	}
	drop := make([]bool, len(s))
	for _, sp := range spans {
		for i := sp[0]; i < sp[1]; i++ {
			drop[i] = true
		}
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if !drop[i] {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// ParseBootstrap reads the stats_config of an Envoy bootstrap in YAML (or
// JSON) with go-control-plane's types and validation, and returns its
// extractors. Only stats_config is read: the rest of the bootstrap (listeners,
// filters with typed configs this package does not link) is not this
// package's business and is checked elsewhere (envoy/config_test.go).
func ParseBootstrap(data []byte) (*Tags, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(js, &top); err != nil {
		return nil, fmt.Errorf("bootstrap: not a mapping: %w", err)
	}
	only := map[string]json.RawMessage{}
	for _, k := range []string{"stats_config", "statsConfig"} {
		if v, ok := top[k]; ok {
			only[k] = v
		}
	}
	sub, err := json.Marshal(only)
	if err != nil {
		return nil, err
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(sub, &bs); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if err := bs.GetStatsConfig().ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap: stats_config: %w", err)
	}
	return NewTags(bs.GetStatsConfig())
}

// LoadBootstrap is ParseBootstrap on the file at path.
func LoadBootstrap(path string) (*Tags, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := ParseBootstrap(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// istioTags are the stats_tags of Istio's bootstrap (1.25 to 1.31,
// tools/packaging/common/envoy_bootstrap.json) that are not anchored on one of
// Envoy's own stat prefixes, in the bootstrap's order; extra is where the
// extraStatTags go. The anchored ones (^cluster, ^http, ^listener, ^server,
// ^tcp, ^mongo) cannot match a "wasmcustom." name and are left out.
var istioTags = []struct{ name, regex string }{
	{"response_code", `_rq(_(\d{3}))$`},
	{"response_code_class", `_rq(_(\dxx))$`},
	{"", "extra"},
	{"cache", `(cache\.(.+?)\.)`},
	{"component", `(component\.(.+?)\.)`},
	{"tag", `(tag\.(.+?);\.)`},
	{"wasm_filter", `(wasm_filter\.(.+?)\.)`},
	{"authz_enforce_result", `rbac(\.(allowed|denied))`},
	{"authz_dry_run_action", `(\.istio_dry_run_(allow|deny)_)`},
	{"authz_dry_run_result", `(\.shadow_(allowed|denied))`},
}

// IstioTags returns the extractors of Istio's bootstrap with extra as
// ProxyConfig.extraStatTags (meshConfig.defaultConfig.extraStatTags, or the
// sidecar.istio.io/extraStatTags annotation): each extra name becomes regex
// IstioTagRegex(name). Istio's bootstrap sets use_all_default_tags: false, so
// Envoy's defaults are not applied.
func IstioTags(extra ...string) (*Tags, error) {
	cfg := &metricsv3.StatsConfig{UseAllDefaultTags: wrapperspb.Bool(false)}
	add := func(name, regex string) {
		cfg.StatsTags = append(cfg.StatsTags, &metricsv3.TagSpecifier{
			TagName:  name,
			TagValue: &metricsv3.TagSpecifier_Regex{Regex: regex},
		})
	}
	for _, it := range istioTags {
		if it.name != "" {
			add(it.name, it.regex)
			continue
		}
		for _, n := range extra {
			add(n, IstioTagRegex(n))
		}
	}
	return NewTags(cfg)
}

// IstioTagRegex is the regex Istio's bootstrap generates for an extra stat
// tag name: ({{ $tag }}=\.=(.*?);\.;) in the bootstrap template.
func IstioTagRegex(name string) string {
	return "(" + name + `=\.=(.*?);\.;)`
}
