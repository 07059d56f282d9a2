// Command reqcount-oci packs build/filter.wasm as the OCI image an Istio
// WasmPlugin pulls (package github.com/reqcount/reqcount/envoy/oci says which
// format and why), writes it as an OCI image layout and as a tar, pushes it
// when asked, and prints the digests to pin it by. `make oci` and `make push`
// run it:
//
//	reqcount-oci -wasm build/filter.wasm -layout build/oci -tar build/reqcount.oci.tar
//	reqcount-oci -wasm build/filter.wasm -layout build/oci -tar build/reqcount.oci.tar -push ghcr.io/you/reqcount:v0.1.0
//
// With -server it packs a static Linux executable instead, as a container
// image with nothing else in it (`make scaler-image`, for reqcount-scaler):
//
//	reqcount-oci -server build/reqcount-scaler -ports 8080/tcp,9090/tcp -tar build/reqcount-scaler.oci.tar -push ghcr.io/you/reqcount-scaler:v0.1.0
//
// Pushing uses the credentials of `docker login` / `crane auth login` (the
// default keychain: $DOCKER_CONFIG or ~/.docker/config.json); a registry on
// localhost or 127.0.0.1 is spoken to over plain HTTP.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/reqcount/reqcount/envoy/oci"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "reqcount-oci:", err)
		os.Exit(1)
	}
}

// run is the command, with its arguments and output as parameters for tests.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("reqcount-oci", flag.ContinueOnError)
	wasm := fl.String("wasm", "build/filter.wasm", "the Wasm module to pack")
	layoutDir := fl.String("layout", "", "write an OCI image layout to this directory (replaced if it is one already)")
	tarPath := fl.String("tar", "", "write the image to this file as a tar (OCI layout inside, and docker save's manifest.json)")
	tagFlag := fl.String("tag", "reqcount:dev", "name of the image in the layout and the tar (-push's IMAGE, when given, instead)")
	push := fl.String("push", "", "push the image to IMAGE (<registry>/<repository>:<tag>)")
	server := fl.String("server", "", "instead of the Wasm image: pack this static Linux executable as a container image with it as /<its name>, the entrypoint (make scaler-image)")
	ports := fl.String("ports", "", "with -server: comma-separated ports the image exposes, e.g. 8080/tcp,9090/tcp")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	if *ports != "" && *server == "" {
		return errors.New("-ports is for -server")
	}
	if *layoutDir == "" && *tarPath == "" && *push == "" {
		return errors.New("nothing to do: give -layout, -tar or -push")
	}

	tag, err := name.NewTag(*tagFlag)
	if err != nil {
		return fmt.Errorf("-tag: %w", err)
	}
	var dst name.Tag
	if *push != "" {
		// StrictValidation: an image pushed without a tag would silently be
		// :latest, which Istio pulls on every start (imagePullPolicy Always).
		if dst, err = name.NewTag(*push, name.StrictValidation); err != nil {
			return fmt.Errorf("-push %q: want <registry>/<repository>:<tag>: %w", *push, err)
		}
		tag = dst
	}

	if *server != "" {
		return runServer(ctx, *server, *ports, *layoutDir, *tarPath, tag, dst, *push != "", stdout)
	}
	module, err := os.ReadFile(*wasm)
	if err != nil {
		return err
	}
	img, err := oci.Image(module)
	if err != nil {
		return fmt.Errorf("%s: %w", *wasm, err)
	}
	d, err := oci.DigestsOf(img)
	if err != nil {
		return err
	}

	if err := write(ctx, img, *layoutDir, *tarPath, tag, dst, *push != "", stdout); err != nil {
		return err
	}

	fmt.Fprintf(stdout, "module   %s  (%s, %d bytes; the sha256 for an http(s):// url)\n", d.Module, *wasm, len(module))
	fmt.Fprintf(stdout, "layer    %s\n", d.Layer)
	fmt.Fprintf(stdout, "manifest %s  (the image digest)\n", d.Manifest)
	fmt.Fprintf(stdout, "WasmPlugin, to pin this image:  sha256: %s\n", d.Manifest.Hex)
	return nil
}

// write writes img as a layout and a tar where asked, and pushes it to dst if
// push.
func write(ctx context.Context, img v1.Image, layoutDir, tarPath string, tag, dst name.Tag, push bool, stdout io.Writer) error {
	if layoutDir != "" {
		if err := oci.WriteLayout(layoutDir, img, tag); err != nil {
			return fmt.Errorf("-layout: %w", err)
		}
		fmt.Fprintf(stdout, "wrote %s (OCI image layout, %s)\n", layoutDir, tag.TagStr())
	}
	if tarPath != "" {
		if err := oci.WriteArchive(tarPath, img, tag); err != nil {
			return fmt.Errorf("-tar: %w", err)
		}
		fmt.Fprintf(stdout, "wrote %s (OCI layout as a tar, docker load-able as %s)\n", tarPath, tag)
	}
	if push {
		err := remote.Write(dst, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain))
		if err != nil {
			return fmt.Errorf("push %s: %w", dst, err)
		}
		fmt.Fprintf(stdout, "pushed %s\n", dst)
	}
	return nil
}

// runServer is -server: the executable at file as a container image.
func runServer(ctx context.Context, file, ports, layoutDir, tarPath string, tag, dst name.Tag, push bool, stdout io.Writer) error {
	bin, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var exposed []string
	for _, p := range strings.Split(ports, ",") {
		if p = strings.TrimSpace(p); p != "" {
			exposed = append(exposed, p)
		}
	}
	img, err := oci.ServerImage(bin, "/"+filepath.Base(file), exposed...)
	if err != nil {
		return fmt.Errorf("-server %s: %w", file, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	if err := write(ctx, img, layoutDir, tarPath, tag, dst, push, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "manifest %s  (the image digest; %s, %d bytes)\n", digest, file, len(bin))
	if push {
		fmt.Fprintf(stdout, "Deployment, to pin this image:  image: %s@%s\n", dst.Context().Name(), digest)
	}
	return nil
}
