package envoy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/scaler/external"
	"github.com/reqcount/reqcount/scaler/server"
	"github.com/reqcount/reqcount/scaler/store"
)

// The Kubernetes and KEDA kinds envoy/keda/ holds.
const (
	kindNamespace    = "Namespace"
	kindDeployment   = "Deployment"
	kindService      = "Service"
	kindScaledObject = "ScaledObject"

	kindKubernetes kind = "Kubernetes object (core/v1, apps/v1)"
	kindKEDA       kind = "KEDA ScaledObject"
)

// checkKubernetesKind decodes a Namespace, Deployment or Service strictly
// (every field known to Kubernetes' own types) and checks the rules the API
// server would apply to the parts the examples use.
func checkKubernetesKind(k string, js []byte) (kind, error) {
	switch k {
	case kindNamespace:
		var ns corev1.Namespace
		if err := decodeObject(js, &ns, "v1"); err != nil {
			return kindKubernetes, err
		}
		return kindKubernetes, checkName(ns.Name, "")
	case kindDeployment:
		var d appsv1.Deployment
		if err := decodeObject(js, &d, "apps/v1"); err != nil {
			return kindKubernetes, err
		}
		return kindKubernetes, checkDeployment(&d)
	case kindService:
		var s corev1.Service
		if err := decodeObject(js, &s, "v1"); err != nil {
			return kindKubernetes, err
		}
		return kindKubernetes, checkService(&s)
	case kindScaledObject:
		var so kedav1alpha1.ScaledObject
		if err := decodeObject(js, &so, "keda.sh/v1alpha1"); err != nil {
			return kindKEDA, err
		}
		return kindKEDA, checkScaledObject(&so)
	}
	return "", fmt.Errorf("kind %q is not one this test checks", k)
}

// decodeObject decodes js into v, refusing fields v's type does not have, and
// checks apiVersion.
func decodeObject(js []byte, v any, apiVersion string) error {
	if err := decodeStrict(js, v); err != nil {
		return err
	}
	var tm struct {
		APIVersion string `json:"apiVersion"`
	}
	_ = json.Unmarshal(js, &tm)
	if tm.APIVersion != apiVersion {
		return fmt.Errorf("apiVersion %q, want %q", tm.APIVersion, apiVersion)
	}
	return nil
}

// checkName applies Kubernetes' name rules: a DNS-1123 label for a
// namespace and a Service, and a namespace set where the object needs one.
func checkName(name, namespace string) error {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Errorf("metadata.name %q: %s", name, strings.Join(errs, "; "))
	}
	if namespace != "" {
		if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
			return fmt.Errorf("metadata.namespace %q: %s", namespace, strings.Join(errs, "; "))
		}
	}
	return nil
}

func checkDeployment(d *appsv1.Deployment) error {
	if d.Namespace == "" {
		return errors.New("metadata.namespace is not set")
	}
	if err := checkName(d.Name, d.Namespace); err != nil {
		return err
	}
	sel := d.Spec.Selector
	if sel == nil || len(sel.MatchLabels) == 0 {
		return errors.New("spec.selector.matchLabels is empty")
	}
	for k, v := range sel.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			return fmt.Errorf("spec.selector %s=%s does not match the pod template's labels %v", k, v, d.Spec.Template.Labels)
		}
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		named := map[string]int32{}
		for _, p := range c.Ports {
			if errs := validation.IsValidPortName(p.Name); p.Name != "" && len(errs) > 0 {
				return fmt.Errorf("container %s: port name %q: %s", c.Name, p.Name, strings.Join(errs, "; "))
			}
			named[p.Name] = p.ContainerPort
		}
		for what, probe := range map[string]*corev1.Probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
			if probe == nil || probe.HTTPGet == nil {
				continue
			}
			if p := probe.HTTPGet.Port; p.Type == intstr.String {
				if _, ok := named[p.StrVal]; !ok {
					return fmt.Errorf("container %s: %s port %q is not one of its ports", c.Name, what, p.StrVal)
				}
			}
		}
	}
	return nil
}

func checkService(s *corev1.Service) error {
	if s.Namespace == "" {
		return errors.New("metadata.namespace is not set")
	}
	if err := checkName(s.Name, s.Namespace); err != nil {
		return err
	}
	if len(s.Spec.Selector) == 0 {
		return errors.New("spec.selector is empty: the Service would have no endpoints")
	}
	for _, p := range s.Spec.Ports {
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			return errors.New("spec.ports: every port of a multi-port Service needs a name")
		}
		if p.Port < 1 || p.Port > 65535 {
			return fmt.Errorf("spec.ports %s: port %d", p.Name, p.Port)
		}
	}
	return nil
}

// checkScaledObject applies KEDA's own checks that need no cluster, and reads
// every external-push trigger's metadata with the scaler's own parser (at the
// scaler's default limits: the manifest's -max-window is checked against the
// window in TestKEDAManifests).
func checkScaledObject(so *kedav1alpha1.ScaledObject) error {
	if so.Namespace == "" {
		return errors.New("metadata.namespace is not set")
	}
	if so.Spec.ScaleTargetRef == nil || so.Spec.ScaleTargetRef.Name == "" {
		return errors.New("spec.scaleTargetRef.name is not set")
	}
	if err := kedav1alpha1.CheckReplicaCountBoundsAreValid(so); err != nil {
		return err
	}
	if err := kedav1alpha1.CheckFallbackValid(so); err != nil {
		return err
	}
	if err := kedav1alpha1.ValidateTriggers(so.Spec.Triggers); err != nil {
		return err
	}
	for i, tr := range so.Spec.Triggers {
		if tr.Type != "external-push" {
			continue
		}
		if _, _, err := net.SplitHostPort(tr.Metadata["scalerAddress"]); err != nil {
			return fmt.Errorf("spec.triggers[%d].metadata.scalerAddress: %w", i, err)
		}
		if _, err := external.ParseTrigger(tr.Metadata, so.Namespace, store.DefaultMaxWindow, store.DefaultResolution); err != nil {
			return fmt.Errorf("spec.triggers[%d]: %w", i, err)
		}
	}
	return nil
}

// kedaExample is envoy/keda/ read into its objects.
type kedaExample struct {
	deployment   *appsv1.Deployment
	service      *corev1.Service
	scaledObject *kedav1alpha1.ScaledObject
	pluginConfig []byte
}

func readKEDAExample(t *testing.T) kedaExample {
	t.Helper()
	var ex kedaExample
	files, err := filepath.Glob(filepath.Join("keda", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("envoy/keda: %v, %d files", err, len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range splitDocuments(data) {
			js, err := yaml.YAMLToJSON(doc)
			if err != nil {
				t.Fatal(err)
			}
			var tm struct {
				Kind string          `json:"kind"`
				Spec json.RawMessage `json:"spec"`
			}
			if err := json.Unmarshal(js, &tm); err != nil {
				continue
			}
			switch tm.Kind {
			case kindDeployment:
				ex.deployment = new(appsv1.Deployment)
				err = json.Unmarshal(js, ex.deployment)
			case kindService:
				ex.service = new(corev1.Service)
				err = json.Unmarshal(js, ex.service)
			case kindScaledObject:
				ex.scaledObject = new(kedav1alpha1.ScaledObject)
				err = json.Unmarshal(js, ex.scaledObject)
			case istioKind:
				var spec struct {
					PluginConfig json.RawMessage `json:"pluginConfig"`
				}
				err = json.Unmarshal(tm.Spec, &spec)
				ex.pluginConfig = spec.PluginConfig
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		}
	}
	if ex.deployment == nil || ex.service == nil || ex.scaledObject == nil || ex.pluginConfig == nil {
		t.Fatal("envoy/keda needs a Deployment, a Service, a ScaledObject and a WasmPlugin")
	}
	return ex
}

// TestKEDAManifests checks that envoy/keda's objects agree with each other and
// with the scaler: the Deployment's flags are ones reqcount-scaler takes and
// its ports are the flags' ports; the Service selects the pods and maps its
// ports onto them; the WasmPlugin's cluster is the Service's http port and its
// path the scaler's; the ScaledObject's scalerAddress is the Service's grpc
// port and its window fits the Deployment's -max-window; and KEDA's window
// plus cooldownPeriod is at least the filter's wake_after, so that the first
// request after a scale to zero is a wake-up (and held).
func TestKEDAManifests(t *testing.T) {
	ex := readKEDAExample(t)
	if err := checkKEDAExample(ex); err != nil {
		t.Fatal(err)
	}
}

// TestKEDAManifestChecksFail: each case breaks the example in one way.
func TestKEDAManifestChecksFail(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(*kedaExample)
		want    string
	}{
		{"unknown flag", func(ex *kedaExample) { ex.container().Args = append(ex.container().Args, "-max-keys=5") }, "-max-keys"},
		{"grpc port not the flag's", func(ex *kedaExample) { ex.container().Ports[1].ContainerPort = 9999 }, "-grpc"},
		{"selector misses the pods", func(ex *kedaExample) { ex.service.Spec.Selector = map[string]string{"app": "other"} }, "selector"},
		{"scalerAddress another port", func(ex *kedaExample) {
			ex.scaledObject.Spec.Triggers[0].Metadata["scalerAddress"] = "reqcount-scaler.reqcount.svc.cluster.local:8080"
		}, "scalerAddress"},
		{"scalerAddress another namespace", func(ex *kedaExample) {
			ex.scaledObject.Spec.Triggers[0].Metadata["scalerAddress"] = "reqcount-scaler.keda.svc.cluster.local:9090"
		}, "scalerAddress"},
		{"window over -max-window", func(ex *kedaExample) { ex.scaledObject.Spec.Triggers[0].Metadata["window"] = "20m" }, "window"},
		{"cluster another port", func(ex *kedaExample) {
			ex.pluginConfig = bytes.Replace(ex.pluginConfig, []byte("outbound|8080||"), []byte("outbound|9090||"), 1)
		}, "cluster"},
		{"short cooldown", func(ex *kedaExample) {
			ex.scaledObject.Spec.CooldownPeriod = new(int32)
			ex.scaledObject.Spec.Triggers[0].Metadata["window"] = "10s"
		}, "wake_after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex := readKEDAExample(t)
			tc.breakIt(&ex)
			err := checkKEDAExample(ex)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func (ex *kedaExample) container() *corev1.Container {
	return &ex.deployment.Spec.Template.Spec.Containers[0]
}

func checkKEDAExample(ex kedaExample) error {
	c := ex.container()
	// The container's args, read by reqcount-scaler's own flags.
	fs := flag.NewFlagSet("reqcount-scaler", flag.ContinueOnError)
	fs.SetOutput(new(bytes.Buffer))
	var f server.Flags
	f.Register(fs)
	if err := fs.Parse(c.Args); err != nil {
		return fmt.Errorf("container %s args: %w", c.Name, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("container %s args: %q are not flags", c.Name, fs.Args())
	}
	if _, _, err := f.Options(); err != nil {
		return fmt.Errorf("container %s args: %w", c.Name, err)
	}
	port := func(addr, flagName string) (int32, error) {
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			return 0, fmt.Errorf("-%s %q: %w", flagName, addr, err)
		}
		n, err := strconv.Atoi(p)
		return int32(n), err
	}
	containerPorts := map[string]int32{}
	for _, p := range c.Ports {
		containerPorts[p.Name] = p.ContainerPort
	}
	for name, addr := range map[string]string{"http": f.HTTP, "grpc": f.GRPC} {
		p, err := port(addr, name)
		if err != nil {
			return err
		}
		if containerPorts[name] != p {
			return fmt.Errorf("container port %q is %d, but -%s listens on %d", name, containerPorts[name], name, p)
		}
	}
	maxWindow, res := f.MaxWindow(), f.Resolution()

	d, s := ex.deployment, ex.service
	if s.Namespace != d.Namespace {
		return fmt.Errorf("Service in %s, Deployment in %s", s.Namespace, d.Namespace)
	}
	for k, v := range s.Spec.Selector {
		if d.Spec.Template.Labels[k] != v {
			return fmt.Errorf("Service selector %s=%s does not select the Deployment's pods", k, v)
		}
	}
	// The Service ports that reach the container's http and grpc ports.
	var httpPort, grpcPort int32
	for _, p := range s.Spec.Ports {
		target := p.TargetPort.IntVal
		if p.TargetPort.Type == intstr.String {
			target = containerPorts[p.TargetPort.StrVal]
		}
		if target == 0 || !slices.Contains(slices.Collect(maps.Values(containerPorts)), target) {
			return fmt.Errorf("Service port %s: targetPort %s is not a container port", p.Name, p.TargetPort.String())
		}
		switch target {
		case containerPorts["grpc"]:
			grpcPort = p.Port
		case containerPorts["http"]:
			httpPort = p.Port
		}
	}
	host := s.Name + "." + s.Namespace + ".svc.cluster.local"

	cfg, err := config.Parse(ex.pluginConfig)
	if err != nil {
		return fmt.Errorf("WasmPlugin pluginConfig: %w", err)
	}
	if want := fmt.Sprintf("outbound|%d||%s", httpPort, host); cfg.Cluster != want {
		return fmt.Errorf("WasmPlugin cluster %q, want the scaler's http port %q", cfg.Cluster, want)
	}
	if cfg.Path != f.Path() {
		return fmt.Errorf("WasmPlugin path %q, the scaler serves -path %q", cfg.Path, f.Path())
	}

	so := ex.scaledObject
	cooldown := int32(300) // KEDA's default
	if so.Spec.CooldownPeriod != nil {
		cooldown = *so.Spec.CooldownPeriod
	}
	for i, tr := range so.Spec.Triggers {
		if tr.Type != "external-push" {
			continue
		}
		if want := fmt.Sprintf("%s:%d", host, grpcPort); tr.Metadata["scalerAddress"] != want {
			return fmt.Errorf("trigger %d: scalerAddress %q, want the scaler's grpc port %q", i, tr.Metadata["scalerAddress"], want)
		}
		target, err := external.ParseTrigger(tr.Metadata, so.Namespace, maxWindow, res)
		if err != nil {
			return fmt.Errorf("trigger %d (with the Deployment's -max-window %v): %w", i, maxWindow, err)
		}
		if target.Window+time.Duration(cooldown)*time.Second < cfg.WakeAfter {
			return fmt.Errorf("trigger %d: window %v + cooldownPeriod %ds is under the filter's wake_after %v: a request after the scale to zero "+
				"would not be a wake-up, so not held", i, target.Window, cooldown, cfg.WakeAfter)
		}
		if cfg.FlushInterval > 0 && target.Window < 2*cfg.FlushInterval {
			return fmt.Errorf("trigger %d: window %v is under two of the filter's flush_interval %v: the rate would jump with each report", i, target.Window, cfg.FlushInterval)
		}
	}
	return nil
}
