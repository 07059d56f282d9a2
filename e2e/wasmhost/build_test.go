package wasmhost

import (
	"context"
	"fmt"
	"github.com/reqcount/reqcount/filter/wasmrewrite"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The tests build their modules from source, into a temporary directory,
// rather than use build/*.wasm: a stale build/ would test old code, and the
// builds are cached by the go tool (a few seconds cold, well under one warm).
//   - testdata/guest, this package's ABI probe, with a plain
//     `GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared`;
//   - the SDK floor plugins bench/noop and bench/authorityfloor, with
//     filter/_sdkabi/build.sh, the project's one way to build SDK modules.

var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wasmhost-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go" // let exec report it missing
}

type builtModule struct {
	once sync.Once
	mod  *Module
	raw  []byte // as the Go toolchain built it, before wasmrewrite
	err  error
}

var (
	// buildMu serializes builds: filter/_sdkabi/build.sh rewrites build/sdk.
	buildMu sync.Mutex
	built   sync.Map // name → *builtModule
)

// module returns the compiled module name ("guest", "noop",
// "authorityfloor"), building and compiling it once per test binary. The
// Module is shared by the tests (one compiled module, many Hosts, as Envoy
// shares one compiled VM) and never closed.
func module(t testing.TB, name string) *Module {
	t.Helper()
	v, _ := built.LoadOrStore(name, &builtModule{})
	b := v.(*builtModule)
	b.once.Do(func() { b.mod, b.raw, b.err = buildModule(t, name) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.mod
}

// rawGuest returns the guest as go build wrote it: still importing
// poll_oneoff, as every Go module does before filter/wasmrewrite.
func rawGuest(t testing.TB) []byte {
	module(t, "guest")
	v, _ := built.Load("guest")
	return v.(*builtModule).raw
}

func buildModule(t testing.TB, name string) (*Module, []byte, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	root := repoRoot(t)
	out := filepath.Join(buildDir, name+".wasm")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var cmd *exec.Cmd
	switch name {
	case "guest":
		cmd = exec.CommandContext(ctx, goTool(), "build", "-buildmode=c-shared", "-o", out, "./e2e/wasmhost/testdata/guest")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	case "noop", "authorityfloor":
		cmd = exec.CommandContext(ctx, filepath.Join(root, "filter", "_sdkabi", "build.sh"), "-o", out, "./bench/"+name)
	default:
		return nil, nil, fmt.Errorf("unknown test module %q", name)
	}
	cmd.Dir = root
	if outb, err := cmd.CombinedOutput(); err != nil {
		return nil, nil, fmt.Errorf("build %s: %v\n%s", name, err, outb)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		return nil, nil, err
	}
	wasm := raw
	if name == "guest" {
		// As build.sh does for the others: the guest answers its own
		// poll_oneoff (filter/wasmrewrite), or a Go panic in it dies
		// in usleep on this host's ENOSYS before printing its message.
		if wasm, _, err = wasmrewrite.OwnPollOneoff(raw); err != nil {
			return nil, nil, err
		}
	}
	mod, err := Compile(context.Background(), wasm)
	return mod, raw, err
}
