package server

import (
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/reqcount/reqcount/scaler/external"
	"github.com/reqcount/reqcount/scaler/ingest"
	"github.com/reqcount/reqcount/scaler/store"
)

// Flags are reqcount-scaler's command-line flags. Register them on a flag
// set, parse it, then take the Options.
type Flags struct {
	// HTTP and GRPC are the listeners' addresses.
	HTTP, GRPC string

	path            string
	maxBody         int64
	maxTargets      int
	maxWindow       time.Duration
	resolution      time.Duration
	maxStreams      int
	shutdownTimeout time.Duration
	logLevel        string
}

// Register defines the flags on fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.HTTP, "http", ":8080", "address of the HTTP listener: the request-count path, /healthz, /readyz, /metrics")
	fs.StringVar(&f.GRPC, "grpc", ":9090", "address of KEDA's external scaler (gRPC); the trigger's scalerAddress")
	fs.StringVar(&f.path, "path", ingest.DefaultPath, "path of the request-count endpoint (the filter's `path`)")
	fs.Int64Var(&f.maxBody, "max-body", ingest.DefaultMaxBody, "largest request body accepted, in bytes (larger: 413)")
	fs.IntVar(&f.maxTargets, "max-targets", store.DefaultMaxTargets, "most targets (service, namespace) held; a body naming more new ones is answered 503")
	fs.DurationVar(&f.maxWindow, "max-window", store.DefaultMaxWindow, "longest window a trigger may ask for; a target with no report for this long is forgotten")
	fs.DurationVar(&f.resolution, "resolution", store.DefaultResolution, "width of a count bucket; -max-window must be a whole number of them")
	fs.IntVar(&f.maxStreams, "max-streams", external.DefaultMaxStreams, "most open StreamIsActive streams (one per ScaledObject trigger)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 10*time.Second, "longest graceful shutdown")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
}

// Options returns the server options the flags say, logging as JSON to log
// output; an error names the flag.
func (f *Flags) Options() (Options, slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return Options{}, 0, fmt.Errorf("-log-level: %w", err)
	}
	o := Options{
		Store:           store.Options{MaxTargets: f.maxTargets, MaxWindow: f.maxWindow, Resolution: f.resolution},
		Ingest:          ingest.Options{Path: f.path, MaxBody: f.maxBody},
		External:        external.Options{MaxStreams: f.maxStreams},
		ShutdownTimeout: f.shutdownTimeout,
	}
	switch {
	case f.maxTargets < 1:
		return Options{}, 0, fmt.Errorf("-max-targets %d: want at least 1", f.maxTargets)
	case f.maxStreams < 1:
		return Options{}, 0, fmt.Errorf("-max-streams %d: want at least 1", f.maxStreams)
	case f.maxBody < 1:
		return Options{}, 0, fmt.Errorf("-max-body %d: want at least 1", f.maxBody)
	case f.shutdownTimeout <= 0:
		return Options{}, 0, fmt.Errorf("-shutdown-timeout %v: want more than 0", f.shutdownTimeout)
	case f.path == "" || f.path[0] != '/':
		return Options{}, 0, fmt.Errorf("-path %q: want an absolute path", f.path)
	}
	if _, err := store.New(o.Store); err != nil {
		return Options{}, 0, fmt.Errorf("-max-window %v, -resolution %v: %w", f.maxWindow, f.resolution, err)
	}
	return o, level, nil
}

// MaxWindow returns the parsed -max-window.
func (f *Flags) MaxWindow() time.Duration { return f.maxWindow }

// Resolution returns the parsed -resolution.
func (f *Flags) Resolution() time.Duration { return f.resolution }

// Path returns the parsed -path.
func (f *Flags) Path() string { return f.path }
