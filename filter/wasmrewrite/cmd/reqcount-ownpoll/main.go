// Command reqcount-ownpoll rewrites a built proxy-wasm module so that it
// answers its own WASI poll_oneoff instead of importing it from the host
// (package wasmrewrite says why: Envoy 1.33 to 1.38 answer ENOSYS, on which
// Go's runtime throws). filter/_sdkabi/build.sh runs it on every module it
// builds.
//
//	reqcount-ownpoll -in build/filter.wasm [-out build/filter.wasm]
//
// Without -out the input is replaced (atomically, through a temporary file
// next to it). A module that imports no poll_oneoff is left as it is.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/reqcount/reqcount/filter/wasmrewrite"
)

func main() {
	in := flag.String("in", "", "the module to rewrite (required)")
	out := flag.String("out", "", "where to write the result (default: replace -in)")
	flag.Parse()
	if *in == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: reqcount-ownpoll -in MODULE.wasm [-out OUT.wasm]")
		os.Exit(2)
	}
	if *out == "" {
		*out = *in
	}
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "reqcount-ownpoll:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	wasm, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	rewritten, res, err := wasmrewrite.OwnPollOneoff(wasm)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if len(res.Replaced) == 0 {
		fmt.Printf("own poll_oneoff: %s imports none, unchanged\n", in)
		if in != out {
			return writeFile(out, wasm)
		}
		return nil
	}
	if err := writeFile(out, rewritten); err != nil {
		return err
	}
	fmt.Printf("own poll_oneoff: %s: %v now answered by the module (function %d, %d indices renumbered)\n",
		out, res.Replaced, res.Function, res.Remapped)
	return nil
}

// writeFile writes data to path through a temporary file and a rename, so
// a failed run never leaves a half-written module.
func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
