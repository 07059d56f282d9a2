// Command reqcount-dashboard writes the reqcount Grafana dashboard
// (envoy/grafana.JSON) to a file: what `make dashboard` runs.
//
//	go run ./envoy/grafana/cmd/reqcount-dashboard -o envoy/grafana/reqcount.json
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/reqcount/reqcount/envoy/grafana"
)

func main() {
	out := flag.String("o", grafana.File, "file to write the dashboard JSON to (- for stdout)")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "reqcount-dashboard:", err)
		os.Exit(1)
	}
}

// run writes the dashboard to path, or to stdout for "-".
func run(path string) error {
	js, err := grafana.JSON()
	if err != nil {
		return err
	}
	if path == "-" {
		_, err = os.Stdout.Write(js)
		return err
	}
	if err := os.WriteFile(path, js, 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s (%d bytes)\n", path, len(js))
	return nil
}
