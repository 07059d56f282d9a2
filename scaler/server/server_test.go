package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/reqcount/reqcount/scaler/external"
	"github.com/reqcount/reqcount/scaler/ingest"
	"github.com/reqcount/reqcount/scaler/kedaclient"
	"github.com/reqcount/reqcount/scaler/server"
	"github.com/reqcount/reqcount/scaler/store"
)

// running is a server started on loopback for one test.
type running struct {
	srv    *server.Server
	url    string // the request-count endpoint
	base   string // http://host:port
	grpc   string
	conn   *grpc.ClientConn
	client pb.ExternalScalerClient
	stop   func() error
}

// fast store options: 100 ms buckets, windows up to 5 s.
var fast = store.Options{MaxWindow: 5 * time.Second, Resolution: 100 * time.Millisecond}

func start(t *testing.T, opts server.Options) *running {
	t.Helper()
	if opts.Store.MaxWindow == 0 {
		opts.Store = fast
	}
	opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	run, err := srv.Start("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := kedaclient.Dial(run.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	r := &running{srv: srv, base: "http://" + run.HTTPAddr, grpc: run.GRPCAddr, conn: conn,
		client: pb.NewExternalScalerClient(conn)}
	r.url = r.base + ingest.DefaultPath
	r.stop = func() error {
		err := run.Stop()
		conn.Close()
		return err
	}
	t.Cleanup(func() { r.stop() })
	return r
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	res, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func ref(name string, md map[string]string) *pb.ScaledObjectRef {
	return &pb.ScaledObjectRef{Name: name, Namespace: "shop", ScalerMetadata: md}
}

func webRef(window string) *pb.ScaledObjectRef {
	return ref("web", map[string]string{"service": "web", "targetRequestsPerSecond": "10", "window": window,
		"scalerAddress": "reqcount-scaler.keda:9090"})
}

// streamOf opens StreamIsActive for r and delivers its messages on a channel.
func streamOf(t *testing.T, ctx context.Context, c pb.ExternalScalerClient, r *pb.ScaledObjectRef) <-chan bool {
	t.Helper()
	s, err := c.StreamIsActive(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan bool, 16)
	go func() {
		defer close(ch)
		for {
			m, err := s.Recv()
			if err != nil {
				return
			}
			ch <- m.GetResult()
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan bool, within time.Duration) bool {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatal("stream ended")
		}
		return v
	case <-time.After(within):
		t.Fatalf("no stream message within %v", within)
		return false
	}
}

func TestWakeUpPushesActive(t *testing.T) {
	r := start(t, server.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := streamOf(t, ctx, r.client, webRef("1s"))
	if next(t, ch, 5*time.Second) {
		t.Fatal("first message true before any count")
	}
	sent := time.Now()
	if code, body := post(t, r.url, `{"count":1,"svc":"web","namespace":"shop"}`); code != 200 || body != ingest.SuccessBody {
		t.Fatalf("POST = %d %q", code, body)
	}
	if !next(t, ch, 5*time.Second) {
		t.Fatal("second message false after a wake-up")
	}
	t.Logf("wake-up POST → StreamIsActive true: %v", time.Since(sent))
	// More counts while active push nothing; the window's end pushes false.
	post(t, r.url, `{"count":3,"svc":"web","namespace":"shop"}`)
	if next(t, ch, 5*time.Second) {
		t.Fatal("a message other than false while active")
	}
	if elapsed := time.Since(sent); elapsed < time.Second {
		t.Fatalf("false pushed %v after the first count, before the 1s window passed", elapsed)
	}
	a, err := r.client.IsActive(ctx, webRef("1s"))
	if err != nil || a.GetResult() {
		t.Fatalf("IsActive after the window = %v, %v; want false", a, err)
	}
	// A new count turns it active again.
	post(t, r.url, `[{"count":1,"svc":"web","namespace":"shop"}]`)
	if !next(t, ch, 5*time.Second) {
		t.Fatal("no true after the next count")
	}
}

func TestRateFromCounts(t *testing.T) {
	r := start(t, server.Options{})
	ctx := context.Background()
	for _, n := range []int{10, 20, 30} {
		if code, _ := post(t, r.url, fmt.Sprintf(`{"count":%d,"svc":"web","namespace":"shop"}`, n)); code != 200 {
			t.Fatal(code)
		}
	}
	post(t, r.url, `{"count":1000,"svc":"api","namespace":"shop"}`) // another target: not in web's rate
	e := kedaclient.Poll(ctx, r.client, webRef("5s"))
	if e.Kind != "poll" {
		t.Fatalf("Poll = %+v", e)
	}
	if e.Rate != 60.0/5 || e.Target != 10 || !e.Active {
		t.Errorf("Poll = rate %v, target %v, active %v; want 12 (60 over 5s), 10, true", e.Rate, e.Target, e.Active)
	}
	spec, err := r.client.GetMetricSpec(ctx, webRef("5s"))
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.GetMetricSpecs()[0].GetMetricName(); got != "reqcount-shop-web" {
		t.Errorf("metric name %q", got)
	}
}

// TestSeveralScaledObjects: each trigger on its own stream sees only its own
// target; two triggers on one target both see it.
func TestSeveralScaledObjects(t *testing.T) {
	r := start(t, server.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	targets := []string{"web", "api", "cart"}
	chans := map[string]<-chan bool{}
	for _, svc := range targets {
		chans[svc] = streamOf(t, ctx, r.client, ref(svc, map[string]string{"service": svc, "targetRequestsPerSecond": "5", "window": "5s"}))
		if next(t, chans[svc], 5*time.Second) {
			t.Fatalf("%s: true before any count", svc)
		}
	}
	// A second ScaledObject on web, in another namespace's terms.
	web2 := streamOf(t, ctx, r.client, &pb.ScaledObjectRef{Name: "web-b", Namespace: "other",
		ScalerMetadata: map[string]string{"service": "web", "namespace": "shop", "targetRequestsPerSecond": "1", "window": "5s"}})
	if next(t, web2, 5*time.Second) {
		t.Fatal("web-b: true before any count")
	}
	post(t, r.url, `{"count":1,"svc":"web","namespace":"shop"}`)
	post(t, r.url, `{"count":1,"svc":"cart","namespace":"shop"}`)
	post(t, r.url, `{"count":1,"svc":"api","namespace":"other"}`) // not shop's api
	for _, ch := range []<-chan bool{chans["web"], chans["cart"], web2} {
		if !next(t, ch, 5*time.Second) {
			t.Fatal("false pushed for a reported target")
		}
	}
	if n := r.srv.Scaler.Streams(); n != 4 {
		t.Errorf("Streams = %d, want 4", n)
	}
	cancel()
	for range chans["api"] {
		t.Error("api's stream got a message after its initial false")
	}
}

// TestReopenedStreamGetsState: a stream opened again (KEDA restarted or
// reconnected) gets the current state at once; after the scaler restarts,
// the state starts inactive and the next count turns it active.
func TestReopenedStreamGetsState(t *testing.T) {
	r := start(t, server.Options{})
	post(t, r.url, `{"count":1,"svc":"web","namespace":"shop"}`)
	for i := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		if !next(t, streamOf(t, ctx, r.client, webRef("5s")), 5*time.Second) {
			t.Fatalf("stream %d: first message false for an active target", i)
		}
		cancel()
	}
	// The scaler restarts: KEDA's stream ends with EOF.
	ctx := context.Background()
	old := streamOf(t, ctx, r.client, webRef("5s"))
	next(t, old, 5*time.Second)
	if err := r.stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	for range old {
		t.Error("a message after shutdown")
	}
	r2 := start(t, server.Options{})
	ch := streamOf(t, ctx, r2.client, webRef("5s"))
	if next(t, ch, 5*time.Second) {
		t.Fatal("a new scaler's first message true")
	}
	post(t, r2.url, `{"count":1,"svc":"web","namespace":"shop"}`)
	if !next(t, ch, 5*time.Second) {
		t.Fatal("no true after the first count")
	}
}

// counter reads a counter or gauge of the server's registry; labels as
// name=value pairs.
func counter(t *testing.T, r *running, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := r.srv.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if labelValue(m, labels[i]) != labels[i+1] {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func TestBadBodiesRefused(t *testing.T) {
	r := start(t, server.Options{Ingest: ingest.Options{MaxBody: 1024}})
	big := `{"count":1,"svc":"web","namespace":"shop","pad":"` + strings.Repeat("x", 2000) + `"}`
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		reason, says             string
	}{
		{"GET", http.MethodGet, ingest.DefaultPath, "", 405, "method", "use POST"},
		{"other path", http.MethodPost, "/informer/other", `{"count":1,"svc":"web","namespace":"shop"}`, 404, "path", "POST /informer/incoming-request"},
		{"not JSON", http.MethodPost, ingest.DefaultPath, `count=1`, 400, "body", "invalid"},
		{"count 0", http.MethodPost, ingest.DefaultPath, `{"count":0,"svc":"web","namespace":"shop"}`, 400, "body", "count"},
		{"host name as svc", http.MethodPost, ingest.DefaultPath, `{"count":1,"svc":"web.shop.svc","namespace":"shop"}`, 400, "body", "svc"},
		{"trailing data", http.MethodPost, ingest.DefaultPath, `{"count":1,"svc":"web","namespace":"shop"}{"count":1,"svc":"api","namespace":"shop"}`, 400, "body", ""},
		{"one bad message in a batch", http.MethodPost, ingest.DefaultPath, `[{"count":1,"svc":"web","namespace":"shop"},{"count":-1,"svc":"api","namespace":"shop"}]`, 400, "body", "count"},
		{"empty array", http.MethodPost, ingest.DefaultPath, `[]`, 400, "body", "no messages"},
		{"too big", http.MethodPost, ingest.DefaultPath, big, 413, "size", "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, r.base+tc.path, strings.NewReader(tc.body))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.code || !strings.Contains(string(b), tc.says) {
				t.Errorf("%s %s = %d %q, want %d saying %q", tc.method, tc.path, res.StatusCode, b, tc.code, tc.says)
			}
		})
	}
	if st := r.srv.Store.Stats(); st.Messages != 0 || st.Targets != 0 {
		t.Errorf("store after bad bodies: %+v, want nothing counted", st)
	}
	for reason, want := range map[string]float64{"method": 1, "path": 1, "body": 6, "size": 1, "full": 0} {
		if got := counter(t, r, "reqcount_scaler_http_rejected_total", "reason", reason); got != want {
			t.Errorf("rejected{reason=%q} = %v, want %v", reason, got, want)
		}
	}
}

func TestFullAnswers503(t *testing.T) {
	r := start(t, server.Options{Store: store.Options{MaxTargets: 1, MaxWindow: 5 * time.Second, Resolution: 100 * time.Millisecond}})
	if code, _ := post(t, r.url, `{"count":1,"svc":"web","namespace":"shop"}`); code != 200 {
		t.Fatal(code)
	}
	if code, body := post(t, r.url, `{"count":1,"svc":"api","namespace":"shop"}`); code != 503 || !strings.Contains(body, "max-targets") {
		t.Fatalf("second target = %d %q, want 503 naming -max-targets", code, body)
	}
	if got := counter(t, r, "reqcount_scaler_messages_refused_total"); got != 1 {
		t.Errorf("refused = %v, want 1", got)
	}
}

func TestBadMetadataInvalidArgument(t *testing.T) {
	r := start(t, server.Options{})
	good := map[string]string{"service": "web", "targetRequestsPerSecond": "10", "window": "1s"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		if v == "<delete>" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name  string
		ref   *pb.ScaledObjectRef
		field string
	}{
		{"no service", ref("x", with("service", "<delete>")), "service"},
		{"service a host name", ref("x", with("service", "web.shop")), "service"},
		{"namespace upper case", ref("x", with("namespace", "Shop")), "namespace"},
		{"no namespace anywhere", &pb.ScaledObjectRef{Name: "x", ScalerMetadata: good}, "namespace"},
		{"no target", ref("x", with("targetRequestsPerSecond", "<delete>")), "targetRequestsPerSecond"},
		{"target zero", ref("x", with("targetRequestsPerSecond", "0")), "targetRequestsPerSecond"},
		{"target NaN", ref("x", with("targetRequestsPerSecond", "NaN")), "targetRequestsPerSecond"},
		{"target words", ref("x", with("targetRequestsPerSecond", "ten")), "targetRequestsPerSecond"},
		{"window not a duration", ref("x", with("window", "2")), "window"},
		{"window over max", ref("x", with("window", "1h")), "window"},
		{"window below a bucket", ref("x", with("window", "10ms")), "window"},
		{"window not whole buckets", ref("x", with("window", "150ms")), "window"},
		{"unknown field", ref("x", with("targetRequestPerSecond", "10")), "targetRequestPerSecond"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			calls := map[string]func() error{
				"IsActive":      func() error { _, err := r.client.IsActive(ctx, tc.ref); return err },
				"GetMetricSpec": func() error { _, err := r.client.GetMetricSpec(ctx, tc.ref); return err },
				"GetMetrics": func() error {
					_, err := r.client.GetMetrics(ctx, &pb.GetMetricsRequest{ScaledObjectRef: tc.ref, MetricName: "reqcount-shop-web"})
					return err
				},
				"StreamIsActive": func() error {
					s, err := r.client.StreamIsActive(ctx, tc.ref)
					if err != nil {
						return err
					}
					_, err = s.Recv()
					return err
				},
			}
			for method, call := range calls {
				err := call()
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "scalerMetadata."+tc.field+":") {
					t.Errorf("%s = %v, want InvalidArgument naming scalerMetadata.%s", method, err, tc.field)
				}
			}
		})
	}
	if got := counter(t, r, "reqcount_scaler_grpc_invalid_metadata_total", "method", "IsActive", "field", "window"); got != 4 {
		t.Errorf("invalid{IsActive,window} = %v, want 4", got)
	}
	if got := counter(t, r, "reqcount_scaler_grpc_invalid_metadata_total", "method", "IsActive", "field", "unknown"); got != 1 {
		t.Errorf("invalid{IsActive,unknown} = %v, want 1 (an unknown field's name is not a label value)", got)
	}
	// A metric name that is not the trigger's.
	_, err := r.client.GetMetrics(context.Background(), &pb.GetMetricsRequest{ScaledObjectRef: webRef("1s"), MetricName: "other"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "metricName") {
		t.Errorf("GetMetrics with another metric name = %v", err)
	}
	// StreamMetricSpec: Unimplemented, which KEDA takes as "pull the specs".
	s, err := r.client.StreamMetricSpec(context.Background(), webRef("1s"))
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("StreamMetricSpec = %v, want Unimplemented", err)
	}
}

func TestMaxStreams(t *testing.T) {
	r := start(t, server.Options{External: external.Options{MaxStreams: 2}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		next(t, streamOf(t, ctx, r.client, webRef("1s")), 5*time.Second)
	}
	s, err := r.client.StreamIsActive(ctx, webRef("1s"))
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third stream = %v, want ResourceExhausted", err)
	}
	if got := counter(t, r, "reqcount_scaler_grpc_streams_refused_total"); got != 1 {
		t.Errorf("refused streams = %v, want 1", got)
	}
}

// TestGracefulShutdown: streams end with EOF (KEDA reopens them), readyz
// turns 503 first, and Serve returns nil.
func TestGracefulShutdown(t *testing.T) {
	r := start(t, server.Options{})
	res, err := http.Get(r.base + "/readyz")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("readyz = %v, %v", res, err)
	}
	res.Body.Close()
	s, err := r.client.StreamIsActive(context.Background(), webRef("1s"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("stream at shutdown ended with %v, want EOF", err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown took over 10s")
	}
}

func TestHealthAndMetricsEndpoints(t *testing.T) {
	r := start(t, server.Options{})
	post(t, r.url, `{"count":7,"svc":"web","namespace":"shop"}`)
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ok",
		"/metrics": "reqcount_scaler_requests_counted_total 7",
	} {
		res, err := http.Get(r.base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("GET %s = %d, want 200 containing %q", path, res.StatusCode, want)
		}
	}
}
