// Package oci builds the Istio deployment artifact: build/filter.wasm as an OCI
// image that an Istio WasmPlugin (`url: oci://…`) pulls.
//
// # Which format
//
// Istio's agent pulls Wasm images with go-containerregistry and accepts three
// shapes (istio/istio pkg/wasm/imagefetcher.go, PrepareFetch, unchanged from
// Istio 1.16 through 1.29 and main):
//
//   - the "compat" variant with OCI media types: an OCI manifest whose last layer
//     is application/vnd.oci.image.layer.v1.tar+gzip, a tar holding plugin.wasm
//     (extractOCIStandardImage; Istio's own test and release notes call it the
//     "OCI standard" image);
//   - the same with Docker media types (extractDockerImage);
//   - the "oci" variant (extractOCIArtifactImage): custom artifact media types,
//     and exactly two layers, application/vnd.module.wasm.content.layer.v1+wasm
//     (the raw module) and application/vnd.module.wasm.config.v1+json.
//
// Both variants are specified at https://github.com/solo-io/wasm/tree/master/spec
// (spec-compat.md, spec.md), the spec Istio's fetcher names. This package
// builds the compat variant with OCI media types:
//
//   - Istio tries it first, and it is the only one of the three made entirely of
//     the OCI image spec's standard media types. Every registry stores it and
//     every OCI client reads it (crane, skopeo, oras, podman), while
//     the oci variant's custom media types are refused by some registries
//     (solo-io/wasm spec/README.md).
//   - The oci variant is easy to get wrong: a single-layer artifact, which is what
//     `oras push ref file.wasm:application/vnd.module.wasm.content.layer.v1+wasm`
//     makes, fails Istio's two-layer check ("number of layers must be 2").
//
// So the image is: an OCI manifest (application/vnd.oci.image.manifest.v1+json)
// annotated module.wasm.image/variant=compat as spec-compat.md requires; an OCI
// config (application/vnd.oci.image.config.v1+json, os wasip1, architecture
// wasm: how the module is built); one layer (application/vnd.oci.image.layer.v1.tar+gzip)
// whose tar holds one file, plugin.wasm, byte for byte the module.
//
// # Pinning
//
// The build is deterministic: the same module always gives the same image, so
// the same manifest digest. For an oci:// url, the WasmPlugin's sha256 field is
// compared with the hex of the manifest digest, not with the module's sha256
// (istio/istio pkg/wasm/cache.go: for oci the checksum is PrepareFetch's
// img.Digest().Hex; the module's own sha256 is what http(s) urls are checked
// against). [Digests] reports both.
package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The names Istio's fetcher and the compat spec fix.
const (
	// ModuleFile is the file in the layer that Istio loads: it looks for this
	// base name and no other (imagefetcher.go extractWasmPluginBinary).
	ModuleFile = "plugin.wasm"
	// VariantAnnotation and VariantCompat: the manifest annotation spec-compat.md
	// requires on a compat image whose layer has the OCI media type.
	VariantAnnotation = "module.wasm.image/variant"
	VariantCompat     = "compat"

	// OS and Architecture go into the image config: the OCI config requires
	// both, and these are the GOOS and GOARCH that build the module.
	OS           = "wasip1"
	Architecture = "wasm"
)

// epoch is the creation time written into the image, so that the same module
// always gives the same digests (1970-01-01, as reproducible-build tools do).
var epoch = v1.Time{Time: time.Unix(0, 0).UTC()}

// wasmMagic opens every Wasm binary module ("\0asm"); Istio refuses anything
// else after pulling it (cache.go isValidWasmBinary).
var wasmMagic = []byte{0x00, 0x61, 0x73, 0x6d}

// Image returns module packed as a compat-variant Wasm image (see the package
// documentation). It refuses bytes that are not a Wasm binary. The result
// depends only on module: build it twice and the digests are the same.
func Image(module []byte) (v1.Image, error) {
	if !bytes.HasPrefix(module, wasmMagic) {
		return nil, errors.New("not a Wasm binary module (no \\0asm magic at the start)")
	}
	img, err := oneFileImage(ModuleFile, module, 0o444, v1.ConfigFile{OS: OS, Architecture: Architecture})
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, map[string]string{VariantAnnotation: VariantCompat}).(v1.Image), nil
}

// oneFileImage returns an OCI image of one gzipped layer holding content at
// name (relative to the root) with mode, and cfg as its config (its creation
// time and rootfs type set here, so that the digests depend on the content
// alone).
func oneFileImage(name string, content []byte, mode int64, cfg v1.ConfigFile) (v1.Image, error) {
	layerTar, err := tarOf(name, content, mode)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestCompression))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	cfg.Created = epoch
	cfg.RootFS = v1.RootFS{Type: "layers"}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	if base, err = mutate.ConfigFile(base, &cfg); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: epoch, CreatedBy: "reqcount-oci: " + name},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	return img, nil
}

// tarOf returns an uncompressed tar holding one regular file, with fixed
// owner and time so that the bytes depend on the content and mode alone.
func tarOf(name string, content []byte, mode int64) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     int64(len(content)),
		Mode:     mode,
		ModTime:  epoch.Time,
		Format:   tar.FormatUSTAR,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(content); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Module reads the Wasm module back out of img the way Istio's fetcher reads a
// compat image with OCI media types: the last layer must be
// application/vnd.oci.image.layer.v1.tar+gzip and hold a file whose base name is
// plugin.wasm. Here the image must also have exactly one layer, and the layer
// exactly one file, as Image writes it.
func Module(img v1.Image) ([]byte, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	if len(layers) != 1 {
		return nil, fmt.Errorf("%d layers, want 1", len(layers))
	}
	mt, err := layers[0].MediaType()
	if err != nil {
		return nil, err
	}
	if mt != types.OCILayer {
		return nil, fmt.Errorf("layer media type %s, want %s", mt, types.OCILayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("layer tar: %w", err)
	}
	if hdr.Name != ModuleFile || hdr.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("layer holds %q (type %c), want the regular file %q", hdr.Name, hdr.Typeflag, ModuleFile)
	}
	module, err := io.ReadAll(tr)
	if err != nil {
		return nil, fmt.Errorf("layer tar: %w", err)
	}
	if _, err := tr.Next(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("layer holds more than %s (next: %v)", ModuleFile, err)
	}
	return module, nil
}

// Digests are the checksums a user pins a deployment with.
type Digests struct {
	// Module is the sha256 of the Wasm module itself: what Istio checks a
	// WasmPlugin's sha256 against for an http(s):// url.
	Module v1.Hash
	// Layer is the digest of the compressed layer (the blob a registry stores).
	Layer v1.Hash
	// Manifest is the image's digest: what Istio checks a WasmPlugin's sha256
	// (its hex part) against for an oci:// url, and what url: oci://…@sha256:…
	// names.
	Manifest v1.Hash
}

// DigestsOf returns the digests of img, an image made by Image.
func DigestsOf(img v1.Image) (Digests, error) {
	var d Digests
	module, err := Module(img)
	if err != nil {
		return d, err
	}
	sum := sha256.Sum256(module)
	d.Module = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
	layers, err := img.Layers()
	if err != nil {
		return d, err
	}
	if d.Layer, err = layers[0].Digest(); err != nil { // Module checked there is one
		return d, err
	}
	if d.Manifest, err = img.Digest(); err != nil {
		return d, err
	}
	return d, nil
}
