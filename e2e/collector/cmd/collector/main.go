// Command collector runs the operator stand-in from package collector on its own,
// for `make run` and `make run-envoy`: it serves POST /informer/incoming-request on
// 127.0.0.1:8013 (the operator's port) and prints every accepted message to stdout
// as one line of JSON, e.g. {"count":3,"svc":"web","namespace":"shop"}.
//
// With -backend it also serves a trivial backend that answers 200 "ok" to any
// request, so that Envoy's example config (envoy/envoy.yaml, backend on
// 127.0.0.1:8080) has something to route to without any other program.
//
// Usage:
//
//	go run ./e2e/collector/cmd/collector [-addr 127.0.0.1:8013] [-batch] [-path /informer/incoming-request] [-backend 127.0.0.1:8080]
//
// It runs until interrupted (SIGINT or SIGTERM).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/reqcount/reqcount/e2e/collector"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8013", "address to serve the request-count endpoint on")
	path := flag.String("path", collector.DefaultPath, "path of the request-count endpoint")
	batch := flag.Bool("batch", false, "also accept a JSON array of messages per body (the filter's batch mode)")
	backend := flag.String("backend", "", "if set, also serve a backend answering 200 \"ok\" on this address, e.g. 127.0.0.1:8080")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("collector: ")
	if err := run(*addr, *path, *batch, *backend); err != nil {
		log.Fatal(err)
	}
}

func run(addr, path string, batch bool, backend string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	c := collector.New(collector.Options{Batch: batch, Out: os.Stdout, Path: path})
	if err := c.Start(addr); err != nil {
		return err
	}
	defer c.Close()
	log.Printf("serving POST %s (batch=%v); accepted messages go to stdout", c.URL(), batch)

	if backend != "" {
		ln, err := net.Listen("tcp", backend)
		if err != nil {
			return fmt.Errorf("backend: %w", err)
		}
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				_, _ = io.WriteString(w, "ok\n")
			}),
			ReadHeaderTimeout: 10 * time.Second,
		}
		go func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				log.Printf("backend: %v", err)
				stop()
			}
		}()
		defer srv.Close()
		log.Printf("backend answering 200 on http://%s/", ln.Addr())
	}

	<-ctx.Done()
	s := c.Stats()
	log.Printf("stopping: %d requests, %d accepted (%d messages), %d rejected, %d with trailing data",
		s.Requests, s.Accepted, s.Messages, s.Rejected, s.Trailing)
	return nil
}
