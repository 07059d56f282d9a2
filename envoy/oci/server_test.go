package oci_test

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reqcount/reqcount/envoy/oci"
)

// buildHello builds a tiny Go program for linux/amd64 with env (CGO_ENABLED
// and ldflags), returning its bytes.
func buildHello(t *testing.T, cgo string, ldflags string) []byte {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\n\nfunc main() { println(\"hello\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "hello")
	cmd := exec.Command("go", "build", "-o", out, "-ldflags", ldflags, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo, "GOOS=linux", "GOARCH=amd64")
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServerImage(t *testing.T) {
	bin := buildHello(t, "0", "-s -w")
	img, err := oci.ServerImage(bin, "/reqcount-scaler", "8080/tcp", "9090/tcp")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if cf.OS != "linux" || cf.Architecture != "amd64" || len(c.Entrypoint) != 1 || c.Entrypoint[0] != "/reqcount-scaler" ||
		c.User != oci.ServerUser || len(c.ExposedPorts) != 2 {
		t.Errorf("config %s/%s %+v, want linux/amd64, entrypoint /reqcount-scaler, user %s, 2 ports", cf.OS, cf.Architecture, c, oci.ServerUser)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v; want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(tr)
	if hdr.Name != "reqcount-scaler" || hdr.Mode&0o111 == 0 || !bytes.Equal(got, bin) {
		t.Errorf("layer holds %q mode %o (%d bytes), want reqcount-scaler, executable, the binary", hdr.Name, hdr.Mode, len(got))
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("a second entry in the layer: %v", err)
	}
	again, err := oci.ServerImage(bin, "/reqcount-scaler", "8080/tcp", "9090/tcp")
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("the same binary gave two digests: %s, %s", d1, d2)
	}
}

func TestServerImageRefuses(t *testing.T) {
	static := buildHello(t, "0", "")
	tests := []struct {
		name, file, want string
		bin              func(t *testing.T) []byte
	}{
		{"not ELF", "/x", "not an ELF", func(*testing.T) []byte { return []byte("#!/bin/sh\necho hi\n") }},
		{"Wasm", "/x", "not an ELF", func(*testing.T) []byte { return []byte("\x00asm\x01\x00\x00\x00") }},
		{"relative path", "x", "absolute", func(*testing.T) []byte { return static }},
		{"root", "/", "absolute", func(*testing.T) []byte { return static }},
		{"unclean path", "/a/../x", "absolute", func(*testing.T) []byte { return static }},
		{"dynamically linked", "/x", "CGO_ENABLED=0", func(t *testing.T) []byte {
			if _, err := exec.LookPath("gcc"); err != nil {
				t.Skip("no gcc to link a dynamic binary with")
			}
			return buildHello(t, "1", "-linkmode=external")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := oci.ServerImage(tc.bin(t), tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ServerImage = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
