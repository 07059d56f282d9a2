package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/reqcount/reqcount/filter/key"
	"github.com/reqcount/reqcount/filter/table"
)

// The scaler's metric: one Envoy counter per (service, namespace), the requests
// counted for it. Its name is spelled the way Istio's own stats spelled their
// tags, "<tag>=.=<value>;.;" then the name, so that the tag extractors Istio's
// bootstrap generates for meshConfig.defaultConfig.extraStatTags
// [destination_service_name, destination_service_namespace] (regex
// "(destination_service_name=\.=(.*?);\.;)"; not in the bootstrap by default since
// Istio 1.18, see envoy/istio/mesh-stats.yaml) cut the tags out of the name and
// turn them into labels. Envoy prefixes the name with "wasmcustom."; after extraction it
// is "wasmcustom.reqcount.requests_total", which /stats/prometheus exposes as
//
//	reqcount_requests_total{destination_service_name="web",destination_service_namespace="shop"}
//
// Plain Envoy gets the same labels from the stats_tags in envoy/envoy.yaml.
const (
	seriesPrefix    = "reqcount.destination_service_name=.="
	seriesNamespace = ";.;destination_service_namespace=.="
	seriesSuffix    = ";.;requests_total"
)

// seriesName returns the metric name of key "svc.ns".
func seriesName(k string) string {
	svc, ns := key.Split(k)
	return seriesPrefix + svc + seriesNamespace + ns + seriesSuffix
}

// series are the per-service counters this worker has defined. Envoy never
// deletes a stat while the plugin lives, so every name defined is memory for good:
// a worker defines at most max of them (max_keys), and the requests of keys beyond
// that are tallied in reqcount.series_overflow instead.
type series struct {
	ids map[string]proxywasm.MetricCounter
	max int
}

func newSeries(max int) series {
	return series{ids: make(map[string]proxywasm.MetricCounter, min(max, 64)), max: max}
}

// meter brings key e's series up to date with the requests counted since the last
// time: called by the flusher once per flush interval per key (at the key's
// slice), and for every key at shutdown. No host call is made per request for it.
func (p *pluginContext) meter(e *table.Entry) {
	n := e.Unmetered
	if n == 0 {
		return
	}
	e.Unmetered = 0
	id, ok := p.series.ids[e.Key]
	if !ok {
		if len(p.series.ids) >= p.series.max {
			p.tallies.seriesOverflow += n
			return
		}
		if id, ok = defineCounter(seriesName(e.Key)); !ok {
			p.tallies.seriesFailed += n
			return
		}
		p.series.ids[e.Key] = id
	}
	if !incrementCounter(id, n) {
		p.tallies.seriesFailed += n
	}
}

// defineCounter defines a counter, turning the SDK's panic on a host refusal into
// false: a metric the host refuses must not crash the VM or lose the flush.
func defineCounter(name string) (id proxywasm.MetricCounter, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return proxywasm.DefineCounterMetric(name), true
}

// incrementCounter adds n to a counter, false if the host refused.
func incrementCounter(id proxywasm.MetricCounter, n uint64) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	id.Increment(n)
	return true
}
