package e2e_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"

	"github.com/reqcount/reqcount/scaler/kedaclient"
)

// TestRunKEDA keeps make run-keda's promise with KEDA's generated client
// against the scaler the command starts: it prints the gRPC address; the
// first request through the filter turns the target active (a push on
// StreamIsActive, and the command's own KEDA-like client scales the cold
// service up, so the request, held meanwhile, gets the service's answer);
// GetMetrics follows the traffic; silence turns it inactive; a bad body
// posted to the scaler gets a 400 and is not counted.
func TestRunKEDA(t *testing.T) {
	addr, grpcAddr := freeAddr(t), freeAddr(t)
	p := startRun(t, "-listen", addr, "-admin", "", "-keda", grpcAddr,
		"-keda-window", "5s", "-keda-poll", "500ms", "-up-after", "300ms")
	p.waitStderr(t, regexp.MustCompile(`keda: grpc reqcount-scaler `+regexp.QuoteMeta(grpcAddr)))
	endpoint := p.waitStderr(t, regexp.MustCompile(`go to reqcount-scaler at (http://\S+)`))[1]

	conn, err := kedaclient.Dial(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	ref := &pb.ScaledObjectRef{Name: "web", Namespace: "shop",
		ScalerMetadata: map[string]string{"service": "web", "targetRequestsPerSecond": "1", "window": "5s"}}
	stream, err := pb.NewExternalScalerClient(conn).StreamIsActive(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	recv := func(want bool) time.Time {
		t.Helper()
		r, err := stream.Recv()
		if err != nil || r.GetResult() != want {
			t.Fatalf("StreamIsActive = %v, %v; want %v\nstderr:\n%s", r, err, want, p.stderr.String())
		}
		return time.Now()
	}
	recv(false)

	get := func() string {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		req.Host = "web.shop"
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 {
			t.Fatalf("GET = %d %s\nstderr:\n%s", res.StatusCode, b, p.stderr.String())
		}
		return string(b)
	}
	sent := time.Now()
	answered := make(chan string, 1)
	go func() { answered <- get() }()
	t.Logf("first request → StreamIsActive true: %v", recv(true).Sub(sent))
	if body := <-answered; !strings.Contains(body, "web.shop was cold: held") {
		t.Fatalf("first request = %q, want the answer of a held request", body)
	}
	for range 9 {
		get()
	}
	// The counts arrive with the filter's flushes (every second here): the
	// rate over the 5s window is the 10 requests, once they all arrived.
	client := pb.NewExternalScalerClient(conn)
	for {
		e := kedaclient.Poll(ctx, client, ref)
		if e.Kind == "poll" && e.Rate == 10.0/5 {
			break
		}
		if e.Kind != "poll" || e.Rate > 10.0/5 || ctx.Err() != nil {
			t.Fatalf("poll = %+v, want the rate of 10 requests over 5s", e)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Silence: inactive once the window passes with no count.
	recv(false)
	p.waitStderr(t, regexp.MustCompile(`keda: web.shop inactive .*: scaling to 0`)) // the command's KEDA

	// Bad input: errors, not counts.
	res, err := http.Post(endpoint, "application/json", strings.NewReader(`{"count":5,"svc":"Web","namespace":"shop"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 400 || !strings.Contains(string(b), "svc") {
		t.Errorf("bad body = %d %q, want 400 naming svc", res.StatusCode, b)
	}
	if e := kedaclient.Poll(ctx, client, &pb.ScaledObjectRef{Name: "web", Namespace: "shop",
		ScalerMetadata: map[string]string{"service": "Web", "targetRequestsPerSecond": "1"}}); e.Kind != "error" || !strings.Contains(e.Err.Error(), "scalerMetadata.service") {
		t.Errorf("bad metadata: %+v, want an error naming scalerMetadata.service", e)
	}

	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range p.lines {
	}
	p.waited = true
	if err := <-p.exited; err != nil {
		t.Fatalf("after SIGINT: %v\nstderr:\n%s", err, p.stderr.String())
	}
}
