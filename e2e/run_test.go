package e2e_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestRunCommand keeps the README's `make run` promise: the reqcount-run command
// serves HTTP through build/filter.wasm, and a request for Host web.shop shows up
// on its stdout as the collector's JSON line and in its admin's
// /stats/prometheus; Ctrl-C ends it cleanly.
func TestRunCommand(t *testing.T) {
	wasm := filterFile(t)
	root := filepath.Dir(filepath.Dir(wasm))
	addr, adminAddr := freeAddr(t), freeAddr(t)
	p := startRun(t, "-listen", addr, "-admin", adminAddr, "-bootstrap", filepath.Join(root, "envoy", "envoy.yaml"))
	stderr, lines, exited, deadline := p.stderr, p.lines, p.exited, p.deadline

	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "web.shop"
	client := &http.Client{Timeout: waitLimit}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET /: %v\nstderr:\n%s", err, stderr.String())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: %s %s\nstderr:\n%s", resp.Status, body, stderr.String())
	}
	// web.shop starts cold (-cold's default): the request waited in the
	// filter until the collector, as the operator, brought it up, and got
	// the service's answer, not Envoy's 503.
	if !bytes.Contains(body, []byte("web.shop was cold: held")) {
		t.Fatalf("GET /: %q, want the answer of a held request\nstderr:\n%s", body, stderr.String())
	}

	// The flush (every second by default) prints what the collector accepted.
	const want = `{"count":1,"svc":"web","namespace":"shop"}`
	var seen []string
	for found := false; !found; {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("stdout ended without %s; it had %q\nstderr:\n%s", want, seen, stderr.String())
			}
			seen = append(seen, line)
			found = line == want
		case <-deadline.C:
			t.Fatalf("no %s on stdout within %v; it had %q\nstderr:\n%s", want, waitLimit, seen, stderr.String())
		}
	}

	// The admin shows the count (the filter moves it into its counters on a
	// tick, which may come just after the flush).
	for {
		fams := scrape(t, "http://"+adminAddr+"/stats/prometheus")
		got := counterValue(fams["reqcount_requests_counted"], nil)
		if got == 1 {
			break
		}
		if got > 1 {
			t.Fatalf("admin: reqcount_requests_counted = %v after one request", got)
		}
		select {
		case <-deadline.C:
			t.Fatalf("admin: reqcount_requests_counted = %v, not 1 within %v\nstderr:\n%s", got, waitLimit, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}

	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case line, ok := <-lines:
			if ok {
				// Nothing else was sent: a second count would be a double count.
				t.Errorf("stdout after the count: %q", line)
				continue
			}
			lines = nil
		case err := <-exited:
			p.waited = true
			if err != nil {
				t.Fatalf("reqcount-run after SIGINT: %v (want exit 0)\nstderr:\n%s", err, stderr.String())
			}
			return
		case <-deadline.C:
			t.Fatalf("reqcount-run still running %v after SIGINT\nstderr:\n%s", waitLimit, stderr.String())
		}
	}
}

// runProc is a reqcount-run started by startRun.
type runProc struct {
	stderr   *lockedBuffer
	lines    chan string // stdout, line by line; closed at its end
	exited   chan error  // Wait's result, once stdout ended
	waited   bool        // exited was read
	deadline *time.Timer // waitLimit from the start
	cmd      *exec.Cmd
}

// startRun builds reqcount-run, starts it with -wasm build/filter.wasm and
// args, and waits for args' -listen address to accept. The process is killed
// when the test ends unless the test saw it exit.
func startRun(t *testing.T, args ...string) *runProc {
	t.Helper()
	wasm := filterFile(t)
	root := filepath.Dir(filepath.Dir(wasm))
	bin := filepath.Join(t.TempDir(), "reqcount-run")
	build := exec.Command("go", "build", "-o", bin, "./e2e/cmd/reqcount-run")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./e2e/cmd/reqcount-run: %v\n%s", err, out)
	}
	var addr string
	for i, a := range args {
		if a == "-listen" && i+1 < len(args) {
			addr = args[i+1]
		}
	}
	p := &runProc{stderr: &lockedBuffer{}, lines: make(chan string, 16), exited: make(chan error, 1),
		deadline: time.NewTimer(waitLimit)}
	p.cmd = exec.Command(bin, append([]string{"-wasm", wasm}, args...)...)
	p.cmd.Dir = root
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		// Read stdout to its end before Wait, as StdoutPipe requires.
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.exited <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.deadline.Stop()
		if !p.waited {
			_ = p.cmd.Process.Kill()
			for range p.lines { // unblock the reader
			}
			<-p.exited
		}
	})
	// Wait for the listener, or for the command to die trying.
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return p
		}
		select {
		case err := <-p.exited:
			p.waited = true
			t.Fatalf("reqcount-run exited before listening: %v\nstderr:\n%s", err, p.stderr.String())
		case <-p.deadline.C:
			t.Fatalf("reqcount-run not listening on %s within %v\nstderr:\n%s", addr, waitLimit, p.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitStderr waits for re to match the command's stderr and returns the
// match and its groups.
func (p *runProc) waitStderr(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	for {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			return m
		}
		select {
		case <-p.deadline.C:
			t.Fatalf("stderr: no match for %s within %v:\n%s", re, waitLimit, p.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// filterFile returns the path of build/filter.wasm, failing the test (not
// skipping it) when it is missing.
func filterFile(t *testing.T) string {
	t.Helper()
	path, err := filterPath()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s missing: run `make build`", path)
	} else if err != nil {
		t.Fatal(err)
	}
	return path
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// lockedBuffer is a bytes.Buffer safe to read while a command writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
