package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestQuickRun runs the whole benchmark in its smoke mode, building the
// modules into a temporary directory, and checks that the table has every
// row and that the results file keeps its hand-written notes. It asserts no
// timing: the numbers of a quick run mean nothing.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three wasm modules")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "RESULTS.md")
	notes := notesMarker + "\n\n## Notes\n\nhand-written analysis that must survive a rerun\n"
	if err := os.WriteFile(out, []byte("# stale results\n\n"+notes), 0o644); err != nil {
		t.Fatal(err)
	}
	o, err := parseFlags([]string{"-quick", "-build-dir", filepath.Join(dir, "build"), "-out", out})
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	if err := run(context.Background(), o, &stdout); err != nil {
		t.Fatalf("run: %v\nstdout:\n%s", err, stdout.String())
	}

	// Every row, by its first two cells. Spelled out rather than derived
	// from the program's own lists, so a row that goes missing or changes
	// name fails here.
	variants := []string{"noop", "authority-floor", "filter authority", "filter header", "filter authority, 8 hosts", "filter static"}
	filters := variants[2:]
	var rows []string
	for _, measure := range []string{"ns/request", "guest entries/request", "host calls/request", "linear memory"} {
		for _, v := range variants {
			rows = append(rows, measure+" | "+v)
		}
	}
	for _, v := range filters {
		rows = append(rows, "ratio linear memory | "+v+" / authority-floor", "requests counted | "+v)
	}
	rows = append(rows,
		"ratio ns/request | filter authority / authority-floor",
		"ratio ns/request | filter header / authority-floor",
		"ratio ns/request | filter authority, 8 hosts / authority-floor",
		"ratio ns/request | filter static / noop",
		"native hot path | key_source authority",
		"native hot path | key_source authority parsed",
		"native hot path | key_source header",
		"native hot path | key_source static",
		"native flush, 1k keys | encode single",
		"native flush, 1k keys | encode batch",
		"native flush, 1k keys | Flusher.Tick single",
		"native flush, 1k keys | Flusher.Tick batch",
		"guest flush, 1k keys | filter header, single",
		"guest flush, 1k keys | filter header, batch",
		"module size | noop.wasm",
		"module size | authorityfloor.wasm",
		"module size | filter.wasm (as `make build` ships it)",
		"wall time | this run",
	)
	table := stdout.String()
	for _, row := range rows {
		if !strings.Contains(table, "| "+row+" | ") {
			t.Errorf("table has no row %q", row)
		}
	}
	lines := 0
	for _, line := range strings.Split(table, "\n") {
		if strings.HasPrefix(line, "| ") {
			lines++
		}
	}
	if want := 2 + len(rows); lines != want { // header and separator, then the rows
		t.Errorf("table has %d lines, want %d:\n%s", lines, want, table)
	}
	for _, target := range []string{"filter authority ≤ 1.10 × authority-floor", "filter static ≤ 1.05 × noop",
		"filter authority, 8 hosts in turn (the memo path) ≤ 1.10 × authority-floor",
		"memory after 20k ≤ after 5k + 1 MiB", "≤ 1.25 × authority-floor's", "zero allocations per request",
		"flush encode < 2 ms, single", "flush encode < 2 ms, batch"} {
		if !strings.Contains(table, target) {
			t.Errorf("targets do not mention %q", target)
		}
	}

	written, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Benchmark results", "Date (UTC):", "wazero: v", "## Results", "| ns/request | noop |",
		"## Targets", "## Where the time goes", notes} {
		if !bytes.Contains(written, []byte(want)) {
			t.Errorf("%s has no %q", out, want)
		}
	}
	if bytes.Contains(written, []byte("stale results")) {
		t.Errorf("%s kept the text above the notes marker", out)
	}
}
