package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3" // resolves the router's @type
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"

	"github.com/reqcount/reqcount/e2e/collector"
	"github.com/reqcount/reqcount/filter/config"
)

// TestRealEnvoy runs build/filter.wasm in a real Envoy with the repository's
// envoy/envoy.yaml, and checks that the collector (standing in for the operator)
// receives the counts of the requests sent through it.
//
// The config file stays the source of truth: the test reads it, moves every port
// to one that is free (Envoy's own to port 0, read back from its admin interface;
// the clusters to the test's backend and collector), binds everything to
// loopback, and runs Envoy from the repository root so that the module path in
// the file resolves as documented. It skips when no Envoy >= 1.33 is on PATH.
func TestRealEnvoy(t *testing.T) {
	envoyBin, err := exec.LookPath("envoy")
	if err != nil {
		t.Skip("envoy not on PATH: install Envoy >= 1.33 (func-e or envoyproxy/envoy image) to run this test")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	version, err := realEnvoyVersion(ctx, envoyBin)
	if err != nil {
		t.Fatal(err)
	}
	if version[0] < 1 || (version[0] == 1 && version[1] < 33) {
		t.Skipf("envoy %d.%d.%d on PATH is older than 1.33, which modules built by upstream Go need (WASI imports added in 1.33)",
			version[0], version[1], version[2])
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "build", "filter.wasm")); err != nil {
		t.Fatalf("build/filter.wasm: %v: run make build", err)
	}

	var backendHits atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		backendHits.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	defer backend.Close()
	coll := collector.New(collector.Options{})
	if err := coll.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer coll.Close()

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "envoy.json") // Envoy picks the format by extension
	if err := realEnvoyRewrite(filepath.Join(root, "envoy", "envoy.yaml"), cfgPath, backend.Listener.Addr().String(), coll.Addr()); err != nil {
		t.Fatal(err)
	}

	adminFile := filepath.Join(dir, "admin-address")
	logFile := filepath.Join(dir, "envoy.log")
	cmd := exec.Command(envoyBin,
		"-c", cfgPath,
		// Its own shared-memory id, so that it cannot clash with another Envoy on the machine.
		"--base-id", strconv.Itoa(1+rand.IntN(1<<20)),
		"--admin-address-path", adminFile,
		"--concurrency", "2", // two workers: two VMs, each flushing its own counts
		"--log-level", "info",
		"--log-path", logFile,
	)
	cmd.Dir = root // the module path in envoy.yaml is relative to the repository root
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		realEnvoyStop(t, cmd, exited)
		if t.Failed() {
			realEnvoyLogTail(t, logFile)
		}
	}()

	admin, err := realEnvoyAdmin(ctx, adminFile, exited)
	if err != nil {
		t.Fatal(err)
	}
	listener, err := realEnvoyListener(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}

	// Requests and the keys they count for. 127.0.0.1 (an IP literal) counts for
	// nothing: sent first, a mistaken count for it would show in the totals.
	requests := []struct {
		host string
		n    int
	}{
		{listener, 2},
		{"web.shop", 5},
		{"web.shop.svc.cluster.local:8080", 2},
		{"api.billing.svc", 3},
		{"checkout", 1}, // default_namespace
	}
	want := map[collector.Key]int{
		{Svc: "web", Namespace: "shop"}:         7,
		{Svc: "api", Namespace: "billing"}:      3,
		{Svc: "checkout", Namespace: "default"}: 1,
	}
	client := &http.Client{Timeout: 10 * time.Second}
	sent := 0
	for _, r := range requests {
		for range r.n {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+listener+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = r.host
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("request with Host %s: %v", r.host, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request with Host %s: status %d, want 200 from the backend", r.host, resp.StatusCode)
			}
			sent++
		}
	}
	if got := backendHits.Load(); got != int64(sent) {
		t.Errorf("backend saw %d requests, want %d", got, sent)
	}

	// Flushes come every flush_interval from each worker: wait (bounded) for them.
	waitCtx, waitCancel := context.WithTimeout(ctx, time.Minute)
	defer waitCancel()
	err = coll.WaitFor(waitCtx, func(totals map[collector.Key]int, _ collector.Stats) bool {
		// Done when the totals match, or as soon as they cannot anymore.
		for k, n := range totals {
			if n > want[k] {
				return true
			}
		}
		return maps.Equal(totals, want)
	})
	if got := coll.Totals(); err != nil || !maps.Equal(got, want) {
		t.Fatalf("collector totals %v, want %v (wait: %v)", got, want, err)
	}
	s := coll.Stats()
	if s.Trailing != 0 || s.Rejected != 0 {
		t.Errorf("collector Stats() = %+v: the filter must send one valid object per body", s)
	}

	// Envoy's own /stats/prometheus, read by Prometheus's parser, has what
	// e2e/admin emulates: the filter's counters without a prefix, and the
	// per-service series labelled by envoy.yaml's stats_tags. Counters move on
	// ticks: wait (bounded) for them.
	counted := 0
	for _, n := range want {
		counted += n
	}
	var fams map[string]*dto.MetricFamily
	for {
		fams = scrape(t, "http://"+admin+"/stats/prometheus")
		done := counterValue(fams["reqcount_requests_counted"], nil) == float64(counted)
		for k, n := range want {
			done = done && counterValue(fams[perServiceFamily], serviceKeyLabels(k)) == float64(n)
		}
		if done || waitCtx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := counterValue(fams["reqcount_requests_counted"], nil); got != float64(counted) {
		t.Errorf("Envoy's /stats/prometheus: reqcount_requests_counted = %v, want %d", got, counted)
	}
	for k, n := range want {
		if got := counterValue(fams[perServiceFamily], serviceKeyLabels(k)); got != float64(n) {
			t.Errorf("Envoy's /stats/prometheus: %s%v = %v, want %d", perServiceFamily, serviceKeyLabels(k), got, n)
		}
	}
}

func serviceKeyLabels(k collector.Key) map[string]string {
	return map[string]string{labelService: k.Svc, labelNamespace: k.Namespace}
}

// realEnvoyVersion runs `envoy --version` and returns major, minor, patch. The
// output looks like "envoy  version: <sha>/1.33.2/Clean/RELEASE/BoringSSL".
func realEnvoyVersion(ctx context.Context, bin string) ([3]int, error) {
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return [3]int{}, fmt.Errorf("envoy --version: %v: %s", err, out)
	}
	m := regexp.MustCompile(`version: [0-9a-f]*/(\d+)\.(\d+)\.(\d+)`).FindSubmatch(out)
	if m == nil {
		m = regexp.MustCompile(`(\d+)\.(\d+)\.(\d+)`).FindSubmatch(out)
	}
	if m == nil {
		return [3]int{}, fmt.Errorf("envoy --version: no version in %q", out)
	}
	var v [3]int
	for i := range v {
		v[i], _ = strconv.Atoi(string(m[i+1]))
	}
	return v, nil
}

// realEnvoyRewrite reads the bootstrap at src and writes it to dst as JSON with
// the admin interface and every listener on 127.0.0.1 port 0, the cluster the
// filter flushes to pointed at collectorAddr, and every other cluster at
// backendAddr. Anything else is kept as written.
func realEnvoyRewrite(src, dst, backendAddr, collectorAddr string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	flushCluster, err := realEnvoyFlushCluster(&bs)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}

	loopback := func(a *corev3.Address, hostPort string) error {
		sa := a.GetSocketAddress()
		if sa == nil {
			return errors.New("an address is not a socket address")
		}
		host, port := "127.0.0.1", 0
		if hostPort != "" {
			h, p, err := net.SplitHostPort(hostPort)
			if err != nil {
				return err
			}
			host = h
			if port, err = strconv.Atoi(p); err != nil {
				return err
			}
		}
		sa.Address = host
		sa.PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: uint32(port)}
		return nil
	}
	if err := loopback(bs.GetAdmin().GetAddress(), ""); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	for _, l := range bs.GetStaticResources().GetListeners() {
		if err := loopback(l.GetAddress(), ""); err != nil {
			return fmt.Errorf("listener %s: %w", l.GetName(), err)
		}
	}
	found := false
	for _, c := range bs.GetStaticResources().GetClusters() {
		target := backendAddr
		if c.GetName() == flushCluster {
			target, found = collectorAddr, true
		}
		for _, lle := range c.GetLoadAssignment().GetEndpoints() {
			for _, lb := range lle.GetLbEndpoints() {
				if err := loopback(lb.GetEndpoint().GetAddress(), target); err != nil {
					return fmt.Errorf("cluster %s: %w", c.GetName(), err)
				}
			}
		}
	}
	if !found {
		return fmt.Errorf("the filter flushes to cluster %q, which the bootstrap does not define", flushCluster)
	}
	out, err := protojson.Marshal(&bs)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, out, 0o644)
}

// realEnvoyFlushCluster returns the cluster the bootstrap's reqcount filter
// flushes to, read with the filter's own parser.
func realEnvoyFlushCluster(bs *bootstrapv3.Bootstrap) (string, error) {
	for _, l := range bs.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
					continue
				}
				for _, hf := range hcm.GetHttpFilters() {
					var w wasmfilterv3.Wasm
					if hf.GetTypedConfig().UnmarshalTo(&w) != nil {
						continue
					}
					var s wrapperspb.StringValue
					if err := w.GetConfig().GetConfiguration().UnmarshalTo(&s); err != nil {
						return "", fmt.Errorf("wasm filter configuration: %w", err)
					}
					cfg, err := config.Parse([]byte(s.GetValue()))
					if err != nil {
						return "", err
					}
					return cfg.Cluster, nil
				}
			}
		}
	}
	return "", errors.New("no wasm filter in the bootstrap")
}

// realEnvoyAdmin waits for Envoy to write its admin address and to answer
// /ready, and returns the address.
func realEnvoyAdmin(ctx context.Context, adminFile string, exited <-chan error) (string, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return "", fmt.Errorf("envoy exited before it was ready: %v", err)
		case <-ctx.Done():
			return "", fmt.Errorf("envoy not ready: %w", ctx.Err())
		case <-tick.C:
		}
		b, err := os.ReadFile(adminFile)
		addr := strings.TrimSpace(string(b))
		if err != nil || addr == "" {
			continue
		}
		resp, err := http.Get("http://" + addr + "/ready")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return addr, nil
		}
	}
}

// realEnvoyListener asks the admin interface where the (single) listener got
// bound, since the config asked for port 0.
func realEnvoyListener(ctx context.Context, admin string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/listeners?format=json", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	var ls adminv3.Listeners
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &ls); err != nil {
		return "", fmt.Errorf("admin /listeners: %w: %s", err, body)
	}
	if n := len(ls.GetListenerStatuses()); n != 1 {
		return "", fmt.Errorf("admin /listeners: %d listeners, want the 1 of envoy.yaml: %s", n, body)
	}
	sa := ls.GetListenerStatuses()[0].GetLocalAddress().GetSocketAddress()
	if sa.GetPortValue() == 0 {
		return "", fmt.Errorf("admin /listeners: no bound port in %s", body)
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))), nil
}

// realEnvoyStop asks Envoy to exit (SIGTERM) and kills it if it has not after a
// while.
func realEnvoyStop(t *testing.T, cmd *exec.Cmd, exited <-chan error) {
	t.Helper()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Errorf("envoy did not exit 15s after SIGTERM: killing it")
		_ = cmd.Process.Kill()
		<-exited
	}
}

// realEnvoyLogTail logs the end of Envoy's log, for a failed test.
func realEnvoyLogTail(t *testing.T, logFile string) {
	t.Helper()
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Logf("envoy log: %v", err)
		return
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	t.Logf("envoy log (last %d lines):\n%s", len(lines), strings.Join(lines, "\n"))
}
