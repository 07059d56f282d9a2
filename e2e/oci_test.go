package e2e_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/reqcount/reqcount/envoy/oci"
)

// TestOCICommand keeps the README's `make oci` / `make push` promise on the real
// module: the reqcount-oci command packs build/filter.wasm into an OCI layout, a
// tar and a registry (one served in this process), each holds the module byte for
// byte, and the digests it prints are the module's sha256 and the pushed
// image's digest (what a WasmPlugin's sha256 pins).
func TestOCICommand(t *testing.T) {
	wasm := filterFile(t)
	module, err := os.ReadFile(wasm)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(filepath.Dir(wasm))
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "reqcount-oci")
	build := exec.Command("go", "build", "-o", bin, "./envoy/oci/cmd/reqcount-oci")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./envoy/oci/cmd/reqcount-oci: %v\n%s", err, out)
	}

	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	u, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	image := u.Host + "/reqcount:e2e"
	dir, tarPath := filepath.Join(tmp, "oci"), filepath.Join(tmp, "reqcount.oci.tar")
	cmd := exec.Command(bin, "-wasm", wasm, "-layout", dir, "-tar", tarPath, "-push", image)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("reqcount-oci: %v\n%s", err, out)
	}
	t.Logf("reqcount-oci:\n%s", out)

	printed := func(label string) v1.Hash {
		m := regexp.MustCompile(`(?m)^` + label + ` +(sha256:[0-9a-f]{64})\b`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("no %q digest line in the output", label)
		}
		h, err := v1.NewHash(string(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if got, want := printed("module").Hex, fmt.Sprintf("%x", sha256.Sum256(module)); got != want {
		t.Errorf("printed module sha256 %s, want %s (sha256sum %s)", got, want, wasm)
	}
	manifest := printed("manifest")

	ref, err := name.ParseReference(image)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	fromLayout, err := idx.Image(manifest)
	if err != nil {
		t.Fatalf("layout has no image %s: %v", manifest, err)
	}
	tag, err := name.NewTag(image)
	if err != nil {
		t.Fatal(err)
	}
	fromTar, err := tarball.ImageFromPath(tarPath, &tag)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		img  v1.Image
	}{{"registry", pulled}, {"layout", fromLayout}} {
		if d, err := c.img.Digest(); err != nil || d != manifest {
			t.Errorf("%s: image digest %s (%v), want the printed %s", c.name, d, err, manifest)
		}
		got, err := oci.Module(c.img)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !bytes.Equal(got, module) {
			t.Fatalf("%s: module %d bytes, not byte for byte %s (%d bytes)", c.name, len(got), wasm, len(module))
		}
	}
	// docker save's reader rebuilds a Docker manifest, but the layer is the
	// same blob.
	layers, err := fromTar.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("tar: %d layers (%v), want 1", len(layers), err)
	}
	if d, err := layers[0].Digest(); err != nil || d != printed("layer") {
		t.Errorf("tar: layer %s (%v), want the printed %s", d, err, printed("layer"))
	}
}
