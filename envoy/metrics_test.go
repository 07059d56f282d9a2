package envoy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	kjson "sigs.k8s.io/json"

	"github.com/reqcount/reqcount/e2e/admin"
	"github.com/reqcount/reqcount/messages"
)

// Checks of the examples that carry the filter's per-service counter to the
// scalers: the bootstraps' stats tags, Istio's extraStatTags, and the
// KubeElasti ElastiService that queries the series.

const (
	// perServiceStat is the counter the filter defines for web.shop, with the
	// namespace Envoy files it under.
	perServiceStat = "wasmcustom.reqcount.destination_service_name=.=web;.;destination_service_namespace=.=shop;.;requests_total"
	// perServiceName is its tag-extracted name; Prometheus shows it as
	// reqcount_requests_total.
	perServiceName = "wasmcustom.reqcount.requests_total"
	// perServiceFamily is the Prometheus metric name the scalers query.
	perServiceFamily = "reqcount_requests_total"

	kindIstioOperator = "IstioOperator"
	kindElastiService = "ElastiService"

	istioOperatorAPIVersion = "install.istio.io/v1alpha1"
	elastiAPIVersion        = "elasti.truefoundry.com/v1alpha1"
)

// perServiceTags are the labels the series must carry.
var perServiceTags = []admin.Tag{{Name: "destination_service_name", Value: "web"}, {Name: "destination_service_namespace", Value: "shop"}}

// checkPerService checks that tags turn the filter's per-service counter into
// the series the scalers query.
func checkPerService(tags *admin.Tags) error {
	name, got := tags.Extract(perServiceStat)
	prom, _ := admin.PrometheusName(name)
	if name != perServiceName || !slices.Equal(got, perServiceTags) {
		return fmt.Errorf("the filter's per-service counter %s comes out as %s %v, want %s %v: the stats tags "+
			"must be Istio's destination_service_name and destination_service_namespace extractors", perServiceStat, prom, got, perServiceFamily, perServiceTags)
	}
	return nil
}

// checkStatsTags checks a bootstrap's stats_config the way the admin of the e2e
// host reads it.
func checkStatsTags(js []byte) error {
	tags, err := admin.ParseBootstrap(js)
	if err != nil {
		return err
	}
	if err := checkPerService(tags); err != nil {
		return fmt.Errorf("stats_config: %w", err)
	}
	return nil
}

// checkIstioOperator checks an IstioOperator that carries only mesh settings:
// spec.meshConfig read strictly as Istio's MeshConfig, and the extraStatTags
// in it giving the per-service series its labels.
func checkIstioOperator(top map[string]json.RawMessage) error {
	if err := checkObject(top, istioOperatorAPIVersion); err != nil {
		return err
	}
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(top["spec"], &spec); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	for k := range spec {
		if k != "meshConfig" {
			return fmt.Errorf("spec.%s: this example carries only meshConfig (merge it into your own IstioOperator)", k)
		}
	}
	var mesh meshv1alpha1.MeshConfig
	if err := protojson.Unmarshal(spec["meshConfig"], &mesh); err != nil {
		return fmt.Errorf("spec.meshConfig: %w", err)
	}
	tags, err := admin.IstioTags(mesh.GetDefaultConfig().GetExtraStatTags()...)
	if err != nil {
		return err
	}
	if err := checkPerService(tags); err != nil {
		return fmt.Errorf("spec.meshConfig.defaultConfig.extraStatTags %q: %w", mesh.GetDefaultConfig().GetExtraStatTags(), err)
	}
	return nil
}

// checkObject checks apiVersion, the top-level fields and the metadata of a
// namespaced Kubernetes object.
func checkObject(top map[string]json.RawMessage, apiVersion string) error {
	var got string
	_ = json.Unmarshal(top["apiVersion"], &got)
	if got != apiVersion {
		return fmt.Errorf("apiVersion %q, want %q", got, apiVersion)
	}
	for k := range top {
		if !slices.Contains([]string{"apiVersion", "kind", "metadata", "spec"}, k) {
			return fmt.Errorf("unknown top-level field %q", k)
		}
	}
	var meta struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	}
	if err := json.Unmarshal(top["metadata"], &meta); err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	if !isDNSName(meta.Name, 1) || !messages.IsDNS1123Label(meta.Namespace) {
		return fmt.Errorf("metadata needs a name and a namespace (got %q, %q)", meta.Name, meta.Namespace)
	}
	return nil
}

// elastiServiceSpec mirrors ElastiServiceSpec of KubeElasti's CRD
// (operator/api/v1alpha1/elastiservice_types.go); decoded with unknown fields
// refused, like a structural CRD schema prunes them.
type elastiServiceSpec struct {
	ScaleTargetRef struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Name       string `json:"name"`
	} `json:"scaleTargetRef"`
	Service           string `json:"service"`
	MinTargetReplicas *int32 `json:"minTargetReplicas"`
	CooldownPeriod    *int32 `json:"cooldownPeriod"`
	Triggers          []struct {
		Type     string          `json:"type"`
		Metadata json.RawMessage `json:"metadata"`
	} `json:"triggers"`
	Autoscaler *struct {
		Type string `json:"type"`
		Name string `json:"name"`
	} `json:"autoscaler"`
	EnabledPeriod *struct {
		Schedule string `json:"schedule"`
		Duration string `json:"duration"`
	} `json:"enabledPeriod"`
}

// prometheusMetadata mirrors what KubeElasti's Prometheus scaler reads from a
// trigger's metadata (pkg/scaling/scalers/prometheus_scaler.go).
type prometheusMetadata struct {
	ServerAddress string            `json:"serverAddress"`
	Query         string            `json:"query"`
	Threshold     string            `json:"threshold"` // json:"threshold,string" there: a string holding a float
	UptimeFilter  string            `json:"uptimeFilter"`
	Headers       map[string]string `json:"headers"`
}

// decodeStrict decodes js into v the way the Kubernetes API server reads an
// object (sigs.k8s.io/json): field names are case-sensitive (encoding/json
// would take "stringdata" for stringData), unknown and duplicate fields are
// refused.
func decodeStrict(js []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(js, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// checkElastiService checks an ElastiService against the CRD's fields and
// rules, its Prometheus trigger against what the scaler reads, and that the
// query selects the per-service series of the ElastiService's own service.
func checkElastiService(top map[string]json.RawMessage) error {
	if err := checkObject(top, elastiAPIVersion); err != nil {
		return err
	}
	var namespace string
	var meta struct {
		Namespace string `json:"namespace"`
	}
	_ = json.Unmarshal(top["metadata"], &meta)
	namespace = meta.Namespace

	var spec elastiServiceSpec
	if err := decodeStrict(top["spec"], &spec); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	ref := spec.ScaleTargetRef
	if !slices.Contains([]string{"apps/v1", "argoproj.io/v1alpha1"}, ref.APIVersion) ||
		!slices.Contains([]string{"deployments", "rollouts", "Deployment", "StatefulSet", "Rollout"}, ref.Kind) || ref.Name == "" {
		return fmt.Errorf("spec.scaleTargetRef %+v: apiVersion apps/v1 or argoproj.io/v1alpha1, kind Deployment, StatefulSet or Rollout, and a name", ref)
	}
	if !messages.IsDNS1123Label(spec.Service) {
		return fmt.Errorf("spec.service %q is not a service name", spec.Service)
	}
	if m := spec.MinTargetReplicas; m != nil && *m < 1 {
		return fmt.Errorf("spec.minTargetReplicas %d: the CRD's minimum is 1", *m)
	}
	if c := spec.CooldownPeriod; c != nil && (*c < 0 || *c > 604800) {
		return fmt.Errorf("spec.cooldownPeriod %d: the CRD allows 0 to 604800", *c)
	}
	if len(spec.Triggers) == 0 {
		return errors.New("spec.triggers: the CRD wants at least one")
	}
	for i, tr := range spec.Triggers {
		if tr.Type != "prometheus" {
			return fmt.Errorf("spec.triggers[%d].type %q: the CRD allows only prometheus", i, tr.Type)
		}
		var md prometheusMetadata
		if err := decodeStrict(tr.Metadata, &md); err != nil {
			return fmt.Errorf("spec.triggers[%d].metadata: %w", i, err)
		}
		if _, err := strconv.ParseFloat(md.Threshold, 64); err != nil {
			return fmt.Errorf("spec.triggers[%d].metadata.threshold %q: the scaler wants a number in a string", i, md.Threshold)
		}
		if err := checkQuery(md.Query, spec.Service, namespace); err != nil {
			return fmt.Errorf("spec.triggers[%d].metadata.query: %w", i, err)
		}
	}
	return nil
}

// checkQuery checks that a trigger's query selects the per-service series of
// svc.ns, and copes with the series not existing yet (the scaler takes an empty
// result for an error, and then never scales to zero).
func checkQuery(query, svc, ns string) error {
	selector := fmt.Sprintf(`%s{destination_service_name=%q,destination_service_namespace=%q}`, perServiceFamily, svc, ns)
	// The selector, not inside a longer metric name (envoy_wasmcustom_reqcount_…).
	if !regexp.MustCompile(`(^|[^a-zA-Z0-9_:])` + regexp.QuoteMeta(selector)).MatchString(query) {
		return fmt.Errorf("%q does not select %s (this ElastiService's service and namespace)", query, selector)
	}
	if !strings.Contains(query, "or vector(0)") {
		return fmt.Errorf("%q: add `or vector(0)`: before any request the series does not exist, and KubeElasti's scaler takes an empty result for an error", query)
	}
	return nil
}
