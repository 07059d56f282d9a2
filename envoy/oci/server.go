package oci

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"path"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ServerUser is the user and group a server image runs as: the nonroot user
// of distroless images, the runAsUser of envoy/keda/scaler.yaml.
const ServerUser = "65532:65532"

// ServerImage returns a container image holding only binary, a statically
// linked Linux executable, at file (an absolute path such as
// "/reqcount-scaler"), as its entrypoint, run as ServerUser, with ports
// exposed (e.g. "8080/tcp"). It is how reqcount-scaler ships (make
// scaler-image): a static Go binary needs no base image, so none is pulled.
// It refuses anything but a static ELF executable, and takes the image's
// architecture from the ELF header. The same binary always gives the same
// digests.
func ServerImage(binary []byte, file string, ports ...string) (v1.Image, error) {
	arch, err := staticELF(binary)
	if err != nil {
		return nil, err
	}
	if !path.IsAbs(file) || path.Clean(file) != file || file == "/" {
		return nil, fmt.Errorf("file %q: want a clean absolute path such as /reqcount-scaler", file)
	}
	exposed := map[string]struct{}{}
	for _, p := range ports {
		exposed[p] = struct{}{}
	}
	return oneFileImage(file[1:], binary, 0o555, v1.ConfigFile{
		OS:           "linux",
		Architecture: arch,
		Config: v1.Config{
			Entrypoint:   []string{file},
			User:         ServerUser,
			WorkingDir:   "/",
			ExposedPorts: exposed,
		},
	})
}

// staticELF checks that b is a statically linked ELF executable and returns
// its GOARCH-style architecture.
func staticELF(b []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return "", fmt.Errorf("not an ELF executable: %w (build it with GOOS=linux)", err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return "", fmt.Errorf("ELF type %v: want an executable", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", errors.New("dynamically linked (it names an ELF interpreter): an image with no base has no libc; build it with CGO_ENABLED=0")
		}
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	}
	return "", fmt.Errorf("ELF machine %v: want x86-64 or aarch64", f.Machine)
}
