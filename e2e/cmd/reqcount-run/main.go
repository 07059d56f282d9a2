// Command reqcount-run is `make run`: the compiled filter behind a real HTTP
// listener, with no Envoy needed. Each request to -listen (default
// localhost:10000) passes through build/filter.wasm in the e2e wasm host (one VM
// per worker, as Envoy runs it) and is then answered by a built-in backend. The
// filter's flushes go to a built-in collector on loopback that implements the
// operator's contract and prints each accepted RequestCount as one line of JSON:
//
//	make run
//	curl -H 'Host: web.shop' localhost:10000/     # prints {"count":1,"svc":"web","namespace":"shop"}
//	curl localhost:9901/stats/prometheus           # the filter's metrics, as Envoy's admin shows them
//
// The admin listener (-admin, default localhost:9901, as in envoy/envoy.yaml)
// serves /stats and /stats/prometheus like Envoy's, with the tag extraction of
// the stats_config in -bootstrap (default envoy/envoy.yaml): the per-service
// counter shows up as
// reqcount_requests_total{destination_service_name="web",destination_service_namespace="shop"}.
//
// The filter configuration comes from -config: inline JSON or a file name. Its
// `cluster` is mapped to the built-in collector. The filter's own log lines go to
// stderr. Interrupt (Ctrl-C) shuts the filter down as Envoy would, so the last
// counts are flushed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/reqcount/reqcount/e2e/admin"
	"github.com/reqcount/reqcount/e2e/collector"
	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/filter/config"
	"github.com/reqcount/reqcount/filter/key"
	"github.com/reqcount/reqcount/messages"
)

// DefaultConfig is the filter configuration used without -config: web.shop's
// requests are held while it is cold (the -cold demo).
const DefaultConfig = `{"cluster":"collector","flush_interval":"1s","hold":["web.shop"]}`

// DefaultKEDAConfig is the one with -keda: the same, with the scaler's
// cluster.
const DefaultKEDAConfig = `{"cluster":"reqcount-scaler","flush_interval":"1s","hold":["web.shop"]}`

func main() {
	var o options
	flag.StringVar(&o.wasm, "wasm", "build/filter.wasm", "compiled filter module")
	flag.StringVar(&o.listen, "listen", "localhost:10000", "address of the HTTP listener")
	flag.StringVar(&o.config, "config", DefaultConfig, "filter configuration: inline JSON, or the name of a file holding it")
	flag.IntVar(&o.workers, "workers", 2, "worker VMs (Envoy's --concurrency)")
	flag.StringVar(&o.logLevel, "log-level", "info", "lowest filter log level printed: trace, debug, info, warn, error")
	flag.StringVar(&o.admin, "admin", "localhost:9901", "address of the admin listener (/stats, /stats/prometheus); empty: none")
	flag.StringVar(&o.bootstrap, "bootstrap", "envoy/envoy.yaml", "Envoy bootstrap whose stats_config (tag extraction) the admin applies")
	flag.StringVar(&o.cold, "cold", "web.shop", "comma-separated svc.ns services that start scaled to zero (their cluster has no healthy host); empty: none")
	flag.DurationVar(&o.upAfter, "up-after", 2*time.Second, "how long after a cold service's wake-up the operator (or KEDA, with -keda) has it up")
	flag.StringVar(&o.keda, "keda", "", "serve the filter's cluster with reqcount-scaler instead of the collector, its KEDA gRPC on this address "+
		"(make run-keda: localhost:9090); a KEDA-like client watches the -cold services and scales them")
	flag.DurationVar(&o.kedaWindow, "keda-window", 30*time.Second, "with -keda: the ScaledObjects' window (activity and rate)")
	flag.DurationVar(&o.kedaPoll, "keda-poll", 5*time.Second, "with -keda: the ScaledObjects' pollingInterval (GetMetrics, IsActive)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("reqcount-run: ")
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

// options are the command's flags.
type options struct {
	wasm, listen, config, logLevel, admin, bootstrap, cold string
	workers                                                int
	upAfter                                                time.Duration
	keda                                                   string
	kedaWindow, kedaPoll                                   time.Duration
}

// serviceCluster is the cluster Envoy (Istio) would route svc.ns to.
func serviceCluster(key string) string { return "outbound|80||" + key + ".svc.cluster.local" }

func run(o options) error {
	wasmPath, listen, cfgArg, workers, logLevel, adminAddr, bootstrap, coldList, upAfter :=
		o.wasm, o.listen, o.config, o.workers, o.logLevel, o.admin, o.bootstrap, o.cold, o.upAfter
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The ports first, before anything starts: a busy one is an error naming
	// its flag, not a failure after the VMs are up.
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("-listen %s: %w", listen, err)
	}
	defer ln.Close()
	var adminLn net.Listener
	if adminAddr != "" {
		if adminLn, err = net.Listen("tcp", adminAddr); err != nil {
			return fmt.Errorf("-admin %s: %w", adminAddr, err)
		}
		defer adminLn.Close()
	}
	var kedaLn net.Listener
	if o.keda != "" {
		if kedaLn, err = net.Listen("tcp", o.keda); err != nil {
			return fmt.Errorf("-keda %s: %w", o.keda, err)
		}
		defer kedaLn.Close()
	}

	if o.keda != "" && cfgArg == DefaultConfig {
		cfgArg = DefaultKEDAConfig
	}
	pluginConfig, err := loadConfig(cfgArg)
	if err != nil {
		return err
	}
	cfg, err := config.Parse(pluginConfig)
	if err != nil {
		return fmt.Errorf("-config: %w", err)
	}
	level, err := parseLevel(logLevel)
	if err != nil {
		return err
	}
	var tags *admin.Tags
	if adminAddr != "" {
		if tags, err = loadTags(bootstrap); err != nil {
			return err
		}
	}

	// The cold services: each routed to a cluster of its own, with no healthy
	// host until the operator (the collector) brings it up.
	cold := map[string]string{} // svc.ns → cluster
	for _, k := range strings.Split(coldList, ",") {
		if k = strings.TrimSpace(k); k != "" {
			if pat, ok := config.ParsePattern(k); !ok || pat.Service == config.Any || pat.Namespace == config.Any {
				return fmt.Errorf("-cold %q: want svc.ns (DNS-1123 labels)", k)
			}
			cold[k] = serviceCluster(k)
		}
	}
	var hostp atomic.Pointer[wasmhost.Host]
	// The filter's cluster: the collector, acting as the operator, or with
	// -keda reqcount-scaler, with a KEDA-like client as the operator.
	var upstream, upstreamDesc string
	var keda *kedaDemo
	if kedaLn != nil {
		if keda, err = startKEDA(ctx, kedaLn, o, cfg.WakeAfter, cold, &hostp); err != nil {
			return err
		}
		defer keda.close()
		upstream, upstreamDesc = keda.run.HTTPAddr, "reqcount-scaler at http://"+keda.run.HTTPAddr+cfg.Path
	} else {
		var upOnce sync.Map
		coll := collector.New(collector.Options{Batch: cfg.Mode == config.ModeBatch, Out: os.Stdout, Path: cfg.Path,
			OnMessage: func(m messages.RequestCount) {
				k := m.Svc + "." + m.Namespace
				c, ok := cold[k]
				if !ok {
					return
				}
				if _, done := upOnce.LoadOrStore(k, true); done {
					return
				}
				log.Printf("operator: %s woke up; scaling it up, ready in %v", k, upAfter)
				time.AfterFunc(upAfter, func() {
					if h := hostp.Load(); h != nil {
						h.SetClusterHealthy(c, true)
						log.Printf("operator: %s is up (its cluster has a healthy host)", k)
					}
				})
			}})
		if err := coll.Start("127.0.0.1:0"); err != nil {
			return err
		}
		defer coll.Close()
		upstream, upstreamDesc = coll.Addr(), "the collector at "+coll.URL()
	}
	backend, err := startBackend()
	if err != nil {
		return err
	}
	defer backend.Close()
	clusters := map[string]string{cfg.Cluster: upstream}
	var unhealthy []string
	for _, c := range cold {
		clusters[c] = backend.Addr().String()
		unhealthy = append(unhealthy, c)
	}

	wasm, err := os.ReadFile(wasmPath)
	if err != nil {
		return fmt.Errorf("%w (run `make build`)", err)
	}
	mod, err := wasmhost.Compile(ctx, wasm)
	if err != nil {
		return err
	}
	defer mod.Close(context.Background())
	host, err := wasmhost.New(ctx, mod, wasmhost.Config{
		Workers:           workers,
		PluginConfig:      pluginConfig,
		Clusters:          clusters,
		UnhealthyClusters: unhealthy,
		LogOutput:         os.Stderr,
		LogLevel:          level,
	})
	if err != nil {
		return err
	}
	hostp.Store(host)

	// The admin first: once the proxy listener accepts, the admin does too.
	errc := make(chan error, 2)
	var adminSrv *http.Server
	if adminLn != nil {
		adminSrv = serveAdmin(adminLn, tags, host, errc)
	}
	parser := key.NewParser(cfg.DefaultNamespace, cfg.ClusterDomain)
	srv := &http.Server{Handler: &proxy{host: host, cold: cold, parser: parser}, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("listening on http://%s with %s (%d workers); flushes to cluster %q every %v go to %s",
		ln.Addr(), wasmPath, workers, cfg.Cluster, cfg.FlushInterval, upstreamDesc)
	log.Printf("try: curl -H 'Host: web.shop' http://%s/  (the key is the Host: web.shop is service web in namespace shop; "+
		"a plain curl localhost:<port>/ counts service \"localhost\" in namespace %q; an IP address is not counted: reqcount.requests_uncounted.ip_literal)",
		listen, cfg.DefaultNamespace)
	if cfg.FlushInterval < config.DefaultFlushInterval {
		log.Printf("flush_interval %v for the demo; the default, and the examples in envoy/, use %v (README, Sizing)", cfg.FlushInterval, config.DefaultFlushInterval)
	}
	who := "the operator"
	if keda != nil {
		who = "KEDA"
	}
	for k := range cold {
		log.Printf("%s starts scaled to zero: its first requests wait in the filter (hold) until %s brings it up, %v after the wake-up", k, who, upAfter)
	}

	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}

	shutdown, cancel := context.WithTimeout(context.Background(), cfg.Timeout+5*time.Second)
	defer cancel()
	srv.Shutdown(shutdown)
	if adminSrv != nil {
		adminSrv.Shutdown(shutdown)
	}
	if cerr := host.Close(shutdown); cerr != nil && err == nil {
		err = cerr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// loadTags reads the stats tags of the bootstrap file; a missing file means
// none (logged).
func loadTags(bootstrap string) (*admin.Tags, error) {
	tags, err := admin.LoadBootstrap(bootstrap)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Printf("admin: %s not found: no stats tags (the per-service counter keeps its pieces in its name)", bootstrap)
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("-bootstrap: %w", err)
	}
	return tags, nil
}

// serveAdmin serves the admin on ln. Serve errors go to errc.
func serveAdmin(ln net.Listener, tags *admin.Tags, host *wasmhost.Host, errc chan<- error) *http.Server {
	srv := &http.Server{Handler: admin.Handler(admin.HostStats(host), tags), ReadHeaderTimeout: 10 * time.Second}
	go func() { errc <- srv.Serve(ln) }()
	log.Printf("admin: curl http://%s/stats/prometheus (or /stats)", ln.Addr())
	return srv
}

// loadConfig returns arg itself when it looks like JSON, else the named file.
func loadConfig(arg string) ([]byte, error) {
	if strings.HasPrefix(strings.TrimSpace(arg), "{") {
		return []byte(arg), nil
	}
	b, err := os.ReadFile(arg)
	if err != nil {
		return nil, fmt.Errorf("-config: %w", err)
	}
	return b, nil
}

func parseLevel(s string) (wasmhost.LogLevel, error) {
	for l := wasmhost.LevelTrace; l <= wasmhost.LevelCritical; l++ {
		if strings.EqualFold(l.String(), s) {
			return l, nil
		}
	}
	return 0, fmt.Errorf("-log-level %q: use trace, debug, info, warn, error or critical", s)
}

// proxy passes each request through the filter on the next worker, round robin
// (Envoy spreads connections over its workers), then answers it as the backend
// (or as Envoy does when a cold service has no healthy host).
type proxy struct {
	host   *wasmhost.Host
	cold   map[string]string // svc.ns → cluster, the services routed to clusters
	parser key.Parser
	mu     sync.Mutex // guards keyBuf
	keyBuf [key.MaxLen]byte
	next   atomic.Uint32
}

// cluster returns the cluster a request for authority routes to: a cold
// service's, or none (the built-in backend answers).
func (p *proxy) cluster(authority string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	k, reason := p.parser.AppendAuthority(p.keyBuf[:0], authority)
	if reason != key.OK {
		return ""
	}
	return p.cold[string(k)]
}

// startBackend serves the cold services' answers on loopback (their checks
// reach it once they are up).
func startBackend() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	return ln, nil
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	worker := p.host.Worker(int(p.next.Add(1)) % p.host.Workers())
	headers := [][2]string{
		{":authority", r.Host},
		{":path", r.URL.RequestURI()},
		{":method", r.Method},
		{":scheme", "http"},
	}
	for name, values := range r.Header {
		for _, v := range values {
			headers = append(headers, [2]string{strings.ToLower(name), v})
		}
	}
	body, _ := io.ReadAll(r.Body)
	res, err := worker.Request(r.Context(), wasmhost.Request{Headers: headers, Body: body, Cluster: p.cluster(r.Host)})
	if err != nil {
		http.Error(w, "filter: "+err.Error(), http.StatusBadGateway)
		return
	}
	if res.Status != 0 && res.Status != http.StatusOK {
		// Envoy's own answer (no healthy upstream: the service is still down).
		w.WriteHeader(res.Status)
		io.WriteString(w, res.ResponseCodeDetails+"\n")
		return
	}
	if res.HeldFor >= time.Millisecond {
		fmt.Fprintf(w, "hello from the built-in backend (%s was cold: held %v)\n", r.Host, res.HeldFor.Round(time.Millisecond))
		return
	}
	io.WriteString(w, "hello from the built-in backend\n")
}
