// Command reqcount-scaler is the KEDA external-push scaler fed by the reqcount
// filter: it takes the filter's RequestCount messages on
// POST /informer/incoming-request (-http) and serves KEDA's
// externalscaler.ExternalScaler on -grpc. See package
// github.com/reqcount/reqcount/scaler/server for the endpoints and
// envoy/keda/ for the manifests.
//
//	reqcount-scaler -http :8080 -grpc :9090
//
// SIGTERM or SIGINT shut it down gracefully: /readyz turns 503, KEDA's streams
// end (KEDA reopens them), requests in flight finish.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/reqcount/reqcount/scaler/external"
	"github.com/reqcount/reqcount/scaler/ingest"
	"github.com/reqcount/reqcount/scaler/server"
	"github.com/reqcount/reqcount/scaler/store"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "reqcount-scaler:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("reqcount-scaler", flag.ContinueOnError)
	httpAddr := fs.String("http", ":8080", "address of the HTTP listener: the request-count path, /healthz, /readyz, /metrics")
	grpcAddr := fs.String("grpc", ":9090", "address of KEDA's external scaler (gRPC); the trigger's scalerAddress")
	path := fs.String("path", ingest.DefaultPath, "path of the request-count endpoint (the filter's `path`)")
	maxBody := fs.Int64("max-body", ingest.DefaultMaxBody, "largest request body accepted, in bytes (larger: 413)")
	maxTargets := fs.Int("max-targets", store.DefaultMaxTargets, "most targets (service, namespace) held; a body naming more new ones is answered 503")
	maxWindow := fs.Duration("max-window", store.DefaultMaxWindow, "longest window a trigger may ask for; a target with no report for this long is forgotten")
	resolution := fs.Duration("resolution", store.DefaultResolution, "width of a count bucket; -max-window must be a whole number of them")
	maxStreams := fs.Int("max-streams", external.DefaultMaxStreams, "most open StreamIsActive streams (one per ScaledObject trigger)")
	shutdown := fs.Duration("shutdown-timeout", 10*time.Second, "longest graceful shutdown")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	srv, err := server.New(server.Options{
		Store:           store.Options{MaxTargets: *maxTargets, MaxWindow: *maxWindow, Resolution: *resolution},
		Ingest:          ingest.Options{Path: *path, MaxBody: *maxBody},
		External:        external.Options{MaxStreams: *maxStreams},
		ShutdownTimeout: *shutdown,
		Log:             log,
	})
	if err != nil {
		return fmt.Errorf("-max-targets, -max-window, -resolution: %w", err)
	}
	// Both ports before serving, each error naming its flag.
	httpLn, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return fmt.Errorf("-http %s: %w", *httpAddr, err)
	}
	grpcLn, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		httpLn.Close()
		return fmt.Errorf("-grpc %s: %w", *grpcAddr, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return srv.Serve(ctx, httpLn, grpcLn)
}
