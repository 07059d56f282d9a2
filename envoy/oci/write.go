package oci

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// refNameAnnotation names an image in an OCI image layout's index.json (the
// OCI image spec's annotation; skopeo's oci:DIR:TAG and oras's DIR:TAG read it).
const refNameAnnotation = "org.opencontainers.image.ref.name"

// WriteLayout writes img as an OCI image layout in dir (oci-layout,
// index.json, blobs/sha256/…), its index entry named by tag's tag part. dir is
// replaced whole if it is already an OCI image layout, created if it does not
// exist, and refused otherwise (so a wrong path never deletes anything else).
func WriteLayout(dir string, img v1.Image, tag name.Tag) error {
	if err := removeLayout(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: tag.TagStr()}))
}

// removeLayout removes dir if it is an OCI image layout, does nothing if it does
// not exist, and fails if it is anything else.
func removeLayout(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case len(entries) == 0:
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return fmt.Errorf("%s exists and is not an OCI image layout (no oci-layout file): not replacing it", dir)
	}
	return os.RemoveAll(dir)
}

// WriteArchive writes img to the file at path as one tar that two kinds of
// reader take:
//
//   - an OCI image layout in a tar (what skopeo and podman call oci-archive): the
//     same blobs and manifest as WriteLayout, so the same manifest digest;
//   - docker save's format: a manifest.json naming the config and layer blobs
//     and the tag, as go-containerregistry's tarball package (crane, ko)
//     and every docker load read it. Such readers rebuild a Docker-format
//     manifest: pushed by them, the image gets another digest (Istio loads that
//     shape too, as the compat variant with Docker media types).
//
// The entries are written in a fixed order with fixed times, so the same image
// gives the same file.
func WriteArchive(path string, img v1.Image, tag name.Tag) error {
	tmp, err := os.MkdirTemp("", "reqcount-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "layout")
	if err := WriteLayout(dir, img, tag); err != nil {
		return err
	}

	m, err := tarball.ComputeManifest(map[name.Reference]v1.Image{tag: img})
	if err != nil {
		return err
	}
	if len(m) != 1 {
		return fmt.Errorf("docker manifest.json has %d entries, want 1", len(m))
	}
	// Point docker save's manifest at the layout's blobs rather than at copies.
	cfg, err := img.ConfigName()
	if err != nil {
		return err
	}
	m[0].Config = blobPath(cfg)
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	m[0].Layers = nil
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		m[0].Layers = append(m[0].Layers, blobPath(d))
	}
	dockerManifest, err := json.Marshal(m)
	if err != nil {
		return err
	}

	var buf bytes.Buffer
	if err := tarDir(&buf, dir, map[string][]byte{"manifest.json": dockerManifest}); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// blobPath is where an OCI image layout keeps the blob of digest h.
func blobPath(h v1.Hash) string {
	return path.Join("blobs", h.Algorithm, h.Hex)
}

// tarDir writes the files under dir, and extra, to w as a tar, in name order,
// with fixed owners, modes and times.
func tarDir(w io.Writer, dir string, extra map[string][]byte) error {
	type entry struct {
		name string
		dir  bool
		data []byte
	}
	var entries []entry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		e := entry{name: filepath.ToSlash(rel), dir: d.IsDir()}
		if !e.dir {
			if e.data, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return err
	}
	for n, data := range extra {
		entries = append(entries, entry{name: n, data: data})
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })

	tw := tar.NewWriter(w)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: 0o644, ModTime: epoch.Time, Format: tar.FormatUSTAR}
		if e.dir {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, e.name+"/", 0o755
		} else {
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	return tw.Close()
}
