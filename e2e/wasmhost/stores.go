package wasmhost

import (
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
)

// metric is one stat. Like Envoy's, it is process-wide: every worker that
// defines the same (type, name) shares it.
type metric struct {
	typ   MetricType
	name  string
	value atomic.Int64 // counter, gauge; histogram: count

	mu      sync.Mutex
	sum     uint64   // histogram
	buckets []uint64 // histogram: values ≤ HistogramBounds[i], not cumulative
}

// HistogramBounds are the upper bounds of Envoy's default histogram buckets
// (stats_config.histogram_bucket_settings unset: Envoy's
// HistogramSettingsImpl::defaultBuckets), for a histogram's values.
var HistogramBounds = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

func (m *metric) record(v uint64) {
	m.mu.Lock()
	m.sum += v
	if m.buckets == nil {
		m.buckets = make([]uint64, len(HistogramBounds))
	}
	for i, b := range HistogramBounds {
		if float64(v) <= b {
			m.buckets[i]++
			break
		}
	}
	m.mu.Unlock()
	m.value.Add(1)
}

func (m *metric) snapshot() Metric {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := Metric{Name: m.name, Type: m.typ, Value: m.value.Load(), Sum: m.sum}
	if m.typ == MetricHistogram {
		out.Buckets = make([]uint64, len(HistogramBounds))
		var cum uint64
		for i := range HistogramBounds {
			if m.buckets != nil {
				cum += m.buckets[i]
			}
			out.Buckets[i] = cum
		}
	}
	return out
}

type metricKey struct {
	typ  MetricType
	name string
}

type metricStore struct {
	mu    sync.Mutex
	byKey map[metricKey]*metric
}

func (s *metricStore) init() { s.byKey = map[metricKey]*metric{} }

func (s *metricStore) define(t MetricType, name string) *metric {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := metricKey{t, name}
	m := s.byKey[k]
	if m == nil {
		m = &metric{typ: t, name: name}
		s.byKey[k] = m
	}
	return m
}

func (s *metricStore) lookup(t MetricType, name string) *metric {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byKey[metricKey{t, name}]
}

func (s *metricStore) all() []Metric {
	s.mu.Lock()
	ms := make([]*metric, 0, len(s.byKey))
	for _, m := range s.byKey {
		ms = append(ms, m)
	}
	s.mu.Unlock()
	out := make([]Metric, len(ms))
	for i, m := range ms {
		out[i] = m.snapshot()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Type < out[j].Type
	})
	return out
}

// sharedData is proxy-wasm-cpp-host's SharedData for one vm_id: values with
// a CAS token that changes on every write.
type sharedData struct {
	mu      sync.Mutex
	values  map[string]sharedValue
	nextCas uint32
	largest int // bytes of the largest value ever set
}

type sharedValue struct {
	data []byte
	cas  uint32
}

func (s *sharedData) largestValue() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.largest
}

func (s *sharedData) init() {
	s.values = map[string]sharedValue{}
	s.nextCas = 1
}

func (s *sharedData) get(key string) ([]byte, uint32, Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.values[key]
	if !ok {
		return nil, 0, StatusNotFound
	}
	return v.data, v.cas, StatusOK
}

// set stores value; a non-zero cas must match the current token of an
// existing key (CasMismatch otherwise); cas 0 or a new key always succeeds.
func (s *sharedData) set(key string, value []byte, cas uint32) Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.values[key]; ok && cas != 0 && cas != v.cas {
		return StatusCasMismatch
	}
	s.values[key] = sharedValue{data: append([]byte(nil), value...), cas: s.nextCas}
	s.largest = max(s.largest, len(value))
	s.nextCas++
	if s.nextCas == 0 {
		s.nextCas = 1
	}
	return StatusOK
}

// queueStore holds the shared queues of one vm_id.
type queueStore struct {
	mu      sync.Mutex
	byName  map[string]*queue
	byToken map[uint32]*queue
	next    uint32
}

type queue struct {
	token uint32
	items [][]byte
	owner *Worker // gets proxy_on_queue_ready
}

func (s *queueStore) init() {
	s.byName = map[string]*queue{}
	s.byToken = map[uint32]*queue{}
	s.next = 1
}

// register creates the queue or takes it over: like Envoy, the last worker
// to register a queue is the one notified when it gets data.
func (s *queueStore) register(w *Worker, vmID, name string) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := vmID + "\x00" + name
	q := s.byName[key]
	if q == nil {
		q = &queue{token: s.next}
		s.next++
		s.byName[key] = q
		s.byToken[q.token] = q
	}
	q.owner = w
	return q.token
}

func (s *queueStore) resolve(vmID, name string) (uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.byName[vmID+"\x00"+name]
	if q == nil {
		return 0, false
	}
	return q.token, true
}

func (s *queueStore) dequeue(token uint32) ([]byte, Status) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.byToken[token]
	if q == nil {
		return nil, StatusNotFound
	}
	if len(q.items) == 0 {
		return nil, StatusEmpty
	}
	item := q.items[0]
	q.items = q.items[1:]
	return item, StatusOK
}

func (s *queueStore) enqueue(token uint32, data []byte) Status {
	s.mu.Lock()
	q := s.byToken[token]
	if q == nil {
		s.mu.Unlock()
		return StatusNotFound
	}
	q.items = append(q.items, append([]byte(nil), data...))
	owner := q.owner
	s.mu.Unlock()
	owner.post(func() { owner.queueReady(token) }, true)
	return StatusOK
}

func (w *Worker) queueReady(token uint32) {
	if w.crashed != nil || w.deleted || w.fns[cbQueueReady] == nil {
		return
	}
	w.current = rootID
	_, _ = w.call2(cbQueueReady, rootID, token)
}

// logStore keeps the captured log lines of a host.
type logStore struct {
	mu      sync.Mutex
	lines   []LogLine
	max     int
	dropped uint64
	out     io.Writer
}

func (s *logStore) init(max int, out io.Writer) {
	s.max = max
	s.out = out
}

func (s *logStore) add(worker int, level LogLevel, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out != nil {
		fmt.Fprintf(s.out, "[worker %d] %s: %s\n", worker, level, msg)
	}
	if len(s.lines) >= s.max {
		s.dropped++
		return
	}
	s.lines = append(s.lines, LogLine{Worker: worker, Level: level, Message: msg})
}

func (s *logStore) messages(level LogLevel) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.lines {
		if l.Level == level {
			out = append(out, l.Message)
		}
	}
	return out
}

func (s *logStore) all() []LogLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]LogLine(nil), s.lines...)
}

func (s *logStore) droppedCount() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}
