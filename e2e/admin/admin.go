// Package admin is the stats part of Envoy's admin listener for the e2e wasm
// host: /stats and /stats/prometheus over the metrics the module defined,
// named and tagged as Envoy would name and tag them, so that `make run` and
// the tests can be scraped the way a real Envoy is.
//
//	tags, err := admin.LoadBootstrap("envoy/envoy.yaml") // its stats_config.stats_tags
//	srv := &http.Server{Handler: admin.Handler(admin.HostStats(host), tags)}
//
// What Envoy does and this follows: a module's metric "reqcount.x" is the stat
// "wasmcustom.reqcount.x" (Namespace); /stats lists full names; for
// /stats/prometheus each full name goes through the bootstrap's tag
// extractors (Tags, Envoy's rules), loses the "wasmcustom." namespace and is
// sanitized (PrometheusName), and the result is written with Prometheus's own
// encoder (WritePrometheus).
package admin

import (
	"bytes"
	"net/http"

	"github.com/reqcount/reqcount/e2e/wasmhost"
)

// HostStats returns a function that snapshots the counters and gauges h's
// module defined, under the full names Envoy gives them ("wasmcustom." +
// the module's name), histograms with their buckets.
func HostStats(h *wasmhost.Host) func() []Stat {
	return func() []Stat {
		ms := h.Metrics()
		stats := make([]Stat, 0, len(ms))
		for _, m := range ms {
			var t Type
			switch m.Type {
			case wasmhost.MetricCounter:
				t = Counter
			case wasmhost.MetricGauge:
				t = Gauge
			case wasmhost.MetricHistogram:
				stats = append(stats, Stat{Name: Namespace + "." + m.Name, Type: Histogram, Value: uint64(m.Value),
					Sum: m.Sum, Bounds: wasmhost.HistogramBounds, Buckets: m.Buckets})
				continue
			default:
				continue
			}
			// Envoy's gauges are unsigned: a negative one reads as it
			// wraps around there.
			stats = append(stats, Stat{Name: Namespace + "." + m.Name, Type: t, Value: uint64(m.Value)})
		}
		return stats
	}
}

// Handler serves, from a snapshot of stats taken per request:
//
//   - /stats: Envoy's text format (WriteText); /stats?format=prometheus is
//     /stats/prometheus, as in Envoy.
//   - /stats/prometheus: the Prometheus text exposition (WritePrometheus),
//     with tags' extraction (nil: none).
//
// Other paths are 404; methods other than GET and HEAD are 405.
func Handler(stats func() []Stat, tags *Tags) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("format") == "prometheus" {
			servePrometheus(w, stats(), tags)
			return
		}
		var b bytes.Buffer
		_ = WriteText(&b, stats())
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		_, _ = w.Write(b.Bytes())
	})
	mux.HandleFunc("/stats/prometheus", func(w http.ResponseWriter, _ *http.Request) {
		servePrometheus(w, stats(), tags)
	})
	return getOnly(mux)
}

func servePrometheus(w http.ResponseWriter, stats []Stat, tags *Tags) {
	var b bytes.Buffer
	if err := WritePrometheus(&b, stats, tags); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", string(PrometheusFormat))
	_, _ = w.Write(b.Bytes())
}

func getOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}
