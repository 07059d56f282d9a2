package envoy_test

import (
	"strings"
	"testing"
)

// The checks must be able to fail: each case breaks a known-good document in one
// way and expects the error that names that way. The documents live here, not in
// envoy/, where TestExampleConfigs would (rightly) fail on them.

const goodBootstrap = `
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 9901 }
stats_config:
  stats_tags:
    - tag_name: destination_service_name
      regex: "(destination_service_name=\\.=(.*?);\\.;)"
    - tag_name: destination_service_namespace
      regex: "(destination_service_namespace=\\.=(.*?);\\.;)"
static_resources:
  listeners:
    - name: ingress
      address:
        socket_address: { address: 127.0.0.1, port_value: 10000 }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: { prefix: "/" }
                          route: { cluster: backend }
                http_filters:
                  - name: envoy.filters.http.wasm
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        failure_policy: FAIL_OPEN
                        vm_config:
                          runtime: envoy.wasm.runtime.v8
                          code: { local: { filename: build/filter.wasm } }
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: '{"cluster": "operator", "mode": "single"}'
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: backend
      connect_timeout: 1s
      load_assignment:
        cluster_name: backend
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 8080 } } } }] }]
    - name: operator
      type: STRICT_DNS
      connect_timeout: 1s
      load_assignment:
        cluster_name: operator
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 8013 } } } }] }]
`

const goodWasmPlugin = `
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: reqcount
  namespace: shop
spec:
  url: oci://ghcr.io/example/reqcount:v1
  phase: STATS
  failStrategy: FAIL_OPEN
  match:
    - mode: CLIENT
  pluginConfig:
    cluster: "outbound|8013||elasti-operator-controller-service.elasti.svc.cluster.local"
    authority: elasti-operator-controller-service.elasti.svc.cluster.local:8013
    key_source: authority
    default_namespace: shop
`

const goodMesh = `
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: { name: stats, namespace: istio-system }
spec:
  meshConfig:
    defaultConfig:
      extraStatTags: [destination_service_name, destination_service_namespace]
`

const goodElastiService = `
apiVersion: elasti.truefoundry.com/v1alpha1
kind: ElastiService
metadata: { name: web, namespace: shop }
spec:
  service: web
  scaleTargetRef: { apiVersion: apps/v1, kind: Deployment, name: web }
  cooldownPeriod: 900
  triggers:
    - type: prometheus
      metadata:
        query: sum(rate(reqcount_requests_total{destination_service_name="web",destination_service_namespace="shop"}[1m])) or vector(0)
        serverAddress: http://prometheus:9090
        threshold: "0.01"
`

const goodSecret = `
apiVersion: v1
kind: Secret
metadata: { name: pull, namespace: shop }
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{"auths": {"ghcr.io": {"auth": "dXNlcjp0b2tlbg=="}}}'
`

const goodPodMonitor = `
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata: { name: proxies, namespace: monitoring }
spec:
  selector:
    matchExpressions:
      - { key: istio-prometheus-ignore, operator: DoesNotExist }
  namespaceSelector:
    any: true
  podMetricsEndpoints:
    - port: http-envoy-prom
      path: /stats/prometheus
      relabelings:
        - action: keep
          sourceLabels: [__meta_kubernetes_pod_container_name]
          regex: istio-proxy
        - action: replace
          sourceLabels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
          regex: (.+):\d+;(\d+)
          replacement: $1:$2
          targetLabel: __address__
      metricRelabelings:
        - action: keep
          sourceLabels: [__name__]
          regex: reqcount_.+
`

// edit is one textual change to a good document.
type edit struct{ old, new string }

// between returns the part of goodBootstrap from the line start up to, not
// including, the line end.
func between(start, end string) string {
	i := strings.Index(goodBootstrap, start)
	j := strings.Index(goodBootstrap, end)
	if i < 0 || j < i {
		return "<between: markers not found>" // the edit then fails to apply
	}
	return goodBootstrap[i:j]
}

func TestChecksFail(t *testing.T) {
	tests := []struct {
		name    string
		base    string
		edits   []edit
		wantErr string // "" means the document must pass
	}{
		{name: "good bootstrap passes", base: goodBootstrap},
		{name: "good WasmPlugin passes", base: goodWasmPlugin},
		{
			name: "two documents, both checked", base: goodWasmPlugin + "---\n# comment only\n---\n" + goodBootstrap,
		},

		// Bootstrap.
		{
			name: "bad YAML", base: goodBootstrap,
			edits:   []edit{{`domains: ["*"]`, `domains: ["*"`}},
			wantErr: "YAML",
		},
		{
			name: "unknown field", base: goodBootstrap,
			edits:   []edit{{"  clusters:\n", "  clusterz: []\n  clusters:\n"}},
			wantErr: `unknown field "clusterz"`,
		},
		{
			name: "unknown field inside a typed_config", base: goodBootstrap,
			edits:   []edit{{"stat_prefix: ingress", "stat_prefix: ingress\n                stat_prefx: typo"}},
			wantErr: `unknown field "stat_prefx"`,
		},
		{
			name: "unknown @type", base: goodBootstrap,
			edits:   []edit{{"envoy.extensions.filters.http.router.v3.Router", "envoy.extensions.filters.http.router.v3.Routr"}},
			wantErr: "Routr",
		},
		{
			name: "schema constraint (port out of range)", base: goodBootstrap,
			edits:   []edit{{"port_value: 10000", "port_value: 70000"}},
			wantErr: "PortValue",
		},
		{
			name: "schema constraint inside the HCM (empty stat_prefix)", base: goodBootstrap,
			edits:   []edit{{"stat_prefix: ingress", `stat_prefix: ""`}},
			wantErr: "StatPrefix",
		},
		{
			name: "filter config refused by config.Parse: unknown mode", base: goodBootstrap,
			edits:   []edit{{`"mode": "single"`, `"mode": "stream"`}},
			wantErr: "refused by config.Parse",
		},
		{
			name: "filter config refused by config.Parse: not JSON", base: goodBootstrap,
			edits:   []edit{{`value: '{"cluster": "operator", "mode": "single"}'`, `value: 'cluster: operator'`}},
			wantErr: "refused by config.Parse",
		},
		{
			name: "filter config names an undefined cluster", base: goodBootstrap,
			edits:   []edit{{`"cluster": "operator"`, `"cluster": "elasti"`}},
			wantErr: `names cluster "elasti", which static_resources.clusters does not define`,
		},
		{
			name: "route to an undefined cluster", base: goodBootstrap,
			edits:   []edit{{"route: { cluster: backend }", "route: { cluster: web }"}},
			wantErr: `routes to cluster "web"`,
		},
		{
			name: "configuration not a StringValue", base: goodBootstrap,
			edits: []edit{{
				"\"@type\": type.googleapis.com/google.protobuf.StringValue\n                          value: '{\"cluster\": \"operator\", \"mode\": \"single\"}'",
				"\"@type\": type.googleapis.com/google.protobuf.Struct\n                          value: {cluster: operator}",
			}},
			wantErr: "StringValue",
		},
		{
			name: "module path", base: goodBootstrap,
			edits:   []edit{{"filename: build/filter.wasm", "filename: filter.wasm"}},
			wantErr: "build/filter.wasm",
		},
		{
			name: "runtime", base: goodBootstrap,
			edits:   []edit{{"runtime: envoy.wasm.runtime.v8", "runtime: envoy.wasm.runtime.wamr"}},
			wantErr: "vm_config.runtime",
		},
		{
			name: "fail closed", base: goodBootstrap,
			edits:   []edit{{"failure_policy: FAIL_OPEN", "failure_policy: FAIL_CLOSED"}},
			wantErr: "want FAIL_OPEN",
		},
		{
			name: "router not last", base: goodBootstrap,
			edits: []edit{{
				"                  - name: envoy.filters.http.router\n                    typed_config:\n                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n",
				"",
			}},
			wantErr: "last HTTP filter must be envoy.filters.http.router",
		},
		{
			name: "no wasm filter", base: goodBootstrap,
			edits:   []edit{{between("                  - name: envoy.filters.http.wasm\n", "                  - name: envoy.filters.http.router\n"), ""}},
			wantErr: "no envoy.filters.http.wasm filter",
		},
		{
			name: "apiVersion without kind", base: goodBootstrap,
			edits:   []edit{{"admin:", "apiVersion: v1\nadmin:"}},
			wantErr: "no kind",
		},

		{
			name: "no stats tags: the per-service counter keeps its pieces in its name", base: goodBootstrap,
			edits:   []edit{{between("stats_config:\n", "static_resources:\n"), ""}},
			wantErr: "comes out as reqcount_destination_service_name___web___",
		},
		{
			name: "a stats tag regex that differs from Istio's", base: goodBootstrap,
			edits:   []edit{{`"(destination_service_namespace=\\.=(.*?);\\.;)"`, `"destination_service_namespace=\\.=((.*?));\\.;"`}},
			wantErr: "comes out as reqcount_destination_service_namespace______requests_total", // the cut must take the whole piece
		},

		// Istio mesh settings.
		{name: "good IstioOperator passes", base: goodMesh},
		{
			name: "extraStatTags without the namespace", base: goodMesh,
			edits:   []edit{{", destination_service_namespace]", "]"}},
			wantErr: "extraStatTags",
		},
		{
			name: "unknown MeshConfig field", base: goodMesh,
			edits:   []edit{{"extraStatTags:", "extraStatTagz:"}},
			wantErr: "extraStatTagz",
		},
		{
			name: "more than meshConfig in spec", base: goodMesh,
			edits:   []edit{{"spec:\n", "spec:\n  profile: demo\n"}},
			wantErr: "spec.profile",
		},

		// KubeElasti ElastiService.
		{name: "good ElastiService passes", base: goodElastiService},
		{
			name: "unknown spec field", base: goodElastiService,
			edits:   []edit{{"  cooldownPeriod: 900", "  cooldown: 900"}},
			wantErr: `unknown field "cooldown"`,
		},
		{
			name: "cooldown out of range", base: goodElastiService,
			edits:   []edit{{"cooldownPeriod: 900", "cooldownPeriod: 604801"}},
			wantErr: "cooldownPeriod",
		},
		{
			name: "trigger type not prometheus", base: goodElastiService,
			edits:   []edit{{"type: prometheus", "type: cpu"}},
			wantErr: "only prometheus",
		},
		{
			name: "threshold not a string", base: goodElastiService,
			edits:   []edit{{`threshold: "0.01"`, "threshold: 0.01"}},
			wantErr: "threshold",
		},
		{
			name: "unknown trigger metadata field", base: goodElastiService,
			edits:   []edit{{"serverAddress:", "server:"}},
			wantErr: `unknown field "server"`,
		},
		{
			name: "query for another service", base: goodElastiService,
			edits:   []edit{{`destination_service_name="web"`, `destination_service_name="api"`}},
			wantErr: "does not select",
		},
		{
			name: "query with the old prefix", base: goodElastiService,
			edits:   []edit{{"(rate(reqcount_", "(rate(envoy_wasmcustom_reqcount_"}},
			wantErr: "does not select",
		},
		{
			name: "query without a fallback for no series", base: goodElastiService,
			edits:   []edit{{" or vector(0)", ""}},
			wantErr: "or vector(0)",
		},
		{
			name: "scale target kind", base: goodElastiService,
			edits:   []edit{{"kind: Deployment", "kind: DaemonSet"}},
			wantErr: "scaleTargetRef",
		},

		// Kubernetes Secret (an image pull secret).
		{name: "good Secret passes", base: goodSecret},
		{name: "Secret with data, not stringData, passes", base: goodSecret,
			edits: []edit{{"stringData:\n  .dockerconfigjson: '{\"auths\": {\"ghcr.io\": {\"auth\": \"dXNlcjp0b2tlbg==\"}}}'",
				"data:\n  .dockerconfigjson: eyJhdXRocyI6IHsiZ2hjci5pbyI6IHsiYXV0aCI6ICJkWE5sY2pwMGIydGxiZz09In19fQ=="}}},
		{
			name: "Secret of another type", base: goodSecret,
			edits:   []edit{{"type: kubernetes.io/dockerconfigjson", "type: Opaque"}},
			wantErr: `type "Opaque"`,
		},
		{
			name: "unknown Secret field", base: goodSecret,
			edits:   []edit{{"stringData:", "stringdata:"}},
			wantErr: `unknown field "stringdata"`,
		},
		{
			name: "Secret without a namespace", base: goodSecret,
			edits:   []edit{{"namespace: shop", "labels: {}"}},
			wantErr: "metadata needs a name and a namespace",
		},
		{
			name: "no .dockerconfigjson", base: goodSecret,
			edits:   []edit{{"  .dockerconfigjson:", "  config.json:"}},
			wantErr: "no .dockerconfigjson",
		},
		{
			name: "auth not base64 of user:password", base: goodSecret,
			edits:   []edit{{"dXNlcjp0b2tlbg==", "user:token"}},
			wantErr: "not base64 of <user>:<password>",
		},
		{
			name: "auths key with a scheme and path", base: goodSecret,
			edits:   []edit{{`"ghcr.io"`, `"https://ghcr.io/v2/"`}},
			wantErr: "without a scheme or path",
		},
		{
			name: "unknown docker config field", base: goodSecret,
			edits:   []edit{{`{"auths"`, `{"credHelpers": {}, "auths"`}},
			wantErr: `unknown field "credHelpers"`,
		},
		{
			name: "no registry in auths", base: goodSecret,
			edits:   []edit{{`{"ghcr.io": {"auth": "dXNlcjp0b2tlbg=="}}`, `{}`}},
			wantErr: "no registry in auths",
		},
		{
			name: "registry without credentials", base: goodSecret,
			edits:   []edit{{`{"auth": "dXNlcjp0b2tlbg=="}`, `{"email": "a@b.c"}`}},
			wantErr: "has no credentials",
		},

		// Prometheus Operator PodMonitor.
		{name: "good PodMonitor passes", base: goodPodMonitor},
		{
			name: "wrong PodMonitor apiVersion", base: goodPodMonitor,
			edits:   []edit{{"monitoring.coreos.com/v1", "monitoring.coreos.com/v1alpha1"}},
			wantErr: "apiVersion",
		},
		{
			name: "unknown PodMonitor field", base: goodPodMonitor,
			edits:   []edit{{"  podMetricsEndpoints:", "  podMetricEndpoints:"}},
			wantErr: `unknown field "spec.podMetricEndpoints"`,
		},
		{
			name: "unknown endpoint field", base: goodPodMonitor,
			edits:   []edit{{"      path: /stats/prometheus", "      metricsPath: /stats/prometheus"}},
			wantErr: `unknown field "spec.podMetricsEndpoints[0].metricsPath"`,
		},
		{
			name: "no endpoint", base: goodPodMonitor,
			edits:   []edit{{goodPodMonitor[strings.Index(goodPodMonitor, "  podMetricsEndpoints:\n"):], "  podMetricsEndpoints: []\n"}},
			wantErr: "podMetricsEndpoints: none",
		},
		{
			name: "path of plain Prometheus", base: goodPodMonitor,
			edits:   []edit{{"path: /stats/prometheus", "path: /metrics"}},
			wantErr: "want http://10.8.0.7:15020/stats/prometheus",
		},
		{
			name: "https", base: goodPodMonitor,
			edits:   []edit{{"      path: /stats/prometheus", "      path: /stats/prometheus\n      scheme: https"}},
			wantErr: "scraped at https://",
		},
		{
			name: "Envoy's own port, not the merged one", base: goodPodMonitor,
			edits:   []edit{{"targetLabel: __address__", "targetLabel: __address_orig__"}},
			wantErr: "scraped at http://10.8.0.7:15090/stats/prometheus",
		},
		{
			name: "an address regex that breaks on IPv6", base: goodPodMonitor,
			edits:   []edit{{`(.+):\d+;(\d+)`, `([^:]+)(?::\d+)?;(\d+)`}},
			wantErr: "frontend-7d4b9c-v6v6v",
		},
		{
			name: "no port: every port of the gateway's proxy", base: goodPodMonitor,
			edits:   []edit{{"    - port: http-envoy-prom\n      path:", "    - path:"}},
			wantErr: "istio-ingressgateway-6c8d-abcde gives 4 targets",
		},
		{
			name: "no container keep: the application's ports too", base: goodPodMonitor,
			edits: []edit{{"    - port: http-envoy-prom\n      path:", "    - path:"},
				{"        - action: keep\n          sourceLabels: [__meta_kubernetes_pod_container_name]\n          regex: istio-proxy\n", ""}},
			wantErr: "gives 4 targets",
		},
		{
			name: "selector that misses the workloads", base: goodPodMonitor,
			edits:   []edit{{"    matchExpressions:\n      - { key: istio-prometheus-ignore, operator: DoesNotExist }", "    matchLabels: { istio: ingressgateway }"}},
			wantErr: "frontend-7d4b9c-x2x4q gives 0 targets",
		},
		{
			name: "only the PodMonitor's own namespace", base: goodPodMonitor,
			edits:   []edit{{"    any: true", "    matchNames: []"}},
			wantErr: "gives 0 targets",
		},
		{
			name: "bad selector operator", base: goodPodMonitor,
			edits:   []edit{{"operator: DoesNotExist", "operator: Absent"}},
			wantErr: "spec.selector",
		},
		{
			name: "replace without a target label", base: goodPodMonitor,
			edits:   []edit{{"          targetLabel: __address__\n", ""}},
			wantErr: "requires 'target_label'",
		},
		{
			name: "relabel regex that does not compile", base: goodPodMonitor,
			edits:   []edit{{"regex: istio-proxy", "regex: istio-proxy("}},
			wantErr: "relabelings[0].regex",
		},
		{
			name: "metricRelabelings drop the filter's series", base: goodPodMonitor,
			edits:   []edit{{"regex: reqcount_.+", "regex: istio_.+"}},
			wantErr: "metricRelabelings drop or rename reqcount_requests_total",
		},

		// Istio WasmPlugin.
		{
			name: "unknown kind", base: goodWasmPlugin,
			edits:   []edit{{"kind: WasmPlugin", "kind: EnvoyFilter"}},
			wantErr: `kind "EnvoyFilter" is not one this test checks`,
		},
		{
			name: "wrong apiVersion", base: goodWasmPlugin,
			edits:   []edit{{"extensions.istio.io/v1alpha1", "networking.istio.io/v1"}},
			wantErr: "apiVersion",
		},
		{
			name: "unknown spec field", base: goodWasmPlugin,
			edits:   []edit{{"  phase: STATS", "  phase: STATS\n  phaze: AUTHN"}},
			wantErr: `unknown field "phaze"`,
		},
		{
			name: "unknown phase", base: goodWasmPlugin,
			edits:   []edit{{"phase: STATS", "phase: LATE"}},
			wantErr: "spec",
		},
		{
			name: "no phase", base: goodWasmPlugin,
			edits:   []edit{{"  phase: STATS\n", ""}},
			wantErr: "spec.phase is not set",
		},
		{
			name: "no url", base: goodWasmPlugin,
			edits:   []edit{{"  url: oci://ghcr.io/example/reqcount:v1\n", ""}},
			wantErr: "spec.url is missing",
		},
		{
			name: "bad url scheme", base: goodWasmPlugin,
			edits:   []edit{{"url: oci://", "url: ftp://"}},
			wantErr: "spec.url",
		},
		{
			name: "oci url without a tag", base: goodWasmPlugin,
			edits:   []edit{{"url: oci://ghcr.io/example/reqcount:v1", "url: oci://ghcr.io/example/reqcount"}},
			wantErr: "names no tag or digest",
		},
		{
			name: "oci url not a reference", base: goodWasmPlugin,
			edits:   []edit{{"url: oci://ghcr.io/example/reqcount:v1", "url: oci://ghcr.io/Example/reqcount:v1"}},
			wantErr: "not an OCI image reference",
		},
		{
			name: "url without a scheme is an OCI reference too", base: goodWasmPlugin,
			edits:   []edit{{"url: oci://ghcr.io/example/reqcount:v1", "url: ghcr.io/example/reqcount"}},
			wantErr: "names no tag or digest",
		},
		{
			name: "tag pinned by sha256 passes", base: goodWasmPlugin,
			edits: []edit{{"  url: oci://ghcr.io/example/reqcount:v1\n",
				"  url: oci://ghcr.io/example/reqcount:v1\n  sha256: " + strings.Repeat("ab", 32) + "\n"}},
		},
		{
			name: "digest in url and sha256 agree", base: goodWasmPlugin,
			edits: []edit{{"  url: oci://ghcr.io/example/reqcount:v1\n",
				"  url: oci://ghcr.io/example/reqcount@sha256:" + strings.Repeat("ab", 32) + "\n  sha256: " + strings.Repeat("ab", 32) + "\n"}},
		},
		{
			name: "digest in url and sha256 disagree", base: goodWasmPlugin,
			edits: []edit{{"  url: oci://ghcr.io/example/reqcount:v1\n",
				"  url: oci://ghcr.io/example/reqcount@sha256:" + strings.Repeat("ab", 32) + "\n  sha256: " + strings.Repeat("cd", 32) + "\n"}},
			wantErr: "spec.sha256",
		},
		{
			name: "sha256 not hex", base: goodWasmPlugin,
			edits:   []edit{{"  url: oci://ghcr.io/example/reqcount:v1\n", "  url: oci://ghcr.io/example/reqcount:v1\n  sha256: sha256:abc\n"}},
			wantErr: "not 64 lower-case hex digits",
		},
		{
			name: "no namespace", base: goodWasmPlugin,
			edits:   []edit{{"  namespace: shop\n", ""}},
			wantErr: "metadata needs a name and a namespace",
		},
		{
			name: "selector and targetRefs", base: goodWasmPlugin,
			edits:   []edit{{"spec:\n", "spec:\n  selector: { matchLabels: { app: web } }\n  targetRefs: [{ kind: Gateway, group: gateway.networking.k8s.io, name: gw }]\n"}},
			wantErr: "only one of selector",
		},
		{
			name: "pluginConfig refused by config.Parse", base: goodWasmPlugin,
			edits:   []edit{{"key_source: authority", "key_source: path"}},
			wantErr: "refused by config.Parse",
		},
		{
			name: "pluginConfig missing", base: goodWasmPlugin,
			edits: []edit{{"  pluginConfig:\n    cluster: \"outbound|8013||elasti-operator-controller-service.elasti.svc.cluster.local\"\n" +
				"    authority: elasti-operator-controller-service.elasti.svc.cluster.local:8013\n    key_source: authority\n    default_namespace: shop\n", ""}},
			wantErr: "spec.pluginConfig is missing",
		},
		{
			name: "outbound name with one bar", base: goodWasmPlugin,
			edits:   []edit{{`"outbound|8013||elasti`, `"outbound|8013|elasti`}},
			wantErr: "not an Istio outbound cluster name",
		},
		{
			name: "outbound name with a port name", base: goodWasmPlugin,
			edits:   []edit{{`"outbound|8013||`, `"outbound|http||`}},
			wantErr: "not an Istio outbound cluster name",
		},
		{
			name: "outbound name with port 0", base: goodWasmPlugin,
			edits:   []edit{{`"outbound|8013||`, `"outbound|0||`}},
			wantErr: "port out of range",
		},
		{
			name: "inbound cluster", base: goodWasmPlugin,
			edits:   []edit{{`"outbound|8013||`, `"inbound|8013||`}},
			wantErr: "not an Istio outbound cluster name",
		},
		{
			name: "outbound host not a DNS name", base: goodWasmPlugin,
			edits:   []edit{{`||elasti-operator-controller-service.elasti.svc.cluster.local"`, `||Elasti_Operator.elasti"`}},
			wantErr: "host is not a lower-case DNS name",
		},
		{
			name: "outbound host a bare name", base: goodWasmPlugin,
			edits:   []edit{{`||elasti-operator-controller-service.elasti.svc.cluster.local"`, `||elasti-operator"`}},
			wantErr: "host is not a lower-case DNS name",
		},
		{
			name: "plain Envoy cluster name in Istio", base: goodWasmPlugin,
			edits:   []edit{{`"outbound|8013||elasti-operator-controller-service.elasti.svc.cluster.local"`, `elasti-operator`}},
			wantErr: "not an Istio outbound cluster name",
		},
		{
			name: "authority not the cluster's host", base: goodWasmPlugin,
			edits:   []edit{{"authority: elasti-operator-controller-service.elasti.svc.cluster.local:8013", "authority: operator:8013"}},
			wantErr: "spec.pluginConfig.authority",
		},
		{
			name: "authority left to default (the cluster name)", base: goodWasmPlugin,
			edits:   []edit{{"    authority: elasti-operator-controller-service.elasti.svc.cluster.local:8013\n", ""}},
			wantErr: `field "authority": defaults to cluster`, // config.Parse refuses it first
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := tt.base
			for _, e := range tt.edits {
				// An edit that matches nothing would test the good document.
				if !strings.Contains(doc, e.old) {
					t.Fatalf("edit does not apply: %q not in the document", e.old)
				}
				doc = strings.Replace(doc, e.old, e.new, 1)
			}
			_, err := checkFile([]byte(doc))
			if err != nil {
				t.Log(err) // with -v: read what a user would see
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("checkFile: %v, want it to pass", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("checkFile passed, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("checkFile: %v\nwant an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseOutbound(t *testing.T) {
	tests := []struct {
		cluster  string
		wantHost string
		wantPort int
		ok       bool
	}{
		{"outbound|8013||elasti-operator-controller-service.elasti.svc.cluster.local", "elasti-operator-controller-service.elasti.svc.cluster.local", 8013, true},
		{"outbound|80|v1|web.shop.svc.cluster.local", "web.shop.svc.cluster.local", 80, true},
		{"outbound|65535||a.b", "a.b", 65535, true},
		{"outbound|65536||a.b", "", 0, false},
		{"outbound|8013||", "", 0, false},
		{"outbound||8013|a.b", "", 0, false},
		{"outbound|8013|V1|a.b", "", 0, false},
		{"outbound|8013||a.b|", "", 0, false},
		{"outbound|8013||a..b", "", 0, false},
		{"outbound|8013||-a.b", "", 0, false},
		{"outbound|8013||a.b.", "", 0, false},
		{"Outbound|8013||a.b", "", 0, false},
		{"outbound_.8013_._a.b", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.cluster, func(t *testing.T) {
			host, port, err := parseOutbound(tt.cluster)
			if (err == nil) != tt.ok {
				t.Fatalf("parseOutbound(%q) error = %v, want ok=%v", tt.cluster, err, tt.ok)
			}
			if host != tt.wantHost || port != tt.wantPort {
				t.Errorf("parseOutbound(%q) = %q, %d; want %q, %d", tt.cluster, host, port, tt.wantHost, tt.wantPort)
			}
		})
	}
}
