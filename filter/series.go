package main

import (
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"

	"github.com/reqcount/reqcount/filter/key"
	"github.com/reqcount/reqcount/filter/sizeof"
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
//
// A key's counter id lives on its table entry (Entry.Series) while the key is
// held; the names defined are remembered by a 64-bit hash in a set with no
// pointers, so that a key that was dropped and comes back defines its name again
// (Envoy returns the same stat) without counting as a new one. A map of names to
// ids held a string header and a map slot per key for as long as the VM lived.
type series struct {
	defined nameSet
	max     int
}

func newSeries(max int) series { return series{max: max} }

// meter brings key e's series up to date with the requests counted since the last
// time: called by the flusher once per flush interval per key (at the key's
// slice), and for every key at shutdown. No host call is made per request for it.
func (p *pluginContext) meter(e *table.Entry) {
	n := e.Unmetered
	if n == 0 {
		return
	}
	e.Unmetered = 0
	if !e.SeriesDefined {
		h := nameHash(e.Key)
		known := p.series.defined.has(h)
		if !known && p.series.defined.len() >= p.series.max {
			p.tallies.seriesOverflow += n
			return
		}
		id, ok := defineCounter(seriesName(e.Key))
		if !ok {
			p.tallies.seriesFailed += n
			return
		}
		if !known {
			p.series.defined.add(h)
		}
		e.Series, e.SeriesDefined = uint32(id), true
	}
	if !incrementCounter(proxywasm.MetricCounter(e.Series), n) {
		p.tallies.seriesFailed += n
	}
}

// nameHash is a key's 64-bit FNV-1a hash, never 0: two keys of one worker share
// one only with a chance of about n²/2⁶⁵ for n keys.
func nameHash(k string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(k); i++ {
		h ^= uint64(k[i])
		h *= 1099511628211
	}
	return h | 1
}

// nameSet is a set of non-zero 64-bit hashes: open addressing, linear probing,
// at most three quarters full, never shrinking (names are never forgotten), no pointers.
type nameSet struct {
	slots []uint64 // len 0 or a power of two; 0 is free
	n     int
}

func (s *nameSet) len() int { return s.n }

// bytes is the memory the set holds.
func (s *nameSet) bytes() uint64 { return sizeof.Slice(s.slots) }

func (s *nameSet) has(h uint64) bool {
	if s.n == 0 {
		return false
	}
	mask := uint64(len(s.slots) - 1)
	for i := h & mask; s.slots[i] != 0; i = (i + 1) & mask {
		if s.slots[i] == h {
			return true
		}
	}
	return false
}

// add inserts h, which must not be held.
func (s *nameSet) add(h uint64) {
	if 4*(s.n+1) > 3*len(s.slots) {
		old := s.slots
		s.slots = make([]uint64, max(2*len(old), 64))
		for _, v := range old {
			if v != 0 {
				s.place(v)
			}
		}
	}
	s.place(h)
	s.n++
}

func (s *nameSet) place(h uint64) {
	mask := uint64(len(s.slots) - 1)
	i := h & mask
	for s.slots[i] != 0 {
		i = (i + 1) & mask
	}
	s.slots[i] = h
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
