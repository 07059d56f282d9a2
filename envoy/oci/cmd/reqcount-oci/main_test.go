package main

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/reqcount/reqcount/envoy/oci"
)

// module is a stand-in for build/filter.wasm: Wasm magic and version, then
// bytes. (e2e/ runs the command on the real module.)
var module = append([]byte("\x00asm\x01\x00\x00\x00"), bytes.Repeat([]byte("reqcount"), 4096)...)

func writeModule(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "filter.wasm")
	if err := os.WriteFile(path, module, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// printedDigest returns the digest the command printed on the line that starts
// with label.
func printedDigest(t *testing.T, out, label string) v1.Hash {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + label + ` +(sha256:[0-9a-f]{64})\b`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q line with a digest in the output:\n%s", label, out)
	}
	h, err := v1.NewHash(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestPush runs the command as `make push` does, against a registry served in
// this process, pulls the image back and checks it against what the command
// printed and what it wrote to the layout.
func TestPush(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	u, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	image := u.Host + "/mesh/reqcount:v0.1.0" // 127.0.0.1:port: plain HTTP

	wasm := writeModule(t)
	dir := filepath.Join(t.TempDir(), "oci")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-wasm", wasm, "-layout", dir, "-push", image}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())
	manifest := printedDigest(t, out.String(), "manifest")
	if !strings.Contains(out.String(), "sha256: "+manifest.Hex) {
		t.Errorf("the output does not give the WasmPlugin line `sha256: %s`:\n%s", manifest.Hex, out.String())
	}

	ref, err := name.ParseReference(image)
	if err != nil {
		t.Fatal(err)
	}
	// Resolve the tag as Istio's agent does (remote.Get, then the image).
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != manifest || desc.MediaType != types.OCIManifestSchema1 {
		t.Errorf("registry has %s %s under the tag, want %s %s", desc.MediaType, desc.Digest, types.OCIManifestSchema1, manifest)
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	got, err := oci.Module(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, module) {
		t.Fatalf("pulled module: %d bytes, not byte for byte the pushed one (%d bytes)", len(got), len(module))
	}

	// Pinned by the printed digest, the same image.
	byDigest, err := remote.Image(ref.Context().Digest(manifest.String()))
	if err != nil {
		t.Fatalf("pull by the printed digest: %v", err)
	}
	if d, _ := byDigest.Digest(); d != manifest {
		t.Errorf("pulled by digest: %s, want %s", d, manifest)
	}

	// The layout holds the very image that was pushed, named by the push's tag.
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != manifest ||
		im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v0.1.0" {
		t.Errorf("layout index lists %+v, want one entry %s named v0.1.0", im.Manifests, manifest)
	}
}

// TestPushServer is make scaler-image with IMAGE: a static Linux binary as a
// container image, pushed, pulled back with its entrypoint, and pinned by the
// digest printed.
func TestPushServer(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	u, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	image := u.Host + "/mesh/reqcount-scaler:v0.1.0"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "reqcount-scaler")
	build := exec.Command("go", "build", "-o", bin, "main.go")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-server", bin, "-ports", "8080/tcp,9090/tcp", "-tar", filepath.Join(dir, "img.tar"), "-push", image}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	manifest := printedDigest(t, out.String(), "manifest")
	if want := "image: " + strings.Split(image, ":v0")[0] + "@" + manifest.String(); !strings.Contains(out.String(), want) {
		t.Errorf("no %q line in the output:\n%s", want, out.String())
	}
	ref, err := name.ParseReference(image)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := img.Digest(); d != manifest {
		t.Errorf("registry has %s, the command printed %s", d, manifest)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if ep := cf.Config.Entrypoint; len(ep) != 1 || ep[0] != "/reqcount-scaler" || len(cf.Config.ExposedPorts) != 2 {
		t.Errorf("pulled config %+v, want entrypoint /reqcount-scaler and two ports", cf.Config)
	}
}

func TestRunRefuses(t *testing.T) {
	wasm := writeModule(t)
	notWasm := filepath.Join(t.TempDir(), "x.wasm")
	if err := os.WriteFile(notWasm, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"nothing to do", []string{"-wasm", wasm}, "nothing to do"},
		{"ports without -server", []string{"-wasm", wasm, "-layout", dir + "/p", "-ports", "8080/tcp"}, "-ports"},
		{"server not an executable", []string{"-server", wasm, "-layout", dir + "/s"}, "not an ELF"},
		{"push without a tag", []string{"-wasm", wasm, "-push", "127.0.0.1:1/reqcount"}, "-push"},
		{"bad tag", []string{"-wasm", wasm, "-layout", dir + "/a", "-tag", "Reqcount::"}, "-tag"},
		{"module missing", []string{"-wasm", filepath.Join(dir, "none.wasm"), "-layout", dir + "/b"}, "none.wasm"},
		{"not a module", []string{"-wasm", notWasm, "-layout", dir + "/c"}, "not a Wasm binary"},
		{"stray argument", []string{"-wasm", wasm, "-layout", dir + "/d", "extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run(%q): %v, want an error containing %q", tt.args, err, tt.wantErr)
			}
		})
	}
}
