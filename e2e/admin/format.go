package admin

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// Namespace is the custom stat namespace Envoy files wasm-defined metrics
// under: a module's "reqcount.keys" is the stat "wasmcustom.reqcount.keys".
// Envoy registers it as a custom namespace, so /stats/prometheus strips it
// and adds no "envoy_" prefix.
const Namespace = "wasmcustom"

// Type is the kind of a stat.
type Type int

// The stat types the admin shows (histograms with the +Inf bucket the
// exposition adds, as Envoy's le="+Inf").
const (
	Counter Type = iota
	Gauge
	Histogram
)

// Stat is one stat as Envoy's store holds it.
type Stat struct {
	// Name is the full name, namespace included, as /stats shows it:
	// "wasmcustom.reqcount.requests_counted".
	Name  string
	Type  Type
	Value uint64 // a histogram's: its number of values
	// A histogram's sum of values, bucket upper bounds and cumulative counts
	// (values ≤ Bounds[i]).
	Sum     uint64
	Bounds  []float64
	Buckets []uint64
}

// WriteText writes stats in the format of Envoy's /stats: one "name: value"
// line per counter and gauge, sorted by full name.
func WriteText(w io.Writer, stats []Stat) error {
	sorted := append([]Stat(nil), stats...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	bw := bufio.NewWriter(w)
	for _, s := range sorted {
		if s.Type == Histogram {
			fmt.Fprintf(bw, "%s: %s\n", s.Name, quantiles(s))
			continue
		}
		fmt.Fprintf(bw, "%s: %d\n", s.Name, s.Value)
	}
	return bw.Flush()
}

// quantiles is Envoy's /stats line for a histogram, "P0(nan,v) P25(nan,v)
// …": the interval's quantiles are not kept here ("nan"), the cumulative
// ones are read off the buckets (each the upper bound of the bucket it falls
// in). "No recorded values" when it has none, as Envoy.
func quantiles(s Stat) string {
	if s.Value == 0 {
		return "No recorded values"
	}
	var b strings.Builder
	for i, q := range []float64{0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100} {
		if i > 0 {
			b.WriteByte(' ')
		}
		v := s.Bounds[len(s.Bounds)-1]
		want := uint64(math.Ceil(q / 100 * float64(s.Value)))
		for j, c := range s.Buckets {
			if c >= max(want, 1) {
				v = s.Bounds[j]
				break
			}
		}
		fmt.Fprintf(&b, "P%s(nan,%g)", strconv.FormatFloat(q, 'f', -1, 64), v)
	}
	return b.String()
}

// PrometheusName is Envoy's PrometheusStatsFormatter::metricName for a
// tag-extracted name: a name in the custom namespace loses "wasmcustom." and
// gets no prefix; any other name gets "envoy_". Then every character outside
// [a-zA-Z0-9_] becomes "_". A custom name that ends up empty or starting with
// a digit is not exposed at all (ok false), as in Envoy.
func PrometheusName(extracted string) (name string, ok bool) {
	if rest, custom := strings.CutPrefix(extracted, Namespace+"."); custom {
		name = sanitize(rest)
		if name == "" || '0' <= name[0] && name[0] <= '9' {
			return "", false
		}
		return name, true
	}
	return "envoy_" + sanitize(extracted), true
}

// sanitize replaces every character outside [a-zA-Z0-9_] with "_", byte by
// byte as Envoy does.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// MetricFamilies builds what Envoy's /stats/prometheus exposes for stats:
// each stat's name goes through tags (nil: no extraction) and PrometheusName;
// stats with the same resulting name and type are one family, one series per
// stat, labelled with its tags (names sanitized like metric names). Envoy
// adds no "_total" suffix to counters. Families come counters first, then
// gauges, each sorted by name, and series within a family sorted by full stat
// name: Envoy's order.
func MetricFamilies(stats []Stat, tags *Tags) []*dto.MetricFamily {
	type key struct {
		name string
		typ  Type
	}
	type series struct {
		full string
		m    *dto.Metric
	}
	groups := map[key][]series{}
	for _, s := range stats {
		extracted, ts := tags.Extract(s.Name)
		name, ok := PrometheusName(extracted)
		if !ok {
			continue
		}
		m := &dto.Metric{}
		for _, t := range ts {
			m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(sanitize(t.Name)), Value: proto.String(t.Value)})
		}
		v := float64(s.Value)
		switch s.Type {
		case Counter:
			m.Counter = &dto.Counter{Value: &v}
		case Gauge:
			m.Gauge = &dto.Gauge{Value: &v}
		case Histogram:
			h := &dto.Histogram{SampleCount: proto.Uint64(s.Value), SampleSum: proto.Float64(float64(s.Sum))}
			for i, ub := range s.Bounds {
				h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(ub), CumulativeCount: proto.Uint64(s.Buckets[i])})
			}
			m.Histogram = h
		default:
			continue
		}
		k := key{name, s.Type}
		groups[k] = append(groups[k], series{s.Name, m})
	}
	keys := make([]key, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].typ != keys[j].typ {
			return keys[i].typ < keys[j].typ
		}
		return keys[i].name < keys[j].name
	})
	families := make([]*dto.MetricFamily, 0, len(keys))
	for _, k := range keys {
		ss := groups[k]
		sort.Slice(ss, func(i, j int) bool { return ss[i].full < ss[j].full })
		typ := dto.MetricType_COUNTER
		switch k.typ {
		case Gauge:
			typ = dto.MetricType_GAUGE
		case Histogram:
			typ = dto.MetricType_HISTOGRAM
		}
		f := &dto.MetricFamily{Name: proto.String(k.name), Type: typ.Enum()}
		for _, s := range ss {
			f.Metric = append(f.Metric, s.m)
		}
		families = append(families, f)
	}
	return families
}

// PrometheusFormat is the exposition format WritePrometheus writes: the
// Prometheus text format, version 0.0.4 (what Envoy's /stats/prometheus
// serves). It is also the response's Content-Type.
var PrometheusFormat = expfmt.NewFormat(expfmt.TypeTextPlain)

// WritePrometheus writes MetricFamilies(stats, tags) in PrometheusFormat with
// Prometheus's own encoder.
func WritePrometheus(w io.Writer, stats []Stat, tags *Tags) error {
	enc := expfmt.NewEncoder(w, PrometheusFormat)
	for _, f := range MetricFamilies(stats, tags) {
		if err := enc.Encode(f); err != nil {
			return err
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		return c.Close()
	}
	return nil
}
