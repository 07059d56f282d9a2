package admin

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// sample is what the filter's stats look like after traffic for web.shop and
// api.shop, in no particular order.
var sample = []Stat{
	{Name: "wasmcustom.reqcount.requests_counted", Type: Counter, Value: 12},
	{Name: "wasmcustom.reqcount.keys", Type: Gauge, Value: 2},
	{Name: "wasmcustom.reqcount.destination_service_name=.=web;.;destination_service_namespace=.=shop;.;requests_total", Type: Counter, Value: 7},
	{Name: "wasmcustom.reqcount.destination_service_name=.=api;.;destination_service_namespace=.=shop;.;requests_total", Type: Counter, Value: 5},
	{Name: "wasmcustom.reqcount.requests_uncounted.ip_literal", Type: Counter, Value: 0},
}

func TestPrometheusName(t *testing.T) {
	tests := []struct {
		extracted string
		want      string
		wantOK    bool
	}{
		{"wasmcustom.reqcount.requests_counted", "reqcount_requests_counted", true},
		{"wasmcustom.reqcount.requests_total", "reqcount_requests_total", true}, // no suffix added, none removed
		{"wasmcustom.reqcount.requests_uncounted.bad_label", "reqcount_requests_uncounted_bad_label", true},
		{"wasmcustom.An.artist.plays-violin@019street", "An_artist_plays_violin_019street", true},
		{"wasmcustom.3x", "", false}, // a custom name must not start with a digit
		{"wasmcustom.", "", false},
		{"vulture.eats-liver", "envoy_vulture_eats_liver", true}, // Envoy's own stats keep the prefix
		{"wasmcustomer.x", "envoy_wasmcustomer_x", true},
	}
	for _, tt := range tests {
		got, ok := PrometheusName(tt.extracted)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("PrometheusName(%q) = %q, %v; want %q, %v", tt.extracted, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, sample); err != nil {
		t.Fatal(err)
	}
	want := `wasmcustom.reqcount.destination_service_name=.=api;.;destination_service_namespace=.=shop;.;requests_total: 5
wasmcustom.reqcount.destination_service_name=.=web;.;destination_service_namespace=.=shop;.;requests_total: 7
wasmcustom.reqcount.keys: 2
wasmcustom.reqcount.requests_counted: 12
wasmcustom.reqcount.requests_uncounted.ip_literal: 0
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// parse reads a Prometheus text exposition with Prometheus's own parser.
func parse(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("Prometheus's parser refuses the exposition: %v", err)
	}
	return fams
}

// series renders a family's series as `{labels} value` strings, sorted.
func series(f *dto.MetricFamily) []string {
	var out []string
	for _, m := range f.GetMetric() {
		var labels []string
		for _, l := range m.GetLabel() {
			labels = append(labels, l.GetName()+"="+l.GetValue())
		}
		v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
		out = append(out, "{"+strings.Join(labels, ",")+"} "+model.SampleValue(v).String())
	}
	sort.Strings(out)
	return out
}

func TestWritePrometheus(t *testing.T) {
	type family struct {
		typ    dto.MetricType
		series []string
	}
	tests := []struct {
		name string
		tags func(t *testing.T) *Tags
		want map[string]family
	}{
		{
			name: "Istio's tags: one family for both services",
			tags: istio,
			want: map[string]family{
				"reqcount_requests_total": {dto.MetricType_COUNTER, []string{
					"{destination_service_name=api,destination_service_namespace=shop} 5",
					"{destination_service_name=web,destination_service_namespace=shop} 7",
				}},
				"reqcount_requests_counted":              {dto.MetricType_COUNTER, []string{"{} 12"}},
				"reqcount_requests_uncounted_ip_literal": {dto.MetricType_COUNTER, []string{"{} 0"}},
				"reqcount_keys":                          {dto.MetricType_GAUGE, []string{"{} 2"}},
			},
		},
		{
			name: "no tags: the pieces stay in the name, sanitized",
			tags: func(*testing.T) *Tags { return nil },
			want: map[string]family{
				"reqcount_destination_service_name___api___destination_service_namespace___shop___requests_total": {dto.MetricType_COUNTER, []string{"{} 5"}},
				"reqcount_destination_service_name___web___destination_service_namespace___shop___requests_total": {dto.MetricType_COUNTER, []string{"{} 7"}},
				"reqcount_requests_counted":              {dto.MetricType_COUNTER, []string{"{} 12"}},
				"reqcount_requests_uncounted_ip_literal": {dto.MetricType_COUNTER, []string{"{} 0"}},
				"reqcount_keys":                          {dto.MetricType_GAUGE, []string{"{} 2"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WritePrometheus(&b, sample, tt.tags(t)); err != nil {
				t.Fatal(err)
			}
			fams := parse(t, &b)
			for name, want := range tt.want {
				f := fams[name]
				if f == nil {
					t.Errorf("no family %s", name)
					continue
				}
				if f.GetType() != want.typ {
					t.Errorf("%s: type %v, want %v", name, f.GetType(), want.typ)
				}
				if got := series(f); strings.Join(got, "\n") != strings.Join(want.series, "\n") {
					t.Errorf("%s: series %q, want %q", name, got, want.series)
				}
			}
			if len(fams) != len(tt.want) {
				t.Errorf("%d families, want %d:\n%s", len(fams), len(tt.want), b.String())
			}
		})
	}
}

// TestWritePrometheusText pins the exposition's text: # TYPE lines, counters
// before gauges, families sorted by name, series by full stat name, no
// "_total" added.
func TestWritePrometheusText(t *testing.T) {
	var b bytes.Buffer
	if err := WritePrometheus(&b, sample, istio(t)); err != nil {
		t.Fatal(err)
	}
	want := `# TYPE reqcount_requests_counted counter
reqcount_requests_counted 12
# TYPE reqcount_requests_total counter
reqcount_requests_total{destination_service_name="api",destination_service_namespace="shop"} 5
reqcount_requests_total{destination_service_name="web",destination_service_namespace="shop"} 7
# TYPE reqcount_requests_uncounted_ip_literal counter
reqcount_requests_uncounted_ip_literal 0
# TYPE reqcount_keys gauge
reqcount_keys 2
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler(func() []Stat { return sample }, istio(t)))
	defer srv.Close()
	tests := []struct {
		method, path string
		wantStatus   int
		wantType     string
		wantLine     string
	}{
		{"GET", "/stats", 200, "text/plain", "wasmcustom.reqcount.requests_counted: 12"},
		{"GET", "/stats/prometheus", 200, string(PrometheusFormat), `reqcount_requests_total{destination_service_name="web",destination_service_namespace="shop"} 7`},
		{"GET", "/stats?format=prometheus", 200, string(PrometheusFormat), "reqcount_requests_counted 12"},
		{"POST", "/stats", 405, "", ""},
		{"GET", "/clusters", 404, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantType != "" && !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.wantType) {
				t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tt.wantType)
			}
			if tt.wantLine != "" && !strings.Contains(string(body), "\n"+tt.wantLine+"\n") && !strings.HasPrefix(string(body), tt.wantLine+"\n") {
				t.Errorf("no line %q in\n%s", tt.wantLine, body)
			}
			if tt.wantType == string(PrometheusFormat) {
				parse(t, bytes.NewReader(body))
			}
		})
	}
}

// TestHistogram: a histogram in /stats (Envoy's quantile line) and in
// /stats/prometheus (buckets, sum, count), read back by Prometheus' parser.
func TestHistogram(t *testing.T) {
	bounds := []float64{1, 10, 100}
	h := Stat{Name: "wasmcustom.reqcount.hold.time_ms", Type: Histogram, Value: 4, Sum: 70, Bounds: bounds, Buckets: []uint64{1, 3, 4}}
	empty := Stat{Name: "wasmcustom.reqcount.other_ms", Type: Histogram, Bounds: bounds, Buckets: []uint64{0, 0, 0}}
	var text bytes.Buffer
	if err := WriteText(&text, []Stat{h, empty}); err != nil {
		t.Fatal(err)
	}
	wantText := "wasmcustom.reqcount.hold.time_ms: P0(nan,1) P25(nan,1) P50(nan,10) P75(nan,10) P90(nan,100) P95(nan,100) P99(nan,100) P99.5(nan,100) P99.9(nan,100) P100(nan,100)\n" +
		"wasmcustom.reqcount.other_ms: No recorded values\n"
	if text.String() != wantText {
		t.Errorf("/stats:\n%s\nwant\n%s", text.String(), wantText)
	}
	var prom bytes.Buffer
	if err := WritePrometheus(&prom, []Stat{h}, nil); err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(&prom)
	if err != nil {
		t.Fatalf("%v in\n%s", err, prom.String())
	}
	f := fams["reqcount_hold_time_ms"]
	if f == nil || f.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("no histogram reqcount_hold_time_ms in %v", fams)
	}
	got := f.GetMetric()[0].GetHistogram()
	if got.GetSampleCount() != 4 || got.GetSampleSum() != 70 || len(got.GetBucket()) != 4 || got.GetBucket()[1].GetCumulativeCount() != 3 || got.GetBucket()[3].GetCumulativeCount() != 4 {
		t.Errorf("histogram %v", got)
	}
}
