// Package envoy_test checks every example config under envoy/ the way Envoy and
// Istio would read it, and checks the filter configuration inside each one with the
// filter's own parser. Besides these tests and the YAML files the directory holds
// only docs, scripts and Go code (oci/, the Istio image): a new config file is
// covered as soon as it is added (the test walks the directory), and a file of a
// kind the test does not know fails it.
package envoy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"github.com/google/go-containerregistry/pkg/name"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	extensionsv1alpha1 "istio.io/api/extensions/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/messages"
)

// Facts about the examples that the checks hold them to.
const (
	// wasmFilename is where `make build` writes the module, relative to the
	// repository root that Envoy is run from.
	wasmFilename = "build/filter.wasm"
	// wasmRuntime is the runtime of Envoy's official builds.
	wasmRuntime = "envoy.wasm.runtime.v8"

	istioAPIVersion = "extensions.istio.io/v1alpha1"
	istioKind       = "WasmPlugin"
)

// kind is what a YAML document was recognised as.
type kind string

const (
	kindBootstrap  kind = "Envoy bootstrap"
	kindWasmPlugin kind = "Istio WasmPlugin"
	kindMesh       kind = "Istio mesh settings (IstioOperator)"
	kindScaler     kind = "KubeElasti ElastiService"
)

func TestExampleConfigs(t *testing.T) {
	seen := map[kind]int{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		switch {
		case strings.HasSuffix(name, ".yaml"), strings.HasSuffix(name, ".yml"):
		case strings.HasSuffix(name, ".go"), strings.HasSuffix(name, ".md"), strings.HasSuffix(name, ".sh"):
			return nil // code and docs, not configs (TestPromQL reads the docs' queries)
		case filepath.Dir(path) == "grafana" && strings.HasSuffix(name, ".json"):
			return nil // a Grafana dashboard: envoy/grafana's tests and TestPromQL check it
		default:
			// A config in another format would silently go unchecked.
			t.Errorf("%s: not a file this test knows how to check: make it YAML, or teach the test", path)
			return nil
		}
		t.Run(path, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			kinds, err := checkFile(data)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range kinds {
				seen[k]++
			}
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Guards against the walk finding nothing (wrong directory, renamed files). A
	// file that failed above is not in seen: its own error says enough.
	if !t.Failed() && (seen[kindBootstrap] < 2 || seen[kindWasmPlugin] < 1 || seen[kindMesh] < 1 || seen[kindScaler] < 1 ||
		seen[kindSecret] < 1 || seen[kindPodMonitor] < 1) {
		t.Errorf("checked %v; want at least 2 Envoy bootstraps, 1 Istio WasmPlugin, 1 IstioOperator, 1 ElastiService, 1 Secret and 1 PodMonitor", seen)
	}
}

// checkFile checks every YAML document in data and says what each was.
func checkFile(data []byte) ([]kind, error) {
	var kinds []kind
	for i, doc := range splitDocuments(data) {
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: YAML: %w", i+1, err)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue // only comments, or an empty document between two "---"
		}
		k, err := checkDocument(js)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		kinds = append(kinds, k)
	}
	if len(kinds) == 0 {
		return nil, errors.New("no YAML document in the file")
	}
	return kinds, nil
}

// splitDocuments splits a YAML stream at its "---" lines: sigs.k8s.io/yaml reads
// one document only.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	for line := range bytes.Lines(data) {
		if string(bytes.TrimRight(line, " \t\r\n")) == "---" {
			docs = append(docs, cur)
			cur = nil
			continue
		}
		cur = append(cur, line...)
	}
	return append(docs, cur)
}

// checkDocument tells a Kubernetes object (it has a kind) from an Envoy bootstrap
// and checks it as such.
func checkDocument(js []byte) (kind, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(js, &top); err != nil {
		return "", fmt.Errorf("not a YAML mapping: %w", err)
	}
	if _, ok := top["kind"]; ok {
		var k string
		_ = json.Unmarshal(top["kind"], &k)
		switch k {
		case kindIstioOperator:
			return kindMesh, checkIstioOperator(top)
		case kindElastiService:
			return kindScaler, checkElastiService(top)
		case "Secret":
			_, _, err := checkSecret(js)
			return kindSecret, err
		case "PodMonitor":
			return kindPodMonitor, checkPodMonitor(js)
		case kindNamespace, kindDeployment, kindService, kindScaledObject:
			return checkKubernetesKind(k, js)
		}
		return kindWasmPlugin, checkWasmPlugin(top)
	}
	if _, ok := top["apiVersion"]; ok {
		return "", errors.New("has apiVersion but no kind")
	}
	return kindBootstrap, checkBootstrap(js)
}

// checkBootstrap reads an Envoy bootstrap as Envoy would (every field known, every
// Any resolved, every constraint of the schema met) and checks the reqcount
// filters in it.
func checkBootstrap(js []byte) error {
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		return fmt.Errorf("Envoy bootstrap: %w", err)
	}
	if err := bs.ValidateAll(); err != nil {
		return fmt.Errorf("Envoy bootstrap: %w", err)
	}
	clusters := map[string]bool{}
	for _, c := range bs.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = true
	}

	wasmFilters := 0
	for _, l := range bs.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if !isType(f.GetTypedConfig(), &hcm) {
					continue
				}
				where := fmt.Sprintf("listener %q", l.GetName())
				n, err := checkHCM(f.GetTypedConfig(), &hcm, clusters)
				if err != nil {
					return fmt.Errorf("%s: %w", where, err)
				}
				wasmFilters += n
			}
		}
	}
	if wasmFilters == 0 {
		return errors.New("no envoy.filters.http.wasm filter in any listener's http_connection_manager: not an example of the filter")
	}
	return checkStatsTags(js)
}

// isType reports whether a holds a message of m's type.
func isType(a *anypb.Any, m proto.Message) bool {
	return a != nil && a.MessageIs(m)
}

// checkHCM checks one HTTP connection manager: its schema, that its routes and the
// reqcount filters' clusters exist, that the router comes last. It returns how many
// wasm filters it holds.
func checkHCM(a *anypb.Any, hcm *hcmv3.HttpConnectionManager, clusters map[string]bool) (int, error) {
	if err := a.UnmarshalTo(hcm); err != nil {
		return 0, err
	}
	// The bootstrap's ValidateAll does not look inside an Any: validate what it holds.
	if err := hcm.ValidateAll(); err != nil {
		return 0, fmt.Errorf("http_connection_manager: %w", err)
	}
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if c := r.GetRoute().GetCluster(); c != "" && !clusters[c] {
				return 0, fmt.Errorf("virtual host %q routes to cluster %q, which static_resources.clusters does not define", vh.GetName(), c)
			}
		}
	}

	filters := hcm.GetHttpFilters()
	if len(filters) == 0 || !isType(filters[len(filters)-1].GetTypedConfig(), &routerv3.Router{}) {
		return 0, errors.New("the last HTTP filter must be envoy.filters.http.router (Envoy refuses the listener otherwise)")
	}
	var router routerv3.Router
	if err := filters[len(filters)-1].GetTypedConfig().UnmarshalTo(&router); err != nil {
		return 0, err
	}
	if err := router.ValidateAll(); err != nil {
		return 0, fmt.Errorf("router: %w", err)
	}

	n := 0
	for _, hf := range filters {
		var w wasmfilterv3.Wasm
		if !isType(hf.GetTypedConfig(), &w) {
			continue
		}
		n++
		if err := hf.GetTypedConfig().UnmarshalTo(&w); err != nil {
			return 0, err
		}
		if err := w.ValidateAll(); err != nil {
			return 0, fmt.Errorf("wasm filter %q: %w", hf.GetName(), err)
		}
		if err := checkWasmFilter(w.GetConfig(), clusters); err != nil {
			return 0, fmt.Errorf("wasm filter %q: %w", hf.GetName(), err)
		}
	}
	return n, nil
}

// checkWasmFilter checks one reqcount plugin config in a bootstrap: the module it
// loads and how, and its configuration, parsed by the filter's own parser.
func checkWasmFilter(pc *wasmv3.PluginConfig, clusters map[string]bool) error {
	vm := pc.GetVmConfig()
	if vm == nil {
		return errors.New("config.vm_config is missing")
	}
	if got := vm.GetRuntime(); got != wasmRuntime {
		return fmt.Errorf("vm_config.runtime is %q, want %q (what Envoy's official builds have)", got, wasmRuntime)
	}
	if got := vm.GetCode().GetLocal().GetFilename(); got != wasmFilename {
		return fmt.Errorf("vm_config.code.local.filename is %q, want %q (where make build writes the module)", got, wasmFilename)
	}
	if got := pc.GetFailurePolicy(); got != wasmv3.FailurePolicy_FAIL_OPEN {
		return fmt.Errorf("failure_policy is %v, want FAIL_OPEN: a request counter must never fail requests", got)
	}
	if pc.GetFailOpen() {
		return errors.New("fail_open is deprecated: use failure_policy: FAIL_OPEN")
	}

	var s wrapperspb.StringValue
	if pc.GetConfiguration() == nil || !pc.GetConfiguration().MessageIs(&s) {
		return errors.New(`configuration must be a google.protobuf.StringValue holding the filter's JSON ("@type": type.googleapis.com/google.protobuf.StringValue)`)
	}
	if err := pc.GetConfiguration().UnmarshalTo(&s); err != nil {
		return err
	}
	cfg, err := config.Parse([]byte(s.GetValue()))
	if err != nil {
		return fmt.Errorf("filter configuration refused by config.Parse: %w", err)
	}
	if !clusters[cfg.Cluster] {
		return fmt.Errorf("filter configuration names cluster %q, which static_resources.clusters does not define (proxy_http_call would fail)", cfg.Cluster)
	}
	return nil
}

// checkWasmPlugin checks an Istio WasmPlugin: its spec read strictly into Istio's
// API type, the fields it needs, and its pluginConfig parsed by the filter's parser.
func checkWasmPlugin(top map[string]json.RawMessage) error {
	var kind string
	_ = json.Unmarshal(top["kind"], &kind)
	if kind != istioKind {
		return fmt.Errorf("kind %q is not one this test checks (only %s, %s, %s, Secret, PodMonitor and Envoy bootstraps): teach the test, or keep the file out of envoy/", kind, istioKind, kindIstioOperator, kindElastiService)
	}
	// A WasmPlugin's namespace decides where it applies: checkObject wants one.
	if err := checkObject(top, istioAPIVersion); err != nil {
		return err
	}

	// Istio's API types carry no generated validation: the checks below are
	// the CRD's rules that matter here, and the examples' own.
	var spec extensionsv1alpha1.WasmPlugin
	if err := protojson.Unmarshal(top["spec"], &spec); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	if sha := spec.GetSha256(); sha != "" && !regexp.MustCompile(`^[a-f0-9]{64}$`).MatchString(sha) {
		return fmt.Errorf("spec.sha256 %q is not 64 lower-case hex digits", sha)
	}
	if err := checkURL(spec.GetUrl(), spec.GetSha256()); err != nil {
		return err
	}
	if spec.GetPhase() == extensionsv1alpha1.PluginPhase_UNSPECIFIED_PHASE {
		return errors.New("spec.phase is not set: choose where the filter runs (and say why in a comment)")
	}
	if t := spec.GetType(); t != extensionsv1alpha1.PluginType_HTTP && t != extensionsv1alpha1.PluginType_UNSPECIFIED_PLUGIN_TYPE {
		return fmt.Errorf("spec.type is %v: reqcount is an HTTP filter", t)
	}
	set := 0
	for _, isSet := range []bool{spec.GetSelector() != nil, spec.GetTargetRef() != nil, len(spec.GetTargetRefs()) > 0} {
		if isSet {
			set++
		}
	}
	if set > 1 {
		return errors.New("spec: only one of selector, targetRef and targetRefs may be set")
	}
	if spec.GetPluginConfig() == nil {
		return errors.New("spec.pluginConfig is missing: the filter needs at least a cluster")
	}
	js, err := protojson.Marshal(spec.GetPluginConfig())
	if err != nil {
		return err
	}
	cfg, err := config.Parse(js)
	if err != nil {
		return fmt.Errorf("spec.pluginConfig refused by config.Parse: %w", err)
	}
	host, port, err := parseOutbound(cfg.Cluster)
	if err != nil {
		return err
	}
	if want := host + ":" + strconv.Itoa(port); cfg.Authority != want && cfg.Authority != host {
		return fmt.Errorf("spec.pluginConfig.authority is %q, want %q: the Host of the service the cluster points at (the default, the cluster name, is not a host)", cfg.Authority, want)
	}
	return nil
}

// checkURL applies the CRD's rule: no scheme (meaning oci://) or one of oci, file,
// http, https, and something after it. An OCI image reference is read as Istio's
// agent reads it (go-containerregistry's name.ParseReference, pkg/wasm/imagefetcher.go)
// and must name its tag or digest: without one it is :latest, for which Istio's
// imagePullPolicy defaults to Always. A digest in the url and the sha256 field must agree (WasmPlugin API:
// "it must match the value of this field").
func checkURL(u, sha string) error {
	if u == "" {
		return errors.New("spec.url is missing: where Istio fetches the module from")
	}
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		scheme, rest = "", u
	}
	if !slices.Contains([]string{"", "oci", "file", "http", "https"}, scheme) || rest == "" {
		return fmt.Errorf("spec.url %q: want oci://, file://, http:// or https:// and a location", u)
	}
	if scheme != "" && scheme != "oci" {
		return nil
	}
	ref, err := name.ParseReference(rest)
	if err != nil {
		return fmt.Errorf("spec.url %q: not an OCI image reference <registry>/<repository>:<tag> or @sha256:<digest>: %w", u, err)
	}
	if _, err := name.ParseReference(rest, name.StrictValidation); err != nil {
		return fmt.Errorf("spec.url %q names no tag or digest: that means :latest, which Istio pulls with imagePullPolicy Always by default; name the version", u)
	}
	if d, ok := ref.(name.Digest); ok && sha != "" && d.DigestStr() != "sha256:"+sha {
		return fmt.Errorf("spec.url names digest %s but spec.sha256 is %s: Istio refuses the pair", d.DigestStr(), sha)
	}
	return nil
}

// outboundRE matches Istio's outbound cluster names: outbound|<port>|<subset>|<host>.
var outboundRE = regexp.MustCompile(`^outbound\|([0-9]{1,5})\|([^|]*)\|([^|]+)$`)

// parseOutbound checks that cluster is an Istio outbound cluster name with a port
// and a service FQDN, as istiod generates them, and returns the host and port.
func parseOutbound(cluster string) (host string, port int, err error) {
	bad := func(why string) error {
		return fmt.Errorf("cluster %q is not an Istio outbound cluster name outbound|<port>||<service FQDN>: %s", cluster, why)
	}
	m := outboundRE.FindStringSubmatch(cluster)
	if m == nil {
		return "", 0, bad("wrong shape")
	}
	port, _ = strconv.Atoi(m[1])
	if port < 1 || port > 65535 {
		return "", 0, bad("port out of range")
	}
	if m[2] != "" && !messages.IsDNS1123Label(m[2]) {
		return "", 0, bad("subset is not a DNS-1123 label")
	}
	// istiod names clusters by the service's FQDN: at least name.namespace.
	if !isDNSName(m[3], 2) {
		return "", 0, bad("host is not a lower-case DNS name with at least two labels")
	}
	return m[3], port, nil
}

// isDNSName reports whether s is a lower-case DNS name (RFC 1123 subdomain) of at
// least minLabels labels.
func isDNSName(s string, minLabels int) bool {
	if len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	if len(labels) < minLabels {
		return false
	}
	for _, l := range labels {
		if !messages.IsDNS1123Label(l) {
			return false
		}
	}
	return true
}
