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

	"github.com/reqcount/reqcount/scaler/server"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "reqcount-scaler:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("reqcount-scaler", flag.ContinueOnError)
	var f server.Flags
	f.Register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	opts, level, err := f.Options()
	if err != nil {
		return err
	}
	opts.Log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv, err := server.New(opts)
	if err != nil {
		return err
	}
	// Both ports before serving, each error naming its flag.
	httpLn, err := net.Listen("tcp", f.HTTP)
	if err != nil {
		return fmt.Errorf("-http %s: %w", f.HTTP, err)
	}
	grpcLn, err := net.Listen("tcp", f.GRPC)
	if err != nil {
		httpLn.Close()
		return fmt.Errorf("-grpc %s: %w", f.GRPC, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return srv.Serve(ctx, httpLn, grpcLn)
}
