// Package config parses and validates the filter's configuration: the JSON an Envoy
// filter carries in its `configuration` field (Istio: the WasmPlugin's pluginConfig).
//
// Parsing is a plain function from bytes to a Config, with no SDK import, so it is
// tested directly and reused by the tests that check the example Envoy configs.
package config

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/reqcount/reqcount/messages"
)

// Mode says how counts are put on the wire.
type Mode uint8

const (
	// ModeSingle sends one POST per key, its body one RequestCount object: what the
	// operator's /informer/incoming-request reads. The default.
	ModeSingle Mode = iota
	// ModeBatch sends one POST per flush, its body a JSON array of RequestCount.
	ModeBatch
)

// String returns the configuration spelling of m.
func (m Mode) String() string {
	if m == ModeBatch {
		return "batch"
	}
	return "single"
}

// Aggregate says who speaks for a worker's counts.
type Aggregate uint8

const (
	// AggregateWorker: each worker (VM) reports its own counts.
	AggregateWorker Aggregate = iota
	// AggregateEnvoy: the workers of one Envoy merge their counts through
	// proxy-wasm shared data and one of them reports for all.
	AggregateEnvoy
)

// String returns the configuration spelling of a.
func (a Aggregate) String() string {
	if a == AggregateEnvoy {
		return "envoy"
	}
	return "worker"
}

// KeySource says where a request's (service, namespace) comes from.
type KeySource uint8

const (
	// KeySourceAuthority parses the :authority (Host) header: svc, svc.ns, svc.ns.svc,
	// svc.ns.svc.<cluster_domain>, any of them with a port. The default.
	KeySourceAuthority KeySource = iota
	// KeySourceHeader reads the service and namespace from two request headers.
	KeySourceHeader
	// KeySourceStatic counts every request for one configured key and reads no header.
	KeySourceStatic
)

// String returns the configuration spelling of k.
func (k KeySource) String() string {
	switch k {
	case KeySourceHeader:
		return "header"
	case KeySourceStatic:
		return "static"
	}
	return "authority"
}

// Defaults for optional fields.
const (
	DefaultPath = "/informer/incoming-request"
	// DefaultFlushInterval is how often a worker reports each key it counted: see
	// the README's Sizing section for why 30s.
	DefaultFlushInterval = 30 * time.Second
	// DefaultWakeAfter is the silence after which a key's first request is reported
	// at once (a wake-up) instead of at its next regular report.
	DefaultWakeAfter = 30 * time.Second
	// DefaultAggregate is how counts are aggregated when aggregate is not set.
	DefaultAggregate        = AggregateEnvoy
	DefaultTimeout          = 2 * time.Second
	DefaultServiceHeader    = "x-service"
	DefaultNamespaceHeader  = "x-namespace"
	DefaultDefaultNamespace = "default"
	DefaultClusterDomain    = "cluster.local"
	DefaultMaxKeys          = 10000

	// DefaultHoldProbePath and DefaultHoldProbeInterval: the readiness check of
	// a cluster with held requests, HEAD <path> at most every interval.
	DefaultHoldProbePath     = "/"
	DefaultHoldProbeInterval = 250 * time.Millisecond
	// DefaultHoldTimeout is how long a request is held at most: well below
	// Envoy's stream_idle_timeout (5 min, which also bounds a held stream)
	// and the 60 s idle timeout of common load balancers in front of a
	// gateway, and above a typical cold start (a pod scheduled, pulled and
	// ready: seconds to tens of seconds). The README's Hold section says more.
	DefaultHoldTimeout = 30 * time.Second
	// DefaultHoldMax is how many requests a worker holds at once at most: a
	// held request costs the filter well under 256 bytes, and Envoy its
	// buffered headers (and body, bounded by flow control); 1 000 per worker
	// covers a cold burst on a busy gateway while keeping both small.
	DefaultHoldMax = 1000
	// MaxHoldMax bounds hold_max.
	MaxHoldMax = 100000
	// MinHoldProbeInterval bounds hold_probe_interval from below.
	MinHoldProbeInterval = 10 * time.Millisecond

	// DefaultMemoSize bounds the authority memo when memo_size is not set: 4 spellings
	// per key, at most 4096.
	DefaultMemoSize = 4096

	// MaxMaxKeys bounds max_keys so that a typo cannot ask a worker for gigabytes.
	MaxMaxKeys = 1 << 20
	// MaxMemoSize bounds memo_size likewise.
	MaxMemoSize = 1 << 20
	// MaxPatterns bounds each of include, exclude, ignore_paths and
	// ignore_user_agents: they are lists a person writes, not data.
	MaxPatterns = 256
	// MaxSlices is the most ticks a flush interval is split into (Slices).
	MaxSlices = 64
	// MinTickPeriod is the shortest tick period Slices chooses when it splits an
	// interval.
	MinTickPeriod = 100 * time.Millisecond
	// MaxConfigSize bounds the configuration document.
	MaxConfigSize = 64 << 10
)

// Config is a validated filter configuration. Build one with Parse; the zero value
// is not valid.
type Config struct {
	// Cluster is the Envoy cluster that receives flushes. Required.
	Cluster string
	// Authority is the :authority of flush calls. Defaults to Cluster.
	Authority string
	// Path is the :path of flush calls. Defaults to DefaultPath.
	Path string
	// Mode is single (default) or batch.
	Mode Mode
	// FlushInterval is the tick period: how often counts are sent. Defaults to 1s;
	// whole milliseconds, at least 1ms.
	FlushInterval time.Duration
	// Timeout bounds each flush call. Defaults to 2s; whole milliseconds, at least 1ms.
	Timeout time.Duration
	// KeySource is where the (service, namespace) of a request comes from.
	KeySource KeySource
	// ServiceHeader and NamespaceHeader name the request headers read when KeySource
	// is KeySourceHeader. Default x-service and x-namespace. Lower-case.
	ServiceHeader, NamespaceHeader string
	// Service and Namespace are the key counted for every request when KeySource is
	// KeySourceStatic.
	Service, Namespace string
	// DefaultNamespace is the namespace of a bare service name in an authority, or
	// of a request with no namespace header. Defaults to "default".
	DefaultNamespace string
	// ClusterDomain is the cluster's DNS suffix accepted after svc.ns.svc in an
	// authority. Defaults to "cluster.local".
	ClusterDomain string
	// MaxKeys is the most distinct (service, namespace) keys a worker holds.
	// Defaults to 10000; at most MaxMaxKeys.
	MaxKeys int
	// WakeAfter is the silence after which a key's first request is sent at once,
	// from the request callback. Zero turns wake-ups off. Defaults to 30s.
	WakeAfter time.Duration
	// Include, when not empty, limits counting to the keys one of its patterns
	// matches; Exclude names keys never counted. Checked once per key.
	Include, Exclude []Pattern
	// IgnorePaths and IgnoreUserAgents are prefixes of :path and user-agent whose
	// requests are not counted (probes, scrapes). Empty: those headers are not read.
	IgnorePaths, IgnoreUserAgents []string
	// Hold lists the keys whose requests are held while this worker does not
	// know their destination to be ready (a wake-up, a readiness check pending
	// or failed, a response without a healthy host), until a check of the
	// routed cluster answers from the service, HoldTimeout passes, or the
	// client resets. Empty (the default): nothing is ever held. Checked once
	// per key.
	Hold []Pattern
	// HoldProbePath is the path of the readiness check (HEAD), made at most
	// every HoldProbeInterval per cluster while something is held for it.
	HoldProbePath     string
	HoldProbeInterval time.Duration
	// HoldTimeout is how long a request is held at most; HoldMax how many a
	// worker holds at once (beyond it a request passes).
	HoldTimeout time.Duration
	HoldMax     int
	// Aggregate is worker or envoy: see Aggregate.
	Aggregate Aggregate
	// MemoSize bounds the authority memo (authorities remembered with their entry).
	// Zero turns the memo off. Defaults to min(4 × MaxKeys, DefaultMemoSize).
	MemoSize int
}

// Slices is how many ticks one flush interval is split into: each tick reports
// the keys of one slice, so a tick handles about 1/Slices of a worker's keys and
// each key is still reported once per FlushInterval. It is the largest n ≤
// MaxSlices that divides FlushInterval into whole-millisecond ticks of at least
// MinTickPeriod (1 when the interval is shorter than two such ticks).
func (c Config) Slices() int {
	ms := int64(c.FlushInterval / time.Millisecond)
	for n := int64(MaxSlices); n > 1; n-- {
		if ms%n == 0 && time.Duration(ms/n)*time.Millisecond >= MinTickPeriod {
			return int(n)
		}
	}
	return 1
}

// TickPeriod is the period of the plugin's timer: FlushInterval / Slices.
func (c Config) TickPeriod() time.Duration {
	return c.FlushInterval / time.Duration(c.Slices())
}

// Error is a configuration that was refused. Field is the JSON field at fault, or
// empty when the document as a whole is.
type Error struct {
	Field  string
	Reason string
}

// Error returns a one-line message naming the field and why it was refused.
func (e *Error) Error() string {
	if e.Field == "" {
		return "configuration: " + e.Reason
	}
	return fmt.Sprintf("configuration: field %q: %s", e.Field, e.Reason)
}

func fieldErr(field, format string, args ...any) *Error {
	return &Error{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// document is the JSON shape. Pointers tell "absent" from "empty".
type document struct {
	Cluster          *string
	Authority        *string
	Path             *string
	Mode             *string
	FlushInterval    *string
	Timeout          *string
	KeySource        *string
	ServiceHeader    *string
	NamespaceHeader  *string
	Service          *string
	Namespace        *string
	DefaultNamespace *string
	ClusterDomain    *string
	MaxKeys          *int64
	WakeAfter        *string
	Include          []string
	Exclude          []string
	IgnorePaths      []string
	IgnoreUserAgents []string
	MemoSize         *int64
	Aggregate        *string

	Hold              []string
	HoldProbePath     *string
	HoldProbeInterval *string
	HoldTimeout       *string
	HoldMax           *int64
}

// fields are the configuration's fields, spelled exactly, in the order the
// unknown-field message lists them. dest returns where a field's value goes in a
// document: a **string, a **int64 or a *[]string.
var fields = [...]struct {
	name string
	dest func(*document) any
}{
	{"cluster", func(d *document) any { return &d.Cluster }},
	{"authority", func(d *document) any { return &d.Authority }},
	{"path", func(d *document) any { return &d.Path }},
	{"mode", func(d *document) any { return &d.Mode }},
	{"flush_interval", func(d *document) any { return &d.FlushInterval }},
	{"timeout", func(d *document) any { return &d.Timeout }},
	{"key_source", func(d *document) any { return &d.KeySource }},
	{"service_header", func(d *document) any { return &d.ServiceHeader }},
	{"namespace_header", func(d *document) any { return &d.NamespaceHeader }},
	{"service", func(d *document) any { return &d.Service }},
	{"namespace", func(d *document) any { return &d.Namespace }},
	{"default_namespace", func(d *document) any { return &d.DefaultNamespace }},
	{"cluster_domain", func(d *document) any { return &d.ClusterDomain }},
	{"max_keys", func(d *document) any { return &d.MaxKeys }},
	{"wake_after", func(d *document) any { return &d.WakeAfter }},
	{"include", func(d *document) any { return &d.Include }},
	{"exclude", func(d *document) any { return &d.Exclude }},
	{"ignore_paths", func(d *document) any { return &d.IgnorePaths }},
	{"ignore_user_agents", func(d *document) any { return &d.IgnoreUserAgents }},
	{"memo_size", func(d *document) any { return &d.MemoSize }},
	{"aggregate", func(d *document) any { return &d.Aggregate }},
	{"hold", func(d *document) any { return &d.Hold }},
	{"hold_probe_path", func(d *document) any { return &d.HoldProbePath }},
	{"hold_probe_interval", func(d *document) any { return &d.HoldProbeInterval }},
	{"hold_timeout", func(d *document) any { return &d.HoldTimeout }},
	{"hold_max", func(d *document) any { return &d.HoldMax }},
}

// Parse reads a JSON configuration document, applies defaults and validates every
// field. The error, an *Error, names the field at fault and why.
func Parse(data []byte) (Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Config{}, &Error{Reason: `empty configuration: at least {"cluster": "<envoy cluster>"} is required`}
	}
	if len(data) > MaxConfigSize {
		return Config{}, &Error{Reason: fmt.Sprintf("configuration is %d bytes, more than the %d allowed", len(data), MaxConfigSize)}
	}
	var doc document
	if err := doc.read(data); err != nil {
		return Config{}, err
	}
	return doc.validate()
}

// read decodes data, a JSON object, into d. It refuses what the parser it
// replaced (encoding/json's Decoder, after a pass over the field names) refused,
// with the same messages and in the same order: a field name that is unknown,
// not spelled exactly or repeated, unless a syntax error comes before it; then
// any syntax error; then the first value of the wrong type; then data after the
// object. null for the whole document or for a field means absent.
func (d *document) read(data []byte) error {
	r := reader{data: data}
	typeErr, err := d.readTop(&r)
	if _, named := err.(*Error); named {
		return err
	}
	if r.tooDeep != nil {
		err = r.tooDeep
	}
	switch {
	case err != nil:
		return syntaxErr(err)
	case typeErr != nil:
		return typeErr
	}
	if _, err := r.peek(); err == nil {
		return &Error{Reason: "unexpected data after the JSON object"}
	}
	return nil
}

// syntaxErr describes a syntax error or a premature end of the document.
func syntaxErr(err error) *Error {
	if se, ok := err.(*syntaxError); ok {
		return &Error{Reason: "not valid JSON at byte " + strconv.Itoa(se.offset) + ": " + se.msg}
	}
	return &Error{Reason: "not valid JSON: unexpected end of input"}
}

// readTop reads the document's value: an object into d. null leaves d empty; a
// value of another kind is a type error.
func (d *document) readTop(r *reader) (typeErr *Error, err error) {
	k, err := r.peekKind()
	if err != nil {
		return nil, err
	}
	if k == kindObject {
		return d.readObject(r)
	}
	if _, err := r.skip(); err != nil || k == kindNull {
		return nil, err
	}
	return &Error{Reason: "must be a JSON object, not " + k.String()}, nil
}

// readObject reads the document's object member by member. A field name that is
// unknown or repeated is returned as err at once; the first type error is
// returned once the object has been read.
func (d *document) readObject(r *reader) (typeErr *Error, err error) {
	var seen uint32 // bit i: fields[i] was given
	more, err := r.enter()
	for err == nil && more {
		var te *Error
		if te, err = d.readMember(r, &seen); typeErr == nil {
			typeErr = te
		}
		if err == nil {
			more, err = r.next()
		}
	}
	return typeErr, err
}

// readMember reads one member of the document's object. Field names are matched
// exactly: encoding/json would have matched "Cluster" to "cluster".
func (d *document) readMember(r *reader, seen *uint32) (typeErr *Error, err error) {
	name, err := r.name(true)
	if err != nil {
		return nil, err
	}
	i := fieldIndex(name)
	switch {
	case i < 0:
		return nil, unknownField(name)
	case *seen&(1<<i) != 0:
		return nil, fieldErr(name, "given more than once")
	}
	*seen |= 1 << i
	if err := r.colon(); err != nil {
		return nil, err
	}
	return readField(r, name, fields[i].dest(d))
}

// fieldIndex returns the index in fields of the field called name, or -1.
func fieldIndex(name string) int {
	for i := range fields {
		if fields[i].name == name {
			return i
		}
	}
	return -1
}

// unknownField is the error for a field name that is not one of fields.
func unknownField(name string) *Error {
	known := fields[0].name
	for _, f := range fields[1:] {
		known += ", " + f.name
	}
	return &Error{Field: name, Reason: "unknown field (known: " + known + ")"}
}

// readField reads the value of field into dest (see fields). A value of the
// wrong kind is read whole and returned as typeErr.
func readField(r *reader, field string, dest any) (typeErr *Error, err error) {
	k, err := r.peekKind()
	if err != nil {
		return nil, err
	}
	switch dest := dest.(type) {
	case **string:
		if k == kindString {
			s, err := r.str(true)
			if err == nil {
				*dest = &s
			}
			return nil, err
		}
	case **int64:
		if k == kindNumber {
			return readInt(r, field, dest)
		}
	case *[]string:
		if k == kindArray {
			return readList(r, field, dest)
		}
	}
	if _, err := r.skip(); err != nil || k == kindNull {
		return nil, err
	}
	return typeError(field, dest, k.String()), nil
}

// readInt reads a number that must be whole and fit an int64: encoding/json
// refused 1.5, 1e3 and 5.0 for an *int64, and so does it.
func readInt(r *reader, field string, dest **int64) (typeErr *Error, err error) {
	text, err := r.number()
	if err != nil {
		return nil, err
	}
	n, err := strconv.ParseInt(string(text), 10, 64)
	if err != nil {
		return typeError(field, dest, "number "+string(text)), nil
	}
	*dest = &n
	return nil, nil
}

// readList reads an array of strings. As with encoding/json, an empty array is an
// empty list (not nil) and a null element is an empty string.
func readList(r *reader, field string, dest *[]string) (typeErr *Error, err error) {
	list := []string{}
	more, err := r.enter()
	for err == nil && more {
		var k kind
		if k, err = r.peekKind(); err != nil {
			break
		}
		switch k {
		case kindString:
			var s string
			s, err = r.str(true)
			list = append(list, s)
		case kindNull:
			_, err = r.skip()
			list = append(list, "")
		default:
			if _, err = r.skip(); typeErr == nil {
				typeErr = typeError(field, dest, k.String())
			}
		}
		if err == nil {
			more, err = r.next()
		}
	}
	*dest = list
	return typeErr, err
}

// typeError is a value of the wrong kind for field; got names what was found.
func typeError(field string, dest any, got string) *Error {
	want := "a string"
	switch dest.(type) {
	case **int64:
		want = "a whole number"
	case *[]string:
		want = "a list of strings"
	}
	return &Error{Field: field, Reason: "must be " + want + ", not " + got}
}

func str(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}

func (d *document) validate() (Config, error) {
	c := Config{
		Cluster:          str(d.Cluster, ""),
		Path:             str(d.Path, DefaultPath),
		ServiceHeader:    str(d.ServiceHeader, DefaultServiceHeader),
		NamespaceHeader:  str(d.NamespaceHeader, DefaultNamespaceHeader),
		Service:          str(d.Service, ""),
		Namespace:        str(d.Namespace, ""),
		DefaultNamespace: str(d.DefaultNamespace, DefaultDefaultNamespace),
		ClusterDomain:    strings.TrimSuffix(strings.ToLower(str(d.ClusterDomain, DefaultClusterDomain)), "."),
		MaxKeys:          DefaultMaxKeys,
	}
	if c.Cluster == "" {
		return Config{}, fieldErr("cluster", "required: the Envoy cluster that receives flushes")
	}
	if !printable(c.Cluster) {
		return Config{}, fieldErr("cluster", "%q has spaces, control or non-ASCII characters", c.Cluster)
	}
	c.Authority = str(d.Authority, c.Cluster)
	if !isAuthority(c.Authority) {
		if d.Authority == nil {
			// An Istio cluster name (outbound|8013||host) is no valid :authority.
			return Config{}, fieldErr("authority", "defaults to cluster %q, which is not a valid :authority: set \"authority\" (host or host:port)", c.Cluster)
		}
		return Config{}, fieldErr("authority", "%q is not a valid :authority (host or host:port)", c.Authority)
	}
	if !strings.HasPrefix(c.Path, "/") || !printable(c.Path) {
		return Config{}, fieldErr("path", "%q must start with '/' and have no spaces, control or non-ASCII characters", c.Path)
	}

	switch m := str(d.Mode, "single"); m {
	case "single":
		c.Mode = ModeSingle
	case "batch":
		c.Mode = ModeBatch
	default:
		return Config{}, fieldErr("mode", "%q is not a mode: use \"single\" or \"batch\"", m)
	}

	var err error
	if c.FlushInterval, err = millis("flush_interval", d.FlushInterval, DefaultFlushInterval); err != nil {
		return Config{}, err
	}
	if c.Timeout, err = millis("timeout", d.Timeout, DefaultTimeout); err != nil {
		return Config{}, err
	}

	switch ks := str(d.KeySource, "authority"); ks {
	case "authority":
		c.KeySource = KeySourceAuthority
	case "header":
		c.KeySource = KeySourceHeader
	case "static":
		c.KeySource = KeySourceStatic
	default:
		return Config{}, fieldErr("key_source", "%q is not a key source: use \"authority\", \"header\" or \"static\"", ks)
	}

	for _, h := range []struct{ field, value string }{
		{"service_header", c.ServiceHeader}, {"namespace_header", c.NamespaceHeader},
	} {
		if !isHeaderName(h.value) {
			return Config{}, fieldErr(h.field, "%q is not a lower-case HTTP header name", h.value)
		}
	}
	if !messages.IsDNS1123Label(c.DefaultNamespace) {
		return Config{}, fieldErr("default_namespace", "%q is not a DNS-1123 label (lower-case alphanumerics and '-', at most 63 characters)", c.DefaultNamespace)
	}
	if !isDomain(c.ClusterDomain) {
		return Config{}, fieldErr("cluster_domain", "%q is not a DNS domain of DNS-1123 labels", str(d.ClusterDomain, ""))
	}

	if c.KeySource == KeySourceStatic {
		for _, f := range []struct{ field, value string }{{"service", c.Service}, {"namespace", c.Namespace}} {
			if f.value == "" {
				return Config{}, fieldErr(f.field, "required when key_source is \"static\"")
			}
			if !messages.IsDNS1123Label(f.value) {
				return Config{}, fieldErr(f.field, "%q is not a DNS-1123 label (lower-case alphanumerics and '-', at most 63 characters)", f.value)
			}
		}
	} else if c.Service != "" || c.Namespace != "" {
		field := "service"
		if c.Service == "" {
			field = "namespace"
		}
		return Config{}, fieldErr(field, "only used with key_source \"static\" (key_source is %q)", c.KeySource)
	}

	if d.MaxKeys != nil {
		if *d.MaxKeys < 1 || *d.MaxKeys > MaxMaxKeys {
			return Config{}, fieldErr("max_keys", "%d is out of range: must be from 1 to %d", *d.MaxKeys, MaxMaxKeys)
		}
		c.MaxKeys = int(*d.MaxKeys)
	}
	c.MemoSize = min(4*c.MaxKeys, DefaultMemoSize)
	if d.MemoSize != nil {
		if *d.MemoSize < 0 || *d.MemoSize > MaxMemoSize {
			return Config{}, fieldErr("memo_size", "%d is out of range: must be from 0 (no memo) to %d", *d.MemoSize, MaxMemoSize)
		}
		c.MemoSize = int(*d.MemoSize)
	}
	switch a := str(d.Aggregate, DefaultAggregate.String()); a {
	case "worker":
		c.Aggregate = AggregateWorker
	case "envoy":
		c.Aggregate = AggregateEnvoy
	default:
		return Config{}, fieldErr("aggregate", "%q is not a way to aggregate: use \"envoy\" or \"worker\"", a)
	}
	if c.WakeAfter, err = wakeAfter(d.WakeAfter); err != nil {
		return Config{}, err
	}
	if c.Include, err = patterns("include", d.Include); err != nil {
		return Config{}, err
	}
	if c.Exclude, err = patterns("exclude", d.Exclude); err != nil {
		return Config{}, err
	}
	if c.KeySource == KeySourceStatic && !c.Counts(c.Service, c.Namespace) {
		field := "exclude"
		if len(c.Include) > 0 && !MatchAny(c.Include, c.Service, c.Namespace) {
			field = "include"
		}
		return Config{}, fieldErr(field, "leaves out the static key %s.%s: nothing would ever be counted", c.Service, c.Namespace)
	}
	if c.IgnorePaths, err = prefixes("ignore_paths", d.IgnorePaths, true); err != nil {
		return Config{}, err
	}
	if c.IgnoreUserAgents, err = prefixes("ignore_user_agents", d.IgnoreUserAgents, false); err != nil {
		return Config{}, err
	}
	if err := c.parseHold(d); err != nil {
		return Config{}, err
	}
	return c, nil
}

// parseHold reads the hold fields.
func (c *Config) parseHold(d *document) error {
	var err error
	if c.Hold, err = patterns("hold", d.Hold); err != nil {
		return err
	}
	c.HoldProbePath = str(d.HoldProbePath, DefaultHoldProbePath)
	if !strings.HasPrefix(c.HoldProbePath, "/") || !printable(c.HoldProbePath) {
		return fieldErr("hold_probe_path", "%q must start with '/' and be visible ASCII", c.HoldProbePath)
	}
	if c.HoldProbeInterval, err = millis("hold_probe_interval", d.HoldProbeInterval, DefaultHoldProbeInterval); err != nil {
		return err
	}
	if c.HoldProbeInterval < MinHoldProbeInterval {
		return fieldErr("hold_probe_interval", "%v is shorter than %v: the checks would load the service", c.HoldProbeInterval, MinHoldProbeInterval)
	}
	if c.HoldTimeout, err = millis("hold_timeout", d.HoldTimeout, DefaultHoldTimeout); err != nil {
		return err
	}
	if c.HoldTimeout > 5*time.Minute {
		return fieldErr("hold_timeout", "%v is longer than Envoy's default stream_idle_timeout (5m), which would reset the held stream first", c.HoldTimeout)
	}
	c.HoldMax = DefaultHoldMax
	if d.HoldMax != nil {
		if *d.HoldMax < 1 || *d.HoldMax > MaxHoldMax {
			return fieldErr("hold_max", "%d is out of range: must be from 1 to %d", *d.HoldMax, MaxHoldMax)
		}
		c.HoldMax = int(*d.HoldMax)
	}
	return nil
}

// Holds reports whether requests of the key (svc, ns) may be held.
func (c Config) Holds(svc, ns string) bool { return MatchAny(c.Hold, svc, ns) }

// wakeAfter parses wake_after: like millis, but "0s" is allowed and turns wake-ups off.
func wakeAfter(p *string) (time.Duration, error) {
	if p != nil {
		if d, err := time.ParseDuration(*p); err == nil && d == 0 {
			return 0, nil
		}
	}
	return millis("wake_after", p, DefaultWakeAfter)
}

// prefixes checks a list of header-value prefixes: not empty, visible ASCII (and
// spaces, for user agents), paths starting with '/'.
func prefixes(field string, list []string, path bool) ([]string, error) {
	if len(list) > MaxPatterns {
		return nil, fieldErr(field, "has %d entries, more than the %d allowed", len(list), MaxPatterns)
	}
	for i, s := range list {
		switch {
		case s == "":
			return nil, fieldErr(field, "entry %d is empty: it would match every request", i)
		case path && !strings.HasPrefix(s, "/"):
			return nil, fieldErr(field, "entry %d %q must start with '/'", i, s)
		case path && !printable(s), !path && !printableOrSpace(s):
			return nil, fieldErr(field, "entry %d %q has control or non-ASCII characters", i, s)
		}
	}
	return list, nil
}

func printableOrSpace(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// millis parses a positive Go duration in whole milliseconds, the unit Envoy's tick
// period and call timeout take.
func millis(field string, p *string, def time.Duration) (time.Duration, error) {
	if p == nil {
		return def, nil
	}
	d, err := time.ParseDuration(*p)
	if err != nil {
		return 0, fieldErr(field, "%q is not a Go duration such as \"500ms\" or \"2s\"", *p)
	}
	if d <= 0 {
		return 0, fieldErr(field, "%q must be positive", *p)
	}
	if d%time.Millisecond != 0 {
		return 0, fieldErr(field, "%q must be a whole number of milliseconds", *p)
	}
	if d/time.Millisecond > math.MaxUint32 {
		return 0, fieldErr(field, "%q is too long", *p)
	}
	return d, nil
}

// printable reports whether s is visible ASCII: no spaces, controls or non-ASCII
// bytes, which have no place in a cluster name, an authority or a path.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// isAuthority reports whether s can be an HTTP :authority: RFC 3986's host
// characters (reg-name, IP literal) and a port.
func isAuthority(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~%!$&'()*+,;=:[]", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// isHeaderName reports whether s is a lower-case HTTP/2 header field name (RFC 9110 token).
func isHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func isDomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !messages.IsDNS1123Label(label) {
			return false
		}
	}
	return true
}
