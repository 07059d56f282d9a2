package external

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/reqcount/reqcount/messages"
	"github.com/reqcount/reqcount/scaler/store"
)

// The scalerMetadata fields a ScaledObject's trigger sets. Each may also be
// given as <field>FromEnv, which KEDA resolves from the target's container
// environment before it calls the scaler.
const (
	// FieldService is the Kubernetes Service whose requests count: a DNS-1123
	// label, as the filter reports it in "svc". Required.
	FieldService = "service"
	// FieldNamespace is the Service's namespace. Default: the ScaledObject's.
	FieldNamespace = "namespace"
	// FieldTarget is the requests per second one replica should take: the
	// HPA's AverageValue target (KEDA's default metricType). Required, > 0.
	FieldTarget = "targetRequestsPerSecond"
	// FieldWindow is how far back activity and rate look, a Go duration of
	// whole seconds. Default DefaultWindow.
	FieldWindow = "window"
)

// DefaultWindow is the window without FieldWindow: four of the filter's
// default 30s flush intervals, so the rate averages four reports of every
// Envoy and a service stays active for two minutes after its last request.
const DefaultWindow = 2 * time.Minute

// kedaFields are the metadata keys KEDA's external-push trigger itself reads
// and passes on with the rest; they are not the scaler's to refuse.
var kedaFields = map[string]bool{"scalerAddress": true, "enableTLS": true, "unsafeSsl": true}

// ourFields are the fields of the scaler, in the order errors check them.
var ourFields = []string{FieldService, FieldNamespace, FieldTarget, FieldWindow}

// Target is what a ScaledObject's trigger asks for.
type Target struct {
	// Key is the service and namespace counted.
	Key store.Key
	// RequestsPerSecond is the per-replica target.
	RequestsPerSecond float64
	// Window is how far back IsActive and GetMetrics look.
	Window time.Duration
}

// MetricName is the name of the target's one metric, as GetMetricSpec
// announces it and GetMetrics expects it back (KEDA adds its own sN- prefix in
// front, and takes it off again before it calls).
func (t Target) MetricName() string {
	return "reqcount-" + t.Key.Namespace + "-" + t.Key.Service
}

// parseRef reads ref's scalerMetadata with the store's limits.
func parseRef(ref *pb.ScaledObjectRef, st *store.Store) (Target, error) {
	if ref == nil {
		return Target{}, invalid("scaledObjectRef", "missing")
	}
	return ParseTrigger(ref.GetScalerMetadata(), ref.GetNamespace(), st.MaxWindow(), st.Resolution())
}

// ParseTrigger reads a trigger's scalerMetadata md, for a ScaledObject in
// namespace, as a scaler with the given -max-window and -resolution does.
// Every problem is an error (an InvalidArgument status, as gRPC answers it)
// whose message starts with scalerMetadata.<field>.
func ParseTrigger(md map[string]string, namespace string, maxWindow, res time.Duration) (Target, error) {
	for _, k := range slices.Sorted(maps.Keys(md)) {
		if !kedaFields[k] && !slices.Contains(ourFields, strings.TrimSuffix(k, "FromEnv")) {
			return Target{}, invalid(k, "unknown field; the scaler reads "+strings.Join(ourFields, ", ")+
				" (and KEDA's own scalerAddress, enableTLS, unsafeSsl)")
		}
	}
	get := func(f string) (string, bool) {
		if v, ok := md[f]; ok {
			return v, true
		}
		v, ok := md[f+"FromEnv"]
		return v, ok
	}
	var t Target
	svc, ok := get(FieldService)
	switch {
	case !ok || svc == "":
		return Target{}, invalid(FieldService, "required: the Kubernetes Service whose requests count, e.g. \"web\"")
	case !messages.IsDNS1123Label(svc):
		return Target{}, invalid(FieldService, fmt.Sprintf("%q is not a DNS-1123 label (the Service's name, not a host name)", svc))
	}
	ns, ok := get(FieldNamespace)
	if !ok || ns == "" {
		ns = namespace
	}
	switch {
	case ns == "":
		return Target{}, invalid(FieldNamespace, "not set, and the ScaledObject has no namespace")
	case !messages.IsDNS1123Label(ns):
		return Target{}, invalid(FieldNamespace, fmt.Sprintf("%q is not a DNS-1123 label", ns))
	}
	t.Key = store.Key{Service: svc, Namespace: ns}

	v, ok := get(FieldTarget)
	if !ok || v == "" {
		return Target{}, invalid(FieldTarget, "required: the requests per second one replica should take, e.g. \"10\"")
	}
	rps, err := strconv.ParseFloat(v, 64)
	if err != nil || !(rps > 0) || rps > 1e12 {
		return Target{}, invalid(FieldTarget, fmt.Sprintf("%q: want a number of requests per second above 0", v))
	}
	t.RequestsPerSecond = rps

	t.Window = DefaultWindow
	if v, ok := get(FieldWindow); ok && v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return Target{}, invalid(FieldWindow, fmt.Sprintf("%q: want a Go duration such as \"2m\"", v))
		}
		t.Window = d
	}
	switch {
	case t.Window < res || t.Window > maxWindow:
		return Target{}, invalid(FieldWindow, fmt.Sprintf("%v: want %v to %v (the scaler's -max-window)", t.Window, res, maxWindow))
	case t.Window%res != 0:
		return Target{}, invalid(FieldWindow, fmt.Sprintf("%v: want a whole number of %v", t.Window, res))
	}
	return t, nil
}

// fieldError is the error of one bad field, kept for the metric's label.
type fieldError struct{ field, problem string }

func (e *fieldError) Error() string { return "scalerMetadata." + e.field + ": " + e.problem }

// GRPCStatus makes a fieldError an InvalidArgument status.
func (e *fieldError) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Error())
}

func invalid(field, problem string) error { return &fieldError{field, problem} }
