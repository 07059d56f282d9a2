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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/reqcount/reqcount/e2e/admin"
	"github.com/reqcount/reqcount/e2e/collector"
	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/filter/config"
)

// DefaultConfig is the filter configuration used without -config.
const DefaultConfig = `{"cluster":"collector","flush_interval":"1s"}`

func main() {
	wasm := flag.String("wasm", "build/filter.wasm", "compiled filter module")
	listen := flag.String("listen", "localhost:10000", "address of the HTTP listener")
	cfgArg := flag.String("config", DefaultConfig, "filter configuration: inline JSON, or the name of a file holding it")
	workers := flag.Int("workers", 2, "worker VMs (Envoy's --concurrency)")
	logLevel := flag.String("log-level", "info", "lowest filter log level printed: trace, debug, info, warn, error")
	adminAddr := flag.String("admin", "localhost:9901", "address of the admin listener (/stats, /stats/prometheus); empty: none")
	bootstrap := flag.String("bootstrap", "envoy/envoy.yaml", "Envoy bootstrap whose stats_config (tag extraction) the admin applies")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("reqcount-run: ")
	if err := run(*wasm, *listen, *cfgArg, *workers, *logLevel, *adminAddr, *bootstrap); err != nil {
		log.Fatal(err)
	}
}

func run(wasmPath, listen, cfgArg string, workers int, logLevel, adminAddr, bootstrap string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

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

	coll := collector.New(collector.Options{Batch: cfg.Mode == config.ModeBatch, Out: os.Stdout, Path: cfg.Path})
	if err := coll.Start("127.0.0.1:0"); err != nil {
		return err
	}
	defer coll.Close()

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
		Workers:      workers,
		PluginConfig: pluginConfig,
		Clusters:     map[string]string{cfg.Cluster: coll.Addr()},
		LogOutput:    os.Stderr,
		LogLevel:     level,
	})
	if err != nil {
		return err
	}

	// The admin first: once the proxy listener accepts, the admin does too.
	errc := make(chan error, 2)
	var adminSrv *http.Server
	if adminAddr != "" {
		if adminSrv, err = serveAdmin(adminAddr, tags, host, errc); err != nil {
			host.Close(context.Background())
			return err
		}
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		if adminSrv != nil {
			adminSrv.Close()
		}
		host.Close(context.Background())
		return err
	}
	srv := &http.Server{Handler: &proxy{host: host}, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("listening on http://%s with %s (%d workers); flushes to cluster %q every %v go to the collector at %s",
		ln.Addr(), wasmPath, workers, cfg.Cluster, cfg.FlushInterval, coll.URL())
	log.Printf("try: curl -H 'Host: web.shop' http://%s/", ln.Addr())

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

// serveAdmin starts the admin listener on addr. Serve errors go to errc.
func serveAdmin(addr string, tags *admin.Tags, host *wasmhost.Host, errc chan<- error) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-admin: %w", err)
	}
	srv := &http.Server{Handler: admin.Handler(admin.HostStats(host), tags), ReadHeaderTimeout: 10 * time.Second}
	go func() { errc <- srv.Serve(ln) }()
	log.Printf("admin: curl http://%s/stats/prometheus (or /stats)", ln.Addr())
	return srv, nil
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
// (Envoy spreads connections over its workers), then answers it as the backend.
type proxy struct {
	host *wasmhost.Host
	next atomic.Uint32
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
	if _, err := worker.Request(r.Context(), wasmhost.Request{Headers: headers}); err != nil {
		http.Error(w, "filter: "+err.Error(), http.StatusBadGateway)
		return
	}
	io.WriteString(w, "hello from the built-in backend\n")
}
