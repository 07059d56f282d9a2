package envoy_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"google.golang.org/protobuf/encoding/protojson"
	extensionsv1alpha1 "istio.io/api/extensions/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/reqcount/reqcount/messages"
)

// Checks of the Kubernetes objects among the examples that are not Istio's:
// the pull secret of a private image (Kubernetes' core/v1 Secret), and the
// Prometheus Operator PodMonitor that scrapes the proxies, each decoded
// strictly into its project's own Go type.

const (
	kindSecret     kind = "Kubernetes Secret"
	kindPodMonitor kind = "Prometheus Operator PodMonitor"

	podMonitorAPIVersion = "monitoring.coreos.com/v1"

	// What Istio serves on every injected pod with prometheus merge on (its
	// default): the injector's prometheus.io annotations name this port and
	// path, where istio-agent merges Envoy's /stats/prometheus with the
	// application's metrics.
	istioMergedPort = "15020"
	istioStatsPath  = "/stats/prometheus"
)

// objectMeta checks the name and namespace of a namespaced object.
func objectMeta(m metav1.ObjectMeta) error {
	if errs := validation.IsDNS1123Subdomain(m.Name); len(errs) > 0 || !messages.IsDNS1123Label(m.Namespace) {
		return fmt.Errorf("metadata needs a name and a namespace (got %q, %q)", m.Name, m.Namespace)
	}
	return nil
}

// dockerConfig is what a kubernetes.io/dockerconfigjson secret holds, as
// Kubernetes' credential provider reads it (pkg/credentialprovider).
type dockerConfig struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		Email         string `json:"email"`
		IdentityToken string `json:"identitytoken"`
	} `json:"auths"`
}

// checkSecret checks a docker pull secret: read strictly as a core/v1 Secret,
// of type kubernetes.io/dockerconfigjson, whose .dockerconfigjson has
// credentials for at least one registry. It returns the secret and the
// registries it has credentials for.
func checkSecret(js []byte) (*corev1.Secret, []string, error) {
	var s corev1.Secret
	if err := decodeStrict(js, &s); err != nil {
		return nil, nil, fmt.Errorf("Secret: %w", err)
	}
	if s.APIVersion != "v1" {
		return nil, nil, fmt.Errorf("apiVersion %q, want %q", s.APIVersion, "v1")
	}
	if err := objectMeta(s.ObjectMeta); err != nil {
		return nil, nil, err
	}
	if s.Type != corev1.SecretTypeDockerConfigJson {
		return nil, nil, fmt.Errorf("type %q: a WasmPlugin's imagePullSecret is a %s secret (the only kind of Secret these examples hold)", s.Type, corev1.SecretTypeDockerConfigJson)
	}
	cfg, inString := s.StringData[corev1.DockerConfigJsonKey]
	data, inData := s.Data[corev1.DockerConfigJsonKey]
	switch {
	case inString && inData:
		return nil, nil, fmt.Errorf("%s is in both data and stringData", corev1.DockerConfigJsonKey)
	case inData:
		cfg = string(data)
	case !inString:
		return nil, nil, fmt.Errorf("no %s in data or stringData", corev1.DockerConfigJsonKey)
	}
	var dc dockerConfig
	if err := decodeStrict([]byte(cfg), &dc); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", corev1.DockerConfigJsonKey, err)
	}
	if len(dc.Auths) == 0 {
		return nil, nil, fmt.Errorf("%s: no registry in auths", corev1.DockerConfigJsonKey)
	}
	var registries []string
	for reg, a := range dc.Auths {
		if strings.Contains(reg, "/") {
			return nil, nil, fmt.Errorf("%s: auths key %q: name the registry host[:port], without a scheme or path", corev1.DockerConfigJsonKey, reg)
		}
		switch {
		case a.Auth != "":
			userPass, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil || !strings.Contains(string(userPass), ":") {
				return nil, nil, fmt.Errorf("%s: auths[%q].auth is not base64 of <user>:<password>", corev1.DockerConfigJsonKey, reg)
			}
		case a.Username != "" && a.Password != "", a.IdentityToken != "":
		default:
			return nil, nil, fmt.Errorf("%s: auths[%q] has no credentials (auth, username and password, or identitytoken)", corev1.DockerConfigJsonKey, reg)
		}
		registries = append(registries, reg)
	}
	slices.Sort(registries)
	return &s, registries, nil
}

// checkPullSecrets checks, over every document of the examples, that each
// WasmPlugin naming an imagePullSecret finds that Secret among them, in its
// own namespace (Istio reads it there), with credentials for the registry of
// its url.
func checkPullSecrets(docs [][]byte) error {
	type key struct{ namespace, name string }
	secrets := map[key][]string{}
	type ref struct {
		key
		plugin, registry string
	}
	var refs []ref
	for _, js := range docs {
		var top struct {
			Kind     string            `json:"kind"`
			Metadata metav1.ObjectMeta `json:"metadata"`
			Spec     json.RawMessage   `json:"spec"`
		}
		if err := json.Unmarshal(js, &top); err != nil {
			return err
		}
		switch top.Kind {
		case "Secret":
			s, registries, err := checkSecret(js)
			if err != nil {
				return err
			}
			secrets[key{s.Namespace, s.Name}] = registries
		case istioKind:
			var spec extensionsv1alpha1.WasmPlugin
			if err := protojson.Unmarshal(top.Spec, &spec); err != nil {
				return err
			}
			if spec.GetImagePullSecret() == "" {
				continue
			}
			u := spec.GetUrl()
			rest, isOCI := strings.CutPrefix(u, "oci://")
			if !isOCI && strings.Contains(u, "://") {
				return fmt.Errorf("WasmPlugin %s/%s: imagePullSecret is for oci:// urls, and url is %q", top.Metadata.Namespace, top.Metadata.Name, u)
			}
			r, err := name.ParseReference(rest)
			if err != nil {
				return fmt.Errorf("WasmPlugin %s/%s: url %q: %w", top.Metadata.Namespace, top.Metadata.Name, u, err)
			}
			refs = append(refs, ref{key{top.Metadata.Namespace, spec.GetImagePullSecret()}, top.Metadata.Name, r.Context().RegistryStr()})
		}
	}
	for _, r := range refs {
		registries, ok := secrets[r.key]
		if !ok {
			return fmt.Errorf("WasmPlugin %s/%s: imagePullSecret %q is not a Secret of namespace %s in these examples (Istio looks it up in the WasmPlugin's namespace)", r.namespace, r.plugin, r.name, r.namespace)
		}
		if !slices.Contains(registries, r.registry) {
			return fmt.Errorf("WasmPlugin %s/%s: secret %q has credentials for %v, not for %s, the registry of its url", r.namespace, r.plugin, r.name, registries, r.registry)
		}
	}
	return nil
}

// exampleDocuments returns every YAML document under envoy/, as JSON.
func exampleDocuments(t *testing.T) [][]byte {
	t.Helper()
	var docs [][]byte
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, doc := range splitDocuments(data) {
			js, err := yaml.YAMLToJSON(doc)
			if err != nil {
				return fmt.Errorf("%s: document %d: %w", path, i+1, err)
			}
			if string(js) != "null" {
				docs = append(docs, js)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

func TestPullSecrets(t *testing.T) {
	docs := exampleDocuments(t)
	if err := checkPullSecrets(docs); err != nil {
		t.Fatal(err)
	}
	named := 0
	for _, js := range docs {
		if strings.Contains(string(js), `"imagePullSecret"`) {
			named++
		}
	}
	if named == 0 {
		t.Error("no WasmPlugin in envoy/ names an imagePullSecret: the private-registry example (istio/wasmplugin-private.yaml) is gone")
	}
}

// sdPod is a pod as Kubernetes service discovery (role pod) sees it.
type sdPod struct {
	namespace, name, ip string
	labels, annotations map[string]string
	containers          []sdContainer
}

type sdContainer struct {
	name  string
	init  bool
	ports []sdPort // none: one port-less target, as Prometheus makes for it
}

type sdPort struct {
	name   string
	number int
}

// sanitizeLabel is how Prometheus's Kubernetes discovery turns a label or
// annotation name into part of a label name.
func sanitizeLabel(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' {
			return r
		}
		return '_'
	}, s)
}

// targets are the targets Prometheus's Kubernetes discovery (role pod) makes
// of p: one per declared container port, one per container without ports,
// with the __meta_kubernetes_pod_* labels relabelings read.
func (p sdPod) targets() []labels.Labels {
	var ts []labels.Labels
	for _, c := range p.containers {
		ports := c.ports
		if len(ports) == 0 {
			ports = []sdPort{{}}
		}
		for _, port := range ports {
			b := labels.NewBuilder(labels.EmptyLabels())
			b.Set(model.AddressLabel, p.ip)
			if port.number != 0 {
				b.Set(model.AddressLabel, net.JoinHostPort(p.ip, strconv.Itoa(port.number)))
				b.Set("__meta_kubernetes_pod_container_port_name", port.name)
				b.Set("__meta_kubernetes_pod_container_port_number", strconv.Itoa(port.number))
				b.Set("__meta_kubernetes_pod_container_port_protocol", "TCP")
			}
			b.Set("__meta_kubernetes_namespace", p.namespace)
			b.Set("__meta_kubernetes_pod_name", p.name)
			b.Set("__meta_kubernetes_pod_ip", p.ip)
			b.Set("__meta_kubernetes_pod_phase", "Running")
			b.Set("__meta_kubernetes_pod_container_name", c.name)
			b.Set("__meta_kubernetes_pod_container_init", strconv.FormatBool(c.init))
			for k, v := range p.labels {
				b.Set("__meta_kubernetes_pod_label_"+sanitizeLabel(k), v)
				b.Set("__meta_kubernetes_pod_labelpresent_"+sanitizeLabel(k), "true")
			}
			for k, v := range p.annotations {
				b.Set("__meta_kubernetes_pod_annotation_"+sanitizeLabel(k), v)
				b.Set("__meta_kubernetes_pod_annotationpresent_"+sanitizeLabel(k), "true")
			}
			ts = append(ts, b.Labels())
		}
	}
	return ts
}

// istioAnnotations are what Istio's injector puts on a pod with prometheus
// merge on (meshConfig.enablePrometheusMerge, the default); the gateway
// charts set the same.
var istioAnnotations = map[string]string{
	"prometheus.io/scrape": "true",
	"prometheus.io/port":   istioMergedPort,
	"prometheus.io/path":   istioStatsPath,
}

// proxyPods are pods the PodMonitor must scrape once each, at the proxy's
// merged metrics endpoint: a sidecar-injected workload of shop (where
// wasmplugin.yaml applies), the same on IPv6 and with Istio's native sidecars
// (istio-proxy an init container), and the ingress gateway.
var proxyPods = []sdPod{
	{
		namespace: "shop", name: "frontend-7d4b9c-x2x4q", ip: "10.8.0.7",
		labels:      map[string]string{"app": "frontend", "security.istio.io/tlsMode": "istio", "service.istio.io/canonical-name": "frontend"},
		annotations: istioAnnotations,
		containers: []sdContainer{
			{name: "istio-init", init: true},
			{name: "frontend", ports: []sdPort{{"http", 8080}, {"metrics", 9090}}},
			{name: "istio-proxy", ports: []sdPort{{"http-envoy-prom", 15090}}},
		},
	},
	{
		namespace: "shop", name: "frontend-7d4b9c-v6v6v", ip: "fd00:10:8::7",
		labels:      map[string]string{"app": "frontend", "security.istio.io/tlsMode": "istio"},
		annotations: istioAnnotations,
		containers: []sdContainer{
			{name: "istio-validation", init: true},
			{name: "frontend", ports: []sdPort{{"http", 8080}}},
			{name: "istio-proxy", ports: []sdPort{{"http-envoy-prom", 15090}}},
		},
	},
	{
		namespace: "shop", name: "checkout-5f6d7-native", ip: "10.8.0.9",
		labels:      map[string]string{"app": "checkout", "security.istio.io/tlsMode": "istio"},
		annotations: istioAnnotations,
		containers: []sdContainer{
			{name: "istio-proxy", init: true, ports: []sdPort{{"http-envoy-prom", 15090}}},
			{name: "checkout", ports: []sdPort{{"http", 8080}}},
		},
	},
	{
		namespace: "istio-system", name: "istio-ingressgateway-6c8d-abcde", ip: "10.8.1.3",
		labels:      map[string]string{"app": "istio-ingressgateway", "istio": "ingressgateway"},
		annotations: istioAnnotations,
		containers: []sdContainer{{name: "istio-proxy", ports: []sdPort{
			{"status-port", 15021}, {"http2", 8080}, {"https", 8443}, {"http-envoy-prom", 15090},
		}}},
	},
}

// plainPod has no sidecar: nothing of it may be scraped.
var plainPod = sdPod{
	namespace: "shop", name: "batch-1", ip: "10.8.0.20",
	labels:     map[string]string{"app": "batch"},
	containers: []sdContainer{{name: "batch", ports: []sdPort{{"http", 8080}}}},
}

// keptSeries must pass the PodMonitor's metricRelabelings: the filter's
// per-service counter, one of its gauges and its histogram's buckets.
var keptSeries = []string{perServiceFamily, "reqcount_keys", "reqcount_hold_time_ms_bucket"}

// relabelConfigs turns the Prometheus Operator's relabelings into
// Prometheus's own, with Prometheus's defaults for what is not set (as the
// operator leaves them out of the generated configuration), and validates
// them as Prometheus does when it loads that configuration.
func relabelConfigs(rcs []monitoringv1.RelabelConfig) ([]*relabel.Config, error) {
	var cfgs []*relabel.Config
	for i, rc := range rcs {
		c := relabel.DefaultRelabelConfig
		for _, l := range rc.SourceLabels {
			c.SourceLabels = append(c.SourceLabels, model.LabelName(l))
		}
		if rc.Separator != nil {
			c.Separator = *rc.Separator
		}
		if rc.Regex != "" {
			re, err := relabel.NewRegexp(rc.Regex)
			if err != nil {
				return nil, fmt.Errorf("[%d].regex: %w", i, err)
			}
			c.Regex = re
		}
		c.Modulus = uint64(rc.Modulus)
		c.TargetLabel = rc.TargetLabel
		if rc.Replacement != nil {
			c.Replacement = *rc.Replacement
		}
		if rc.Action != "" {
			c.Action = relabel.Action(strings.ToLower(rc.Action)) // the operator takes either case
		}
		c.NameValidationScheme = model.UTF8Validation
		if err := c.Validate(model.UTF8Validation); err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		cfgs = append(cfgs, &c)
	}
	return cfgs, nil
}

// checkPodMonitor checks a PodMonitor: read strictly as the Prometheus
// Operator's type; then its selectors, endpoints and relabelings run over
// the targets Kubernetes discovery finds in proxyPods and plainPod, as the
// operator's generated scrape configuration would: each proxy must give
// exactly one target, its :15020/stats/prometheus over HTTP, and the plain pod
// none; the metricRelabelings must keep the filter's series.
func checkPodMonitor(js []byte) error {
	var pm monitoringv1.PodMonitor
	if err := decodeStrict(js, &pm); err != nil {
		return fmt.Errorf("PodMonitor: %w", err)
	}
	if pm.APIVersion != podMonitorAPIVersion {
		return fmt.Errorf("apiVersion %q, want %q", pm.APIVersion, podMonitorAPIVersion)
	}
	if err := objectMeta(pm.ObjectMeta); err != nil {
		return err
	}
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		return fmt.Errorf("spec.selector: %w", err)
	}
	if len(pm.Spec.PodMetricsEndpoints) == 0 {
		return errors.New("spec.podMetricsEndpoints: none")
	}

	// What one endpoint makes of a pod's targets: the operator's own
	// relabelings first (pods in the selected namespaces, matching the
	// selector, at the named port), then the endpoint's.
	scrape := func(i int, ep monitoringv1.PodMetricsEndpoint, p sdPod) ([]labels.Labels, error) {
		ns := pm.Spec.NamespaceSelector
		if !ns.Any && !slices.Contains(ns.MatchNames, p.namespace) && !(len(ns.MatchNames) == 0 && p.namespace == pm.Namespace) {
			return nil, nil
		}
		if !sel.Matches(k8slabels.Set(p.labels)) {
			return nil, nil
		}
		cfgs, err := relabelConfigs(ep.RelabelConfigs)
		if err != nil {
			return nil, fmt.Errorf("spec.podMetricsEndpoints[%d].relabelings%w", i, err)
		}
		var kept []labels.Labels
		for _, t := range p.targets() {
			if ep.Port != nil && t.Get("__meta_kubernetes_pod_container_port_name") != *ep.Port {
				continue
			}
			if ep.Port == nil && ep.PortNumber != nil && t.Get("__meta_kubernetes_pod_container_port_number") != strconv.Itoa(int(*ep.PortNumber)) {
				continue
			}
			b := labels.NewBuilder(t)
			b.Set(model.MetricsPathLabel, ep.Path)
			scheme := "http"
			if ep.Scheme != nil {
				scheme = strings.ToLower(ep.Scheme.String()) // the operator lower-cases it too
			}
			b.Set(model.SchemeLabel, scheme)
			if relabel.ProcessBuilder(b, cfgs...) {
				kept = append(kept, b.Labels())
			}
		}
		return kept, nil
	}

	for _, p := range append(slices.Clone(proxyPods), plainPod) {
		var got []labels.Labels
		for i, ep := range pm.Spec.PodMetricsEndpoints {
			ts, err := scrape(i, ep, p)
			if err != nil {
				return err
			}
			got = append(got, ts...)
		}
		want := 1
		if p.name == plainPod.name {
			want = 0
		}
		if len(got) != want {
			var ts []string
			for _, l := range got {
				ts = append(ts, fmt.Sprintf("%s (%s/%s)", l.Get(model.AddressLabel), l.Get("__meta_kubernetes_pod_container_name"), l.Get("__meta_kubernetes_pod_container_port_name")))
			}
			return fmt.Errorf("pod %s/%s gives %d targets %v, want %d: one per Istio proxy (its merged metrics port), none for a pod without one",
				p.namespace, p.name, len(got), ts, want)
		}
		if want == 0 {
			continue
		}
		addr, path, scheme := got[0].Get(model.AddressLabel), got[0].Get(model.MetricsPathLabel), got[0].Get(model.SchemeLabel)
		if wantAddr := net.JoinHostPort(p.ip, istioMergedPort); addr != wantAddr || path != istioStatsPath || scheme != "http" {
			return fmt.Errorf("pod %s/%s is scraped at %s://%s%s, want http://%s%s (Istio's merged metrics)", p.namespace, p.name, scheme, addr, path, wantAddr, istioStatsPath)
		}
	}

	for i, ep := range pm.Spec.PodMetricsEndpoints {
		cfgs, err := relabelConfigs(ep.MetricRelabelConfigs)
		if err != nil {
			return fmt.Errorf("spec.podMetricsEndpoints[%d].metricRelabelings%w", i, err)
		}
		for _, n := range keptSeries {
			b := labels.NewBuilder(labels.FromStrings(model.MetricNameLabel, n, "destination_service_name", "web", "destination_service_namespace", "shop"))
			if !relabel.ProcessBuilder(b, cfgs...) || b.Get(model.MetricNameLabel) != n {
				return fmt.Errorf("spec.podMetricsEndpoints[%d].metricRelabelings drop or rename %s", i, n)
			}
		}
	}
	return nil
}

func TestPullSecretsFail(t *testing.T) {
	plugin := func(ns, secret, url string) string {
		return fmt.Sprintf(`{"apiVersion":"extensions.istio.io/v1alpha1","kind":"WasmPlugin","metadata":{"name":"reqcount","namespace":%q},`+
			`"spec":{"url":%q,"imagePullSecret":%q}}`, ns, url, secret)
	}
	secret := func(ns, name, registry string) string {
		return fmt.Sprintf(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":%q,"namespace":%q},"type":"kubernetes.io/dockerconfigjson",`+
			`"stringData":{".dockerconfigjson":"{\"auths\":{\"%s\":{\"auth\":\"dXNlcjp0b2tlbg==\"}}}"}}`, name, ns, registry)
	}
	tests := []struct {
		name    string
		docs    []string
		wantErr string
	}{
		{name: "secret found", docs: []string{plugin("shop", "pull", "oci://ghcr.io/you/reqcount:v1"), secret("shop", "pull", "ghcr.io")}},
		{name: "url without a scheme", docs: []string{plugin("shop", "pull", "ghcr.io/you/reqcount:v1"), secret("shop", "pull", "ghcr.io")}},
		{name: "registry with a port", docs: []string{plugin("shop", "pull", "oci://registry.example.com:5000/reqcount:v1"), secret("shop", "pull", "registry.example.com:5000")}},
		{name: "no pull secret named", docs: []string{plugin("shop", "", "oci://ghcr.io/you/reqcount:v1")}},
		{
			name: "secret missing", docs: []string{plugin("shop", "pull", "oci://ghcr.io/you/reqcount:v1")},
			wantErr: `imagePullSecret "pull" is not a Secret of namespace shop`,
		},
		{
			name: "secret in another namespace", docs: []string{plugin("shop", "pull", "oci://ghcr.io/you/reqcount:v1"), secret("istio-system", "pull", "ghcr.io")},
			wantErr: `imagePullSecret "pull" is not a Secret of namespace shop`,
		},
		{
			name: "secret for another registry", docs: []string{plugin("shop", "pull", "oci://ghcr.io/you/reqcount:v1"), secret("shop", "pull", "registry.example.com")},
			wantErr: "not for ghcr.io",
		},
		{
			name: "registry without its port", docs: []string{plugin("shop", "pull", "oci://registry.example.com:5000/reqcount:v1"), secret("shop", "pull", "registry.example.com")},
			wantErr: "not for registry.example.com:5000",
		},
		{
			name: "pull secret for an https url", docs: []string{plugin("shop", "pull", "https://example.com/reqcount.wasm"), secret("shop", "pull", "example.com")},
			wantErr: "imagePullSecret is for oci:// urls",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var docs [][]byte
			for _, d := range tt.docs {
				docs = append(docs, []byte(d))
			}
			err := checkPullSecrets(docs)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("checkPullSecrets: %v, want it to pass", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("checkPullSecrets: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
