package config_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/reqcount/reqcount/filter/config"
)

// TestDefaults checks every default applied to the smallest valid configuration,
// one named field at a time, so a changed default names itself.
func TestDefaults(t *testing.T) {
	c, err := config.Parse([]byte(`{"cluster":"collector"}`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	for _, tc := range []struct {
		field     string
		got, want any
	}{
		{"cluster", c.Cluster, "collector"},
		{"authority (= cluster)", c.Authority, "collector"},
		{"path", c.Path, "/informer/incoming-request"},
		{"mode", c.Mode, config.ModeSingle},
		{"flush_interval", c.FlushInterval, 30 * time.Second},
		{"timeout", c.Timeout, 2 * time.Second},
		{"key_source", c.KeySource, config.KeySourceAuthority},
		{"service_header", c.ServiceHeader, "x-service"},
		{"namespace_header", c.NamespaceHeader, "x-namespace"},
		{"service", c.Service, ""},
		{"namespace", c.Namespace, ""},
		{"default_namespace", c.DefaultNamespace, "default"},
		{"cluster_domain", c.ClusterDomain, "cluster.local"},
		{"max_keys", c.MaxKeys, 10000},
		{"wake_after", c.WakeAfter, 30 * time.Second},
		{"memo_size", c.MemoSize, 4096},
		{"aggregate", c.Aggregate, config.DefaultAggregate},
		{"include", len(c.Include), 0},
		{"exclude", len(c.Exclude), 0},
		{"ignore_paths", len(c.IgnorePaths), 0},
		{"ignore_user_agents", len(c.IgnoreUserAgents), 0},
	} {
		t.Run(tc.field, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("default %s = %#v, want %#v", tc.field, tc.got, tc.want)
			}
		})
	}
	// The exported constants are the documented defaults.
	if config.DefaultPath != c.Path || config.DefaultFlushInterval != c.FlushInterval ||
		config.DefaultTimeout != c.Timeout || config.DefaultServiceHeader != c.ServiceHeader ||
		config.DefaultNamespaceHeader != c.NamespaceHeader || config.DefaultDefaultNamespace != c.DefaultNamespace ||
		config.DefaultClusterDomain != c.ClusterDomain || config.DefaultMaxKeys != c.MaxKeys ||
		config.DefaultWakeAfter != c.WakeAfter || config.DefaultMemoSize != c.MemoSize {
		t.Fatalf("Default* constants disagree with the parsed defaults: %+v", c)
	}
}

// TestAccepted checks valid configurations and what each field becomes.
func TestAccepted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		json  string
		check func(config.Config) bool
	}{
		{"every field set", `{"cluster":"outbound|8013||op.elasti.svc.cluster.local","authority":"op.elasti:8013",
			"path":"/count?x=1","mode":"batch","flush_interval":"250ms","timeout":"1m","key_source":"header",
			"service_header":"x-svc","namespace_header":"x-ns","default_namespace":"apps",
			"cluster_domain":"corp.example","max_keys":5}`,
			func(c config.Config) bool {
				return reflect.DeepEqual(c, config.Config{Cluster: "outbound|8013||op.elasti.svc.cluster.local", Authority: "op.elasti:8013",
					Path: "/count?x=1", Mode: config.ModeBatch, FlushInterval: 250 * time.Millisecond, Timeout: time.Minute,
					KeySource: config.KeySourceHeader, ServiceHeader: "x-svc", NamespaceHeader: "x-ns",
					DefaultNamespace: "apps", ClusterDomain: "corp.example", MaxKeys: 5, MemoSize: 20,
					WakeAfter: config.DefaultWakeAfter, Aggregate: config.AggregateEnvoy,
					HoldProbePath: config.DefaultHoldProbePath, HoldProbeInterval: config.DefaultHoldProbeInterval,
					HoldTimeout: config.DefaultHoldTimeout, HoldMax: config.DefaultHoldMax})
			}},
		{"hold fields", `{"cluster":"c","hold":["web.shop","*.ml"],"hold_probe_path":"/ready","hold_probe_interval":"100ms","hold_timeout":"45s","hold_max":50}`,
			func(c config.Config) bool {
				return reflect.DeepEqual(c.Hold, []config.Pattern{{Service: "web", Namespace: "shop"}, {Service: "*", Namespace: "ml"}}) &&
					c.HoldProbePath == "/ready" && c.HoldProbeInterval == 100*time.Millisecond && c.HoldTimeout == 45*time.Second &&
					c.HoldMax == 50 && c.Holds("api", "ml") && !c.Holds("api", "shop")
			}},
		{"hold defaults: nothing held", `{"cluster":"c"}`,
			func(c config.Config) bool {
				return len(c.Hold) == 0 && !c.Holds("web", "shop") && c.HoldTimeout == 30*time.Second
			}},
		{"wake_after 0s turns wake-ups off", `{"cluster":"c","wake_after":"0s"}`, func(c config.Config) bool { return c.WakeAfter == 0 }},
		{"wake_after 0 (no unit) turns wake-ups off", `{"cluster":"c","wake_after":"0"}`, func(c config.Config) bool { return c.WakeAfter == 0 }},
		{"wake_after 5m", `{"cluster":"c","wake_after":"5m"}`, func(c config.Config) bool { return c.WakeAfter == 5*time.Minute }},
		{"aggregate envoy", `{"cluster":"c","aggregate":"envoy"}`, func(c config.Config) bool { return c.Aggregate == config.AggregateEnvoy }},
		{"aggregate worker", `{"cluster":"c","aggregate":"worker"}`, func(c config.Config) bool { return c.Aggregate == config.AggregateWorker }},
		{"memo_size 0 turns the memo off", `{"cluster":"c","memo_size":0}`, func(c config.Config) bool { return c.MemoSize == 0 }},
		{"memo_size default follows max_keys", `{"cluster":"c","max_keys":3}`, func(c config.Config) bool { return c.MemoSize == 12 }},
		{"include and exclude", `{"cluster":"c","include":["*.ml","web.shop"],"exclude":["*.kube-system","db.*"]}`,
			func(c config.Config) bool {
				return reflect.DeepEqual(c.Include, []config.Pattern{{Service: "*", Namespace: "ml"}, {Service: "web", Namespace: "shop"}}) &&
					reflect.DeepEqual(c.Exclude, []config.Pattern{{Service: "*", Namespace: "kube-system"}, {Service: "db", Namespace: "*"}})
			}},
		{"empty lists are unset", `{"cluster":"c","include":[],"ignore_paths":[]}`,
			func(c config.Config) bool { return len(c.Include) == 0 && len(c.IgnorePaths) == 0 }},
		{"ignore lists", `{"cluster":"c","ignore_paths":["/healthz","/metrics"],"ignore_user_agents":["kube-probe/","Prometheus/"]}`,
			func(c config.Config) bool {
				return reflect.DeepEqual(c.IgnorePaths, []string{"/healthz", "/metrics"}) &&
					reflect.DeepEqual(c.IgnoreUserAgents, []string{"kube-probe/", "Prometheus/"})
			}},
		{"user agent prefix with a space", `{"cluster":"c","ignore_user_agents":["Mozilla/5.0 (compatible; Google"]}`,
			func(c config.Config) bool { return len(c.IgnoreUserAgents) == 1 }},
		{"static key included", `{"cluster":"c","key_source":"static","service":"web","namespace":"shop","include":["*.shop"]}`,
			func(c config.Config) bool { return c.Counts("web", "shop") }},
		{"whitespace around the object", " \n\t{\"cluster\":\"c\"}\r\n ", func(c config.Config) bool { return c.Cluster == "c" }},
		{"mode single", `{"cluster":"c","mode":"single"}`, func(c config.Config) bool { return c.Mode == config.ModeSingle }},
		{"key_source authority", `{"cluster":"c","key_source":"authority"}`,
			func(c config.Config) bool { return c.KeySource == config.KeySourceAuthority }},
		{"static", `{"cluster":"c","key_source":"static","service":"web","namespace":"shop"}`,
			func(c config.Config) bool {
				return c.KeySource == config.KeySourceStatic && c.Service == "web" && c.Namespace == "shop"
			}},
		{"cluster_domain trailing dot stripped", `{"cluster":"c","cluster_domain":"cluster.local."}`,
			func(c config.Config) bool { return c.ClusterDomain == "cluster.local" }},
		{"cluster_domain lowered", `{"cluster":"c","cluster_domain":"Corp.EXAMPLE"}`,
			func(c config.Config) bool { return c.ClusterDomain == "corp.example" }},
		{"cluster_domain one label", `{"cluster":"c","cluster_domain":"local"}`,
			func(c config.Config) bool { return c.ClusterDomain == "local" }},
		{"header names with token punctuation", `{"cluster":"c","key_source":"header","service_header":"x_svc.v1~!"}`,
			func(c config.Config) bool { return c.ServiceHeader == "x_svc.v1~!" }},
		{"max_keys 1", `{"cluster":"c","max_keys":1}`, func(c config.Config) bool { return c.MaxKeys == 1 }},
		{"max_keys MaxMaxKeys", fmt.Sprintf(`{"cluster":"c","max_keys":%d}`, config.MaxMaxKeys),
			func(c config.Config) bool { return c.MaxKeys == config.MaxMaxKeys }},
		{"cluster_domain of 253 characters", `{"cluster":"c","cluster_domain":"` + strings.Repeat("abcdefg.", 31) + `abcde"}`,
			func(c config.Config) bool { return len(c.ClusterDomain) == 253 }},
		{"duration 1ms", `{"cluster":"c","flush_interval":"1ms","timeout":"1ms"}`,
			func(c config.Config) bool {
				return c.FlushInterval == time.Millisecond && c.Timeout == time.Millisecond
			}},
		{"duration 1.5s", `{"cluster":"c","flush_interval":"1.5s"}`,
			func(c config.Config) bool { return c.FlushInterval == 1500*time.Millisecond }},
		{"duration in microseconds that are whole ms", `{"cluster":"c","timeout":"2000us"}`,
			func(c config.Config) bool { return c.Timeout == 2*time.Millisecond }},
		{"longest duration: MaxUint32 ms", `{"cluster":"c","timeout":"4294967295ms"}`,
			func(c config.Config) bool { return c.Timeout == 4294967295*time.Millisecond }},
		{"null field means absent", `{"cluster":"c","mode":null}`, func(c config.Config) bool { return c.Mode == config.ModeSingle }},
		{"exactly MaxConfigSize bytes", padTo(`{"cluster":"c"}`, config.MaxConfigSize),
			func(c config.Config) bool { return c.Cluster == "c" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Parse([]byte(tc.json))
			if err != nil {
				t.Fatalf("Parse(%s): %v", tc.json, err)
			}
			if !tc.check(c) {
				t.Fatalf("Parse(%s) = %+v", tc.json, c)
			}
		})
	}
}

// padTo pads a JSON document with trailing spaces to n bytes.
func padTo(doc string, n int) string { return doc + strings.Repeat(" ", n-len(doc)) }

// TestRefused checks that every bad configuration is refused with an *Error that
// names the field at fault ("" for the document as a whole), and that its message
// names it too.
func TestRefused(t *testing.T) {
	const c = `"cluster":"c"`
	for _, tc := range []struct {
		name, json, field string
	}{
		// The document as a whole.
		{"empty", ``, ""},
		{"whitespace only", " \n\t\r ", ""},
		{"not JSON", `cluster: c`, ""},
		{"truncated object", `{"cluster":"c"`, ""},
		{"JSON array", `[{"cluster":"c"}]`, ""},
		{"JSON string", `"c"`, ""},
		{"JSON number", `42`, ""},
		{"JSON true", `true`, ""},
		{"trailing object", `{"cluster":"c"} {}`, ""},
		{"trailing garbage", `{"cluster":"c"}x`, ""},
		{"trailing comma", `{"cluster":"c"},`, ""},
		{"larger than MaxConfigSize", padTo(`{"cluster":"c"}`, config.MaxConfigSize+1), ""},

		{"authority defaulted from an Istio cluster name", `{"cluster":"outbound|8013||op.elasti.svc.cluster.local"}`, "authority"},
		{"authority with a space", `{"cluster":"c","authority":"a b"}`, "authority"},
		{"authority with a pipe", `{"cluster":"c","authority":"a|b"}`, "authority"},
		{"unknown field", `{` + c + `,"clusterr":"x"}`, "clusterr"},
		{"unknown field first", `{"flush":"1s",` + c + `}`, "flush"},
		{"field in another case", `{"Cluster":"c"}`, "Cluster"},
		{"field in upper case", `{` + c + `,"MAX_KEYS":3}`, "MAX_KEYS"},
		{"field given twice", `{` + c + `,"cluster":"d"}`, "cluster"},

		// Wrong JSON types, one per field.
		{"cluster number", `{"cluster":1}`, "cluster"},
		{"cluster object", `{"cluster":{}}`, "cluster"},
		{"authority bool", `{` + c + `,"authority":true}`, "authority"},
		{"path array", `{` + c + `,"path":["/x"]}`, "path"},
		{"mode number", `{` + c + `,"mode":1}`, "mode"},
		{"flush_interval number", `{` + c + `,"flush_interval":1000}`, "flush_interval"},
		{"timeout number", `{` + c + `,"timeout":2}`, "timeout"},
		{"key_source number", `{` + c + `,"key_source":0}`, "key_source"},
		{"service_header number", `{` + c + `,"service_header":1}`, "service_header"},
		{"namespace_header bool", `{` + c + `,"namespace_header":false}`, "namespace_header"},
		{"service number", `{` + c + `,"key_source":"static","service":1,"namespace":"ns"}`, "service"},
		{"namespace number", `{` + c + `,"key_source":"static","service":"s","namespace":1}`, "namespace"},
		{"default_namespace number", `{` + c + `,"default_namespace":1}`, "default_namespace"},
		{"cluster_domain array", `{` + c + `,"cluster_domain":[]}`, "cluster_domain"},
		{"max_keys string", `{` + c + `,"max_keys":"10"}`, "max_keys"},
		{"max_keys fraction", `{` + c + `,"max_keys":1.5}`, "max_keys"},
		{"max_keys 5.0", `{` + c + `,"max_keys":5.0}`, "max_keys"},
		{"max_keys exponent", `{` + c + `,"max_keys":1e3}`, "max_keys"},
		{"max_keys beyond int64", `{` + c + `,"max_keys":99999999999999999999}`, "max_keys"},

		{"missing cluster", `{}`, "cluster"},
		{"null document", `null`, "cluster"},
		{"empty cluster", `{"cluster":""}`, "cluster"},
		{"cluster with space", `{"cluster":"my cluster"}`, "cluster"},
		{"cluster with control char", `{"cluster":"c\u0001"}`, "cluster"},
		{"cluster with DEL", `{"cluster":"c\u007f"}`, "cluster"},
		{"empty authority", `{` + c + `,"authority":""}`, "authority"},
		{"authority with space", `{` + c + `,"authority":"op elasti"}`, "authority"},
		{"authority with newline", `{` + c + `,"authority":"op\nx"}`, "authority"},
		{"empty path", `{` + c + `,"path":""}`, "path"},
		{"path without slash", `{` + c + `,"path":"informer"}`, "path"},
		{"path with space", `{` + c + `,"path":"/a b"}`, "path"},
		{"path with tab", `{` + c + `,"path":"/a\tb"}`, "path"},

		{"unknown mode", `{` + c + `,"mode":"stream"}`, "mode"},
		{"mode upper case", `{` + c + `,"mode":"Single"}`, "mode"},
		{"empty mode", `{` + c + `,"mode":""}`, "mode"},
		{"unknown key_source", `{` + c + `,"key_source":"path"}`, "key_source"},
		{"empty key_source", `{` + c + `,"key_source":""}`, "key_source"},

		{"flush_interval unparsable", `{` + c + `,"flush_interval":"soon"}`, "flush_interval"},
		{"flush_interval without unit", `{` + c + `,"flush_interval":"1000"}`, "flush_interval"},
		{"flush_interval empty", `{` + c + `,"flush_interval":""}`, "flush_interval"},
		{"flush_interval zero", `{` + c + `,"flush_interval":"0s"}`, "flush_interval"},
		{"flush_interval bare zero", `{` + c + `,"flush_interval":"0"}`, "flush_interval"},
		{"flush_interval negative", `{` + c + `,"flush_interval":"-1s"}`, "flush_interval"},
		{"flush_interval sub-millisecond", `{` + c + `,"flush_interval":"1500us"}`, "flush_interval"},
		{"flush_interval under 1ms", `{` + c + `,"flush_interval":"999us"}`, "flush_interval"},
		{"flush_interval too long", `{` + c + `,"flush_interval":"4294967296ms"}`, "flush_interval"},
		{"flush_interval overflows Duration", `{` + c + `,"flush_interval":"3000000h"}`, "flush_interval"},
		{"timeout unparsable", `{` + c + `,"timeout":"2 s"}`, "timeout"},
		{"timeout zero", `{` + c + `,"timeout":"0ms"}`, "timeout"},
		{"timeout negative", `{` + c + `,"timeout":"-1s"}`, "timeout"},
		{"timeout sub-millisecond", `{` + c + `,"timeout":"1500us"}`, "timeout"},
		{"timeout nanoseconds", `{` + c + `,"timeout":"1ns"}`, "timeout"},
		{"timeout too long", `{` + c + `,"timeout":"1200h"}`, "timeout"},

		{"static without service", `{` + c + `,"key_source":"static","namespace":"shop"}`, "service"},
		{"static without namespace", `{` + c + `,"key_source":"static","service":"web"}`, "namespace"},
		{"static without either", `{` + c + `,"key_source":"static"}`, "service"},
		{"static empty service", `{` + c + `,"key_source":"static","service":"","namespace":"shop"}`, "service"},
		{"static service upper case", `{` + c + `,"key_source":"static","service":"Web","namespace":"shop"}`, "service"},
		{"static service with dot", `{` + c + `,"key_source":"static","service":"web.shop","namespace":"shop"}`, "service"},
		{"static service with underscore", `{` + c + `,"key_source":"static","service":"w_b","namespace":"shop"}`, "service"},
		{"static service 64 chars", `{` + c + `,"key_source":"static","service":"` + strings.Repeat("a", 64) + `","namespace":"shop"}`, "service"},
		{"static namespace leading dash", `{` + c + `,"key_source":"static","service":"web","namespace":"-shop"}`, "namespace"},
		{"static namespace trailing dash", `{` + c + `,"key_source":"static","service":"web","namespace":"shop-"}`, "namespace"},
		{"service with key_source authority", `{` + c + `,"service":"web"}`, "service"},
		{"namespace with key_source authority", `{` + c + `,"namespace":"shop"}`, "namespace"},
		{"both with key_source header", `{` + c + `,"key_source":"header","service":"web","namespace":"shop"}`, "service"},
		{"namespace with key_source header", `{` + c + `,"key_source":"header","namespace":"shop"}`, "namespace"},

		{"service_header upper case", `{` + c + `,"service_header":"X-Service"}`, "service_header"},
		{"service_header with space", `{` + c + `,"service_header":"x service"}`, "service_header"},
		{"service_header empty", `{` + c + `,"service_header":""}`, "service_header"},
		{"service_header pseudo-header", `{` + c + `,"service_header":":authority"}`, "service_header"},
		{"namespace_header upper case", `{` + c + `,"namespace_header":"X-NS"}`, "namespace_header"},
		{"namespace_header with space", `{` + c + `,"namespace_header":"x ns"}`, "namespace_header"},
		{"namespace_header non-ASCII", `{` + c + `,"namespace_header":"x-é"}`, "namespace_header"},

		{"default_namespace empty", `{` + c + `,"default_namespace":""}`, "default_namespace"},
		{"default_namespace upper case", `{` + c + `,"default_namespace":"Default"}`, "default_namespace"},
		{"default_namespace with dot", `{` + c + `,"default_namespace":"a.b"}`, "default_namespace"},
		{"default_namespace 64 chars", `{` + c + `,"default_namespace":"` + strings.Repeat("n", 64) + `"}`, "default_namespace"},

		{"cluster_domain empty", `{` + c + `,"cluster_domain":""}`, "cluster_domain"},
		{"cluster_domain only a dot", `{` + c + `,"cluster_domain":"."}`, "cluster_domain"},
		{"cluster_domain underscore", `{` + c + `,"cluster_domain":"bad_domain"}`, "cluster_domain"},
		{"cluster_domain two trailing dots", `{` + c + `,"cluster_domain":"cluster.local.."}`, "cluster_domain"},
		{"cluster_domain leading dot", `{` + c + `,"cluster_domain":".cluster.local"}`, "cluster_domain"},
		{"cluster_domain empty label", `{` + c + `,"cluster_domain":"cluster..local"}`, "cluster_domain"},
		{"cluster_domain with space", `{` + c + `,"cluster_domain":"cluster local"}`, "cluster_domain"},
		{"cluster_domain 64-char label", `{` + c + `,"cluster_domain":"` + strings.Repeat("d", 64) + `.local"}`, "cluster_domain"},
		{"cluster_domain over 253", `{` + c + `,"cluster_domain":"` + strings.TrimSuffix(strings.Repeat("abcdefg.", 32), ".") + `x"}`, "cluster_domain"},

		{"max_keys 0", `{` + c + `,"max_keys":0}`, "max_keys"},
		{"hold pattern not a key", `{` + c + `,"hold":["web"]}`, "hold"},
		{"hold_probe_path without slash", `{` + c + `,"hold_probe_path":"ready"}`, "hold_probe_path"},
		{"hold_probe_interval too short", `{` + c + `,"hold_probe_interval":"1ms"}`, "hold_probe_interval"},
		{"hold_timeout beyond stream_idle_timeout", `{` + c + `,"hold_timeout":"10m"}`, "hold_timeout"},
		{"hold_timeout not a duration", `{` + c + `,"hold_timeout":"soon"}`, "hold_timeout"},
		{"hold_max 0", `{` + c + `,"hold_max":0}`, "hold_max"},
		{"hold_max huge", `{` + c + `,"hold_max":1000000}`, "hold_max"},
		{"max_keys -1", `{` + c + `,"max_keys":-1}`, "max_keys"},
		{"max_keys too large", fmt.Sprintf(`{`+c+`,"max_keys":%d}`, config.MaxMaxKeys+1), "max_keys"},
		{"max_keys huge", `{` + c + `,"max_keys":9223372036854775807}`, "max_keys"},
		{"aggregate unknown", `{` + c + `,"aggregate":"process"}`, "aggregate"},
		{"aggregate not a string", `{` + c + `,"aggregate":true}`, "aggregate"},
		{"memo_size negative", `{` + c + `,"memo_size":-1}`, "memo_size"},
		{"memo_size too large", fmt.Sprintf(`{`+c+`,"memo_size":%d}`, config.MaxMemoSize+1), "memo_size"},
		{"memo_size string", `{` + c + `,"memo_size":"10"}`, "memo_size"},
		{"wake_after not a duration", `{` + c + `,"wake_after":"later"}`, "wake_after"},
		{"wake_after negative", `{` + c + `,"wake_after":"-1s"}`, "wake_after"},
		{"wake_after sub-millisecond", `{` + c + `,"wake_after":"1500us"}`, "wake_after"},
		{"wake_after a number", `{` + c + `,"wake_after":30}`, "wake_after"},
		{"include not a list", `{` + c + `,"include":"web.shop"}`, "include"},
		{"include no dot", `{` + c + `,"include":["web"]}`, "include"},
		{"include bad label", `{` + c + `,"include":["Web.shop"]}`, "include"},
		{"include three parts", `{` + c + `,"include":["web.shop.svc"]}`, "include"},
		{"include partial wildcard", `{` + c + `,"include":["web-*.shop"]}`, "include"},
		{"include empty pattern", `{` + c + `,"include":[""]}`, "include"},
		{"include not strings", `{` + c + `,"include":[1]}`, "include"},
		{"include too many", `{` + c + `,"include":[` + strings.Repeat(`"a.b",`, config.MaxPatterns) + `"a.b"]}`, "include"},
		{"exclude bad", `{` + c + `,"exclude":["*"]}`, "exclude"},
		{"exclude null entry", `{` + c + `,"exclude":["web.shop",null]}`, "exclude"},
		{"static key not included", `{` + c + `,"key_source":"static","service":"web","namespace":"shop","include":["*.ml"]}`, "include"},
		{"static key excluded", `{` + c + `,"key_source":"static","service":"web","namespace":"shop","exclude":["web.*"]}`, "exclude"},
		{"ignore_paths no slash", `{` + c + `,"ignore_paths":["healthz"]}`, "ignore_paths"},
		{"ignore_paths empty entry", `{` + c + `,"ignore_paths":[""]}`, "ignore_paths"},
		{"ignore_paths space", `{` + c + `,"ignore_paths":["/a b"]}`, "ignore_paths"},
		{"ignore_paths not a list", `{` + c + `,"ignore_paths":"/healthz"}`, "ignore_paths"},
		{"ignore_user_agents empty entry", `{` + c + `,"ignore_user_agents":[""]}`, "ignore_user_agents"},
		{"ignore_user_agents control", `{` + c + `,"ignore_user_agents":["kube\u0007"]}`, "ignore_user_agents"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := config.Parse([]byte(tc.json))
			if err == nil {
				t.Fatalf("Parse(%q) accepted: %+v", tc.json, got)
			}
			if !reflect.DeepEqual(got, config.Config{}) {
				t.Errorf("Parse returned a non-zero Config with its error: %+v", got)
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T) is not a *config.Error", err, err)
			}
			if ce.Field != tc.field {
				t.Fatalf("Field = %q, want %q (error: %v)", ce.Field, tc.field, err)
			}
			if ce.Reason == "" {
				t.Errorf("empty Reason: %v", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "configuration: ") || strings.Contains(msg, "\n") {
				t.Errorf("message %q is not one line starting with \"configuration: \"", msg)
			}
			if tc.field != "" && !strings.Contains(msg, fmt.Sprintf("field %q", tc.field)) {
				t.Errorf("message %q does not name field %q", msg, tc.field)
			}
		})
	}
}

// TestMaxConfigSizeBoundsTheDocument checks that a document that is too large is
// refused for its size, even when it is otherwise valid.
func TestMaxConfigSizeBoundsTheDocument(t *testing.T) {
	doc := padTo(`{"cluster":"c"}`, config.MaxConfigSize+1)
	_, err := config.Parse([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprint(config.MaxConfigSize)) {
		t.Fatalf("Parse of %d bytes: %v, want an error naming the limit %d", len(doc), err, config.MaxConfigSize)
	}
}

func TestErrorString(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  config.Error
		want string
	}{
		{"field", config.Error{Field: "mode", Reason: "bad"}, `configuration: field "mode": bad`},
		{"document", config.Error{Reason: "empty"}, `configuration: empty`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Fatalf("Error() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestModeAndKeySourceString(t *testing.T) {
	for _, tc := range []struct {
		got  fmt.Stringer
		want string
	}{
		{config.ModeSingle, "single"},
		{config.ModeBatch, "batch"},
		{config.KeySourceAuthority, "authority"},
		{config.KeySourceHeader, "header"},
		{config.KeySourceStatic, "static"},
	} {
		if s := tc.got.String(); s != tc.want {
			t.Errorf("String() = %q, want %q", s, tc.want)
		}
	}
	// Each spelling parses back to the value it names.
	for _, m := range []config.Mode{config.ModeSingle, config.ModeBatch} {
		c, err := config.Parse([]byte(`{"cluster":"c","mode":"` + m.String() + `"}`))
		if err != nil || c.Mode != m {
			t.Errorf("mode %q: %v, %v", m, c.Mode, err)
		}
	}
	for _, k := range []config.KeySource{config.KeySourceAuthority, config.KeySourceHeader} {
		c, err := config.Parse([]byte(`{"cluster":"c","key_source":"` + k.String() + `"}`))
		if err != nil || c.KeySource != k {
			t.Errorf("key_source %q: %v, %v", k, c.KeySource, err)
		}
	}
}

// TestSlices checks how a flush interval is split into ticks: whole milliseconds,
// at least MinTickPeriod, at most MaxSlices, and slices × period = interval exactly.
func TestSlices(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		slices   int
		period   time.Duration
	}{
		{time.Millisecond, 1, time.Millisecond},
		{100 * time.Millisecond, 1, 100 * time.Millisecond},
		{199 * time.Millisecond, 1, 199 * time.Millisecond},
		{250 * time.Millisecond, 2, 125 * time.Millisecond},
		{time.Second, 10, 100 * time.Millisecond},
		{1009 * time.Millisecond, 1, 1009 * time.Millisecond}, // a prime number of ms
		{10 * time.Second, 50, 200 * time.Millisecond},
		{30 * time.Second, 60, 500 * time.Millisecond},
		{time.Hour, 64, 56250 * time.Millisecond},
	} {
		c := config.Config{FlushInterval: tc.interval}
		if got := c.Slices(); got != tc.slices {
			t.Errorf("%v: Slices() = %d, want %d", tc.interval, got, tc.slices)
		}
		if got := c.TickPeriod(); got != tc.period || got*time.Duration(c.Slices()) != tc.interval {
			t.Errorf("%v: TickPeriod() = %v, want %v", tc.interval, got, tc.period)
		}
	}
}

// TestPatterns checks pattern matching and Config.Counts.
func TestPatterns(t *testing.T) {
	for _, tc := range []struct {
		pattern  string
		svc, ns  string
		want, ok bool
	}{
		{"web.shop", "web", "shop", true, true},
		{"web.shop", "web", "blog", false, true},
		{"*.ml", "model", "ml", true, true},
		{"*.ml", "ml", "shop", false, true},
		{"web.*", "web", "anything", true, true},
		{"*.*", "a", "b", true, true},
		{"web", "", "", false, false},
		{".shop", "", "", false, false},
		{"web.", "", "", false, false},
		{"a.b.c", "", "", false, false},
		{"**.shop", "", "", false, false},
	} {
		p, ok := config.ParsePattern(tc.pattern)
		if ok != tc.ok {
			t.Errorf("ParsePattern(%q) ok = %v, want %v", tc.pattern, ok, tc.ok)
			continue
		}
		if ok && p.Match(tc.svc, tc.ns) != tc.want {
			t.Errorf("%q.Match(%s, %s) = %v, want %v", tc.pattern, tc.svc, tc.ns, !tc.want, tc.want)
		}
		if ok && p.String() != tc.pattern {
			t.Errorf("String() = %q, want %q", p.String(), tc.pattern)
		}
	}
	c, err := config.Parse([]byte(`{"cluster":"c","include":["*.shop","api.*"],"exclude":["db.shop","*.kube-system"]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		svc, ns string
		want    bool
	}{
		{"web", "shop", true}, {"db", "shop", false}, {"api", "blog", true}, {"api", "kube-system", false}, {"web", "blog", false},
	} {
		if got := c.Counts(tc.svc, tc.ns); got != tc.want {
			t.Errorf("Counts(%s, %s) = %v, want %v", tc.svc, tc.ns, got, tc.want)
		}
	}
}
