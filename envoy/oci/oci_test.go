package oci_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/reqcount/reqcount/envoy/oci"
)

// syntheticModule returns n bytes that start like a Wasm binary module (magic,
// version 1) and go on with content that differs with seed. The package never
// parses past the magic, so this stands in for build/filter.wasm here; e2e/
// packs the real one.
func syntheticModule(n int, seed byte) []byte {
	m := append([]byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}, make([]byte, n)...)
	x := uint32(seed) + 1
	for i := 8; i < len(m); i++ {
		x = x*1664525 + 1013904223 // not compressible to nothing, like code
		m[i] = byte(x >> 24)
	}
	return m
}

// readIndex opens the OCI layout in dir and reads its index.json.
func readIndex(t *testing.T, dir string) (v1.ImageIndex, *v1.IndexManifest) {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	return idx, im
}

func mustImage(t *testing.T, module []byte) v1.Image {
	t.Helper()
	img, err := oci.Image(module)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// istioModule reads the module out of img the way Istio's agent reads a compat
// image with OCI media types (istio/istio pkg/wasm/imagefetcher.go,
// extractOCIStandardImage and extractWasmPluginBinary): the LAST layer, which
// must be application/vnd.oci.image.layer.v1.tar+gzip, its compressed bytes
// gunzipped by hand, the first tar entry whose base name is plugin.wasm.
// Written independently of oci.Module so that the two check each other.
func istioModule(img v1.Image) ([]byte, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	if len(layers) == 0 {
		return nil, errors.New("no layer")
	}
	last := layers[len(layers)-1]
	if mt, err := last.MediaType(); err != nil || mt != types.OCILayer {
		return nil, fmt.Errorf("last layer media type %q (%v), Istio wants %s", mt, err, types.OCILayer)
	}
	rc, err := last.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	gz, err := gzip.NewReader(rc)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("plugin.wasm not found: %w", err)
		}
		if filepath.Base(h.Name) == "plugin.wasm" {
			return io.ReadAll(tr)
		}
	}
}

// TestLayout writes the layout, reads it back with go-containerregistry's
// layout reader and checks everything Istio and an OCI client look at.
func TestLayout(t *testing.T) {
	tests := []struct {
		name   string
		module []byte
		tag    string
	}{
		{"smallest module", syntheticModule(0, 1), "reqcount:dev"},
		{"one MiB", syntheticModule(1<<20, 2), "ghcr.io/you/reqcount:v0.1.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := mustImage(t, tt.module)
			dir := filepath.Join(t.TempDir(), "oci")
			tag, err := name.NewTag(tt.tag)
			if err != nil {
				t.Fatal(err)
			}
			if err := oci.WriteLayout(dir, img, tag); err != nil {
				t.Fatal(err)
			}
			want, err := oci.DigestsOf(img)
			if err != nil {
				t.Fatal(err)
			}

			idx, im := readIndex(t, dir)
			if len(im.Manifests) != 1 {
				t.Fatalf("index.json lists %d manifests, want 1", len(im.Manifests))
			}
			desc := im.Manifests[0]
			if desc.MediaType != types.OCIManifestSchema1 {
				t.Errorf("index entry media type %s, want %s", desc.MediaType, types.OCIManifestSchema1)
			}
			if got := desc.Annotations["org.opencontainers.image.ref.name"]; got != tag.TagStr() {
				t.Errorf("index entry ref.name %q, want %q", got, tag.TagStr())
			}
			if desc.Digest != want.Manifest {
				t.Errorf("index entry digest %s, want the image's %s", desc.Digest, want.Manifest)
			}

			got, err := idx.Image(desc.Digest)
			if err != nil {
				t.Fatal(err)
			}
			// go-containerregistry's own structural check: digests and sizes of
			// manifest, config and layer, diff_ids against the layer's content.
			if err := validate.Image(got); err != nil {
				t.Fatalf("validate.Image: %v", err)
			}
			checkManifest(t, got, want)

			for _, read := range []struct {
				name string
				f    func(v1.Image) ([]byte, error)
			}{{"oci.Module", oci.Module}, {"as Istio reads it", istioModule}} {
				module, err := read.f(got)
				if err != nil {
					t.Fatalf("%s: %v", read.name, err)
				}
				if !bytes.Equal(module, tt.module) {
					t.Fatalf("%s: %d bytes, not byte for byte the module (%d bytes)", read.name, len(module), len(tt.module))
				}
			}
		})
	}
}

// checkManifest checks the manifest, config and layer media types, the
// annotation the compat spec requires, and the digests.
func checkManifest(t *testing.T, img v1.Image, want oci.Digests) {
	t.Helper()
	if d, err := img.Digest(); err != nil || d != want.Manifest {
		t.Errorf("manifest digest %s (%v), want %s", d, err, want.Manifest)
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	// The manifest's own mediaType field, as the registry and Istio see it.
	var top struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     types.MediaType   `json:"mediaType"`
		Annotations   map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	if top.SchemaVersion != 2 || top.MediaType != types.OCIManifestSchema1 {
		t.Errorf("manifest schemaVersion %d mediaType %q, want 2 %q", top.SchemaVersion, top.MediaType, types.OCIManifestSchema1)
	}
	if got := top.Annotations[oci.VariantAnnotation]; got != oci.VariantCompat {
		t.Errorf("manifest annotation %s=%q, want %q", oci.VariantAnnotation, got, oci.VariantCompat)
	}

	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("config media type %s, want %s", m.Config.MediaType, types.OCIConfigJSON)
	}
	if len(m.Layers) != 1 {
		t.Fatalf("%d layers, want 1", len(m.Layers))
	}
	if l := m.Layers[0]; l.MediaType != types.OCILayer || l.Digest != want.Layer {
		t.Errorf("layer %s %s, want %s %s", l.MediaType, l.Digest, types.OCILayer, want.Layer)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != oci.OS || cf.Architecture != oci.Architecture {
		t.Errorf("config os/architecture %s/%s, want %s/%s", cf.OS, cf.Architecture, oci.OS, oci.Architecture)
	}
}

// TestArchive reads the tar both ways it is meant to be read: as docker save's
// format through go-containerregistry's tarball reader, and as an OCI layout
// (unpacked, then through the layout reader), which must give the very same
// manifest.
func TestArchive(t *testing.T) {
	module := syntheticModule(64<<10, 3)
	img := mustImage(t, module)
	want, err := oci.DigestsOf(img)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag("reqcount:dev")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "reqcount.oci.tar")
	if err := oci.WriteArchive(path, img, tag); err != nil {
		t.Fatal(err)
	}

	t.Run("docker save format", func(t *testing.T) {
		got, err := tarball.ImageFromPath(path, &tag)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(got); err != nil {
			t.Fatalf("validate.Image: %v", err)
		}
		layers, err := got.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%d layers (%v), want 1", len(layers), err)
		}
		if d, err := layers[0].Digest(); err != nil || d != want.Layer {
			t.Errorf("layer digest %s (%v), want %s: the same blob as in the layout", d, err, want.Layer)
		}
		if cf, err := got.ConfigFile(); err != nil || cf.OS != oci.OS {
			t.Errorf("config %+v (%v), want os %s", cf, err, oci.OS)
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		tr := tar.NewReader(rc)
		h, err := tr.Next()
		if err != nil || h.Name != oci.ModuleFile {
			t.Fatalf("first entry %v (%v), want %s", h, err, oci.ModuleFile)
		}
		if b, err := io.ReadAll(tr); err != nil || !bytes.Equal(b, module) {
			t.Fatalf("%s: %d bytes (%v), not byte for byte the module", oci.ModuleFile, len(b), err)
		}
	})

	t.Run("OCI layout", func(t *testing.T) {
		dir := untar(t, path)
		idx, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			t.Fatal(err)
		}
		got, err := idx.Image(want.Manifest)
		if err != nil {
			t.Fatalf("the archive's layout has no manifest %s: %v", want.Manifest, err)
		}
		if err := validate.Image(got); err != nil {
			t.Fatalf("validate.Image: %v", err)
		}
		checkManifest(t, got, want)
		if b, err := oci.Module(got); err != nil || !bytes.Equal(b, module) {
			t.Fatalf("module: %d bytes (%v), not byte for byte the module", len(b), err)
		}
	})
}

// untar unpacks the tar at path into a new directory, refusing names that would
// leave it.
func untar(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		if !filepath.IsLocal(h.Name) {
			t.Fatalf("tar entry %q leaves the directory", h.Name)
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, 0o644)
			}
		default:
			t.Fatalf("tar entry %q of type %c", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeterministic: the same module gives the same image and the same files,
// so a digest printed once stays valid for every rebuild of that module; another
// module gives another digest.
func TestDeterministic(t *testing.T) {
	module := syntheticModule(4096, 4)
	tag, _ := name.NewTag("reqcount:dev")
	var digests []oci.Digests
	var archives [][]byte
	for i := range 2 {
		img := mustImage(t, bytes.Clone(module))
		d, err := oci.DigestsOf(img)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
		path := filepath.Join(t.TempDir(), fmt.Sprintf("%d.tar", i))
		if err := oci.WriteArchive(path, img, tag); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		archives = append(archives, b)
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds of one module: %+v and %+v", digests[0], digests[1])
	}
	if !bytes.Equal(archives[0], archives[1]) {
		t.Error("two archives of one module differ")
	}
	if sum := sha256.Sum256(module); digests[0].Module.Hex != fmt.Sprintf("%x", sum) {
		t.Errorf("Module digest %s is not the module's sha256", digests[0].Module)
	}

	other := syntheticModule(4096, 5)
	d, err := oci.DigestsOf(mustImage(t, other))
	if err != nil {
		t.Fatal(err)
	}
	if d.Manifest == digests[0].Manifest || d.Layer == digests[0].Layer || d.Module == digests[0].Module {
		t.Errorf("another module, same digest: %+v and %+v", d, digests[0])
	}
}

func TestImageRefusesNonWasm(t *testing.T) {
	for _, b := range [][]byte{nil, []byte("\x00as"), []byte("\x7fELF\x02\x01\x01"), []byte("hello, world")} {
		if _, err := oci.Image(b); err == nil || !strings.Contains(err.Error(), "not a Wasm binary") {
			t.Errorf("Image(%q): %v, want a refusal", b, err)
		}
	}
}

// TestWriteLayoutReplaces: a layout is replaced whole (one image in it after
// two writes), anything else is left alone.
func TestWriteLayoutReplaces(t *testing.T) {
	tag, _ := name.NewTag("reqcount:dev")
	dir := filepath.Join(t.TempDir(), "oci")
	var last v1.Hash
	for i := range 2 {
		img := mustImage(t, syntheticModule(100, byte(10+i)))
		if err := oci.WriteLayout(dir, img, tag); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		last, _ = img.Digest()
	}
	_, im := readIndex(t, dir)
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != last {
		t.Errorf("after two writes index.json lists %v, want only %s", im.Manifests, last)
	}
	blobs, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil || len(blobs) != 3 {
		t.Errorf("%d blobs (%v), want 3 (manifest, config, layer): the old image's are gone", len(blobs), err)
	}

	other := t.TempDir()
	keep := filepath.Join(other, "keep.txt")
	if err := os.WriteFile(keep, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = oci.WriteLayout(other, mustImage(t, syntheticModule(1, 1)), tag)
	if err == nil || !strings.Contains(err.Error(), "not an OCI image layout") {
		t.Errorf("WriteLayout over a directory of other files: %v, want a refusal", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("the other directory's file: %v", err)
	}
}
