package e2e_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/reqcount/reqcount/e2e/admin"
	"github.com/reqcount/reqcount/e2e/collector"
	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// The per-service series the scalers query (issue 8): the filter defines, per
// (svc, namespace), the counter
// reqcount.destination_service_name=.=<svc>;.;destination_service_namespace=.=<ns>;.;requests_total,
// and the tag extractors turn it into this family with these labels.
const (
	perServiceFamily = "reqcount_requests_total"
	labelService     = "destination_service_name"
	labelNamespace   = "destination_service_namespace"
)

// TestAdminScrape drives web.shop and api.shop through several workers, ticks,
// and scrapes /stats/prometheus over HTTP, parsed by Prometheus's own parser:
// once with envoy/envoy.yaml's stats tags (plain Envoy), once with the tags
// Istio's bootstrap has with the extraStatTags of envoy/istio/mesh-stats.yaml.
// Each series must hold exactly the requests sent for its service; the
// filter's existing counters must be there too.
func TestAdminScrape(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	envoyTags, err := admin.LoadBootstrap(filepath.Join(root, "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	istioTags, err := admin.IstioTags(labelService, labelNamespace)
	if err != nil {
		t.Fatal(err)
	}

	ctx := boundedCtx(t)
	coll := startCollector(t, collector.Options{})
	const workers = 3
	h := startHost(t, wasmhost.Config{
		Workers:      workers,
		PluginConfig: liveConfig(2*time.Second, ""),
		Clusters:     map[string]string{liveCluster: coll.Addr()},
		ManualTicks:  true,
	})
	want := map[string]int{"web": 0, "api": 0}
	plans := make([][]chunk, workers)
	for i := range plans {
		web, api := 40+7*i, 15+3*i
		plans[i] = []chunk{
			{authority: "web.shop", n: web, tick: true},
			{authority: "api.shop:8080", n: api},
			{authority: "web.shop.svc.cluster.local", n: web, tick: true},
		}
		want["web"] += 2 * web
		want["api"] += api
	}
	send(t, ctx, h, plans)
	total := want["web"] + want["api"]

	for _, tc := range []struct {
		name string
		tags *admin.Tags
	}{{"envoy.yaml stats_tags", envoyTags}, {"Istio extraStatTags", istioTags}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(admin.Handler(admin.HostStats(h), tc.tags))
			defer srv.Close()

			// The filter moves its counts into its metrics on ticks; however many
			// ticks that takes (per worker, or through one worker for the whole
			// Envoy), a few rounds of ticks on every worker must settle it.
			var fams map[string]*dto.MetricFamily
			for round := 0; round < 5; round++ {
				if err := h.Tick(ctx); err != nil {
					t.Fatal(err)
				}
				fams = scrape(t, srv.URL+"/stats/prometheus")
				if counterValue(fams["reqcount_requests_counted"], nil) == float64(total) &&
					counterValue(fams[perServiceFamily], serviceLabels("web")) == float64(want["web"]) &&
					counterValue(fams[perServiceFamily], serviceLabels("api")) == float64(want["api"]) {
					break
				}
			}

			// Exists today: the filter's own counter, proving the admin works.
			if got := counterValue(fams["reqcount_requests_counted"], nil); got != float64(total) {
				t.Errorf("reqcount_requests_counted = %v, want %d", got, total)
			}
			if f := fams["reqcount_keys"]; f.GetType() != dto.MetricType_GAUGE {
				t.Errorf("reqcount_keys: %v, want a gauge", f)
			}

			// The per-service series.
			f := fams[perServiceFamily]
			if f == nil {
				t.Fatalf("%s is missing from /stats/prometheus: the filter defines no per-service counter "+
					"reqcount.destination_service_name=.=<svc>;.;destination_service_namespace=.=<ns>;.;requests_total "+
					"(issue 8, the scaler's metric: filter side). Families present: %v", perServiceFamily, slices.Sorted(maps.Keys(fams)))
			}
			if f.GetType() != dto.MetricType_COUNTER {
				t.Errorf("%s is a %v, want a counter", perServiceFamily, f.GetType())
			}
			for svc, n := range want {
				labels := serviceLabels(svc)
				if got := counterValue(f, labels); got != float64(n) {
					t.Errorf("%s%v = %v, want %d (requests sent for %s.shop)", perServiceFamily, labels, got, n, svc)
				}
			}
			if len(f.GetMetric()) != len(want) {
				t.Errorf("%s has %d series, want %d: %v", perServiceFamily, len(f.GetMetric()), len(want), f.GetMetric())
			}

			// /stats shows the full names, Envoy's way.
			text := get(t, srv.URL+"/stats")
			for _, line := range []string{
				fmt.Sprintf("wasmcustom.reqcount.requests_counted: %d", total),
				fmt.Sprintf("wasmcustom.reqcount.destination_service_name=.=web;.;destination_service_namespace=.=shop;.;requests_total: %d", want["web"]),
			} {
				if !strings.Contains(text, line+"\n") {
					t.Errorf("/stats has no line %q:\n%s", line, text)
				}
			}
		})
	}
}

func serviceLabels(svc string) map[string]string {
	return map[string]string{labelService: svc, labelNamespace: "shop"}
}

// counterValue returns the value of f's series with exactly labels (nil: none),
// or -1 if there is none.
func counterValue(f *dto.MetricFamily, labels map[string]string) float64 {
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if maps.Equal(got, labels) {
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

// get fetches url and returns its body, failing on anything but a 200.
func get(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	return string(body)
}

// scrape fetches a Prometheus text exposition and parses it with Prometheus's
// own parser, failing on what Prometheus would refuse.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	body := get(t, url)
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("GET %s: Prometheus's parser refuses it: %v\n%s", url, err, body)
	}
	return fams
}
