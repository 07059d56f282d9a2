// Package server runs reqcount-scaler: the request-count endpoint and the
// health and metrics endpoints on one HTTP listener, KEDA's external scaler on
// a gRPC listener, over one store.
//
// HTTP:
//
//	POST /informer/incoming-request   the filter's RequestCount messages (package ingest)
//	GET  /healthz                     200 while the process serves
//	GET  /readyz                      200 until shutdown starts, then 503
//	GET  /metrics                     the scaler's own Prometheus metrics
//
// gRPC: externalscaler.ExternalScaler (package external), and the standard
// grpc.health.v1 service.
//
// Shutdown (Serve's context ends): /readyz turns 503, the open StreamIsActive
// streams end (KEDA reopens them, on another replica if there is one), the
// gRPC server stops gracefully, and the HTTP server finishes the requests in
// flight, all within Options.ShutdownTimeout.
package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/reqcount/reqcount/scaler/external"
	"github.com/reqcount/reqcount/scaler/ingest"
	"github.com/reqcount/reqcount/scaler/store"
)

// Options configures a Server. The zero value uses every default.
type Options struct {
	Store    store.Options
	Ingest   ingest.Options // its Registerer is set by New
	External external.Options
	// SweepEvery is how often silent targets are forgotten. Default the
	// store's MaxWindow.
	SweepEvery time.Duration
	// ShutdownTimeout bounds the shutdown. Default 10s.
	ShutdownTimeout time.Duration
	// Log gets the server's log lines. Default slog.Default().
	Log *slog.Logger
}

// Server is reqcount-scaler. Create one with New, run it with Serve.
type Server struct {
	Store    *store.Store
	Scaler   *external.Scaler
	Registry *prometheus.Registry

	ingest   *ingest.Handler
	health   *health.Server
	log      *slog.Logger
	sweep    time.Duration
	shutdown time.Duration
	draining atomic.Bool
}

// New builds a Server from opts; an error names the bad option.
func New(opts Options) (*Server, error) {
	st, err := store.New(opts.Store)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(storeCollector{st})
	opts.Ingest.Registerer = reg
	opts.External.Registerer = reg
	if opts.SweepEvery <= 0 {
		opts.SweepEvery = st.MaxWindow()
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	return &Server{
		Store:    st,
		Scaler:   external.New(st, opts.External),
		Registry: reg,
		ingest:   ingest.New(st, opts.Ingest),
		health:   health.NewServer(),
		log:      opts.Log,
		sweep:    opts.SweepEvery,
		shutdown: opts.ShutdownTimeout,
	}, nil
}

// Handler returns the HTTP side: the request-count path, /healthz, /readyz
// and /metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{Registry: s.Registry}))
	// Everything else goes to the endpoint, which answers 404 or 405 itself
	// and counts them.
	mux.Handle("/", s.ingest)
	return mux
}

// GRPCServer returns a gRPC server with the external scaler and the health
// service registered.
func (s *Server) GRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	g := grpc.NewServer(opts...)
	pb.RegisterExternalScalerServer(g, s.Scaler)
	healthpb.RegisterHealthServer(g, s.health)
	return g
}

// Serve serves HTTP on httpLn and gRPC on grpcLn until ctx ends, then shuts
// down as the package comment says. It returns nil after a clean shutdown.
func (s *Server) Serve(ctx context.Context, httpLn, grpcLn net.Listener) error {
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	gs := s.GRPCServer()
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(httpLn) }()
	go func() { errc <- gs.Serve(grpcLn) }()
	s.log.Info("reqcount-scaler serving", "http", httpLn.Addr().String(), "grpc", grpcLn.Addr().String(),
		"path", s.ingest.Path(), "max_window", s.Store.MaxWindow().String())

	tick := time.NewTicker(s.sweep)
	defer tick.Stop()
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-errc:
			break loop
		case <-tick.C:
			if n := s.Store.Sweep(); n > 0 {
				s.log.Debug("forgot silent targets", "targets", n)
			}
		}
	}

	s.log.Info("reqcount-scaler shutting down", "streams", s.Scaler.Streams())
	s.draining.Store(true)
	s.health.Shutdown()
	s.Scaler.Close()
	sctx, cancel := context.WithTimeout(context.Background(), s.shutdown)
	defer cancel()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	herr := hs.Shutdown(sctx)
	select {
	case <-stopped:
	case <-sctx.Done():
		gs.Stop()
	}
	if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
		err = herr
	}
	return err
}

// Running is a Server serving on its own goroutine: see Start and StartOn.
type Running struct {
	// HTTPAddr and GRPCAddr are the addresses bound.
	HTTPAddr, GRPCAddr string

	stop context.CancelFunc
	done chan error
	once sync.Once
	err  error
}

// Start listens on httpAddr and grpcAddr (":0" ports pick free ones) and
// serves until Stop.
func (s *Server) Start(httpAddr, grpcAddr string) (*Running, error) {
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return nil, err
	}
	gl, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		hl.Close()
		return nil, err
	}
	return s.StartOn(hl, gl), nil
}

// StartOn serves on listeners the caller opened until Stop.
func (s *Server) StartOn(httpLn, grpcLn net.Listener) *Running {
	ctx, stop := context.WithCancel(context.Background())
	r := &Running{HTTPAddr: httpLn.Addr().String(), GRPCAddr: grpcLn.Addr().String(), stop: stop, done: make(chan error, 1)}
	go func() { r.done <- s.Serve(ctx, httpLn, grpcLn) }()
	return r
}

// Stop shuts the server down as Serve does when its context ends, and
// returns Serve's error. It is safe to call more than once.
func (r *Running) Stop() error {
	r.once.Do(func() { r.stop(); r.err = <-r.done })
	return r.err
}

// storeCollector exports the store's gauges and counters.
type storeCollector struct{ st *store.Store }

var (
	targetsDesc = prometheus.NewDesc("reqcount_scaler_targets",
		"Targets (service, namespace) the scaler holds counts for.", nil, nil)
	maxTargetsDesc = prometheus.NewDesc("reqcount_scaler_targets_max",
		"The -max-targets bound.", nil, nil)
	evictedDesc = prometheus.NewDesc("reqcount_scaler_targets_evicted_total",
		"Targets forgotten after -max-window with no report.", nil, nil)
	refusedDesc = prometheus.NewDesc("reqcount_scaler_messages_refused_total",
		"Messages not counted because the scaler had no room for their target (answered 503).", nil, nil)
)

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- targetsDesc
	ch <- maxTargetsDesc
	ch <- evictedDesc
	ch <- refusedDesc
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.st.Stats()
	ch <- prometheus.MustNewConstMetric(targetsDesc, prometheus.GaugeValue, float64(st.Targets))
	ch <- prometheus.MustNewConstMetric(maxTargetsDesc, prometheus.GaugeValue, float64(c.st.MaxTargets()))
	ch <- prometheus.MustNewConstMetric(evictedDesc, prometheus.CounterValue, float64(st.Evicted))
	ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(st.Refused))
}
