package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// moduleSpec is one module the benchmark builds: the floors with the SDK's
// usual export set (no tags), the filter exactly as `make build` ships it.
type moduleSpec struct {
	name string // file name without .wasm, and the key variants refer to
	pkg  string
	tags string
}

var moduleSpecs = []moduleSpec{
	{name: "noop", pkg: "./bench/noop"},
	{name: "authorityfloor", pkg: "./bench/authorityfloor"},
	{name: "filter", pkg: "./filter", tags: "proxywasm_lean"},
}

// repoRoot finds the repository root from the working directory upwards: the
// directory holding filter/_sdkabi/build.sh. `make bench` runs from the root,
// the smoke test from this package's directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "filter", "_sdkabi", "build.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the repository root (filter/_sdkabi/build.sh) above the working directory")
		}
		dir = parent
	}
}

// buildModules builds the modules specs into dir with filter/_sdkabi/build.sh, one
// after the other (the script holds a lock on build/sdk anyway), and returns
// their bytes by name. The script's chatter goes to stderr.
func buildModules(root, dir string, specs []moduleSpec) (map[string][]byte, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, m := range specs {
		path := filepath.Join(dir, m.name+".wasm")
		args := []string{"-o", path}
		if m.tags != "" {
			args = append(args, "-tags", m.tags)
		}
		args = append(args, m.pkg)
		cmd := exec.Command(filepath.Join(root, "filter", "_sdkabi", "build.sh"), args...)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("build %s (%s): %w", m.name, m.pkg, err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		out[m.name] = b
	}
	return out, nil
}

// gzipSize is the size of b gzipped at best compression, roughly what an OCI
// image layer or an HTTP fetch of the module costs.
func gzipSize(b []byte) (int, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return 0, err
	}
	if _, err := zw.Write(b); err != nil {
		return 0, err
	}
	if err := zw.Close(); err != nil {
		return 0, err
	}
	return buf.Len(), nil
}
