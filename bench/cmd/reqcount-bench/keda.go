package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"

	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/messages"
	"github.com/reqcount/reqcount/scaler/ingest"
	"github.com/reqcount/reqcount/scaler/kedaclient"
	"github.com/reqcount/reqcount/scaler/server"
	"github.com/reqcount/reqcount/scaler/store"
)

// reqcount-scaler (issue 16): the KEDA path's wake-up latency, the POSTs one
// core of the scaler takes, and its memory per target.
const (
	// targetKEDAWakeupP99 bounds the first request in Envoy → StreamIsActive
	// true at the KEDA client (the HTTP add-on's scaler polls every 500 ms,
	// streams every 200 ms).
	targetKEDAWakeupP99 = 10 * time.Millisecond
	// kedaPostClients are the load generator's concurrent keep-alive clients.
	kedaPostClients = 16
	// kedaPostTargets are the targets the POSTs rotate over.
	kedaPostTargets = 1000
	// kedaMemTargets are the targets of the memory measurement.
	kedaMemTargets = 10000
	// roleEnv makes the benchmark binary serve as a child: "scaler" or
	// "postfloor", on one core (GOMAXPROCS=1), printing its address.
	roleEnv = "REQCOUNT_BENCH_ROLE"
)

// kedaBench is what the KEDA phase measured.
type kedaBench struct {
	latencies []time.Duration // first request → StreamIsActive true
	stopped   string
	posts     postRun // the scaler on one core
	floor     postRun // a bare net/http handler on one core: the baseline
	perTarget float64 // bytes of Go heap per target, 1 s buckets over the default max window
}

// postRun is one sustained-POST measurement.
type postRun struct {
	requests  int
	errors    int
	elapsed   time.Duration
	latencies []time.Duration
}

func (p postRun) perSecond() float64 {
	if p.elapsed <= 0 {
		return 0
	}
	return float64(p.requests) / p.elapsed.Seconds()
}

func runKEDA(ctx context.Context, o options, mod *wasmhost.Module) (*kedaBench, error) {
	res := &kedaBench{}
	if err := res.wakeups(ctx, o, mod); err != nil {
		return nil, err
	}
	dur := 3 * time.Second
	if o.quick {
		dur = 300 * time.Millisecond
	}
	var err error
	if res.floor, err = postLoad(ctx, "postfloor", dur); err != nil {
		return nil, err
	}
	if res.posts, err = postLoad(ctx, "scaler", dur); err != nil {
		return nil, err
	}
	res.perTarget = scalerMemoryPerTarget()
	return res, nil
}

// wakeups measures, o.wakeups times, the first request of a never-seen key
// in the filter (one worker, real-time ticks, flush_interval wakeupInterval)
// → the filter's wake-up over loopback HTTP to reqcount-scaler → the push on
// the key's StreamIsActive stream, received by KEDA's generated client.
func (k *kedaBench) wakeups(ctx context.Context, o options, mod *wasmhost.Module) error {
	srv, err := server.New(server.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	run, err := srv.Start("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer run.Stop()
	conn, err := kedaclient.Dial(run.GRPCAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := pb.NewExternalScalerClient(conn)

	h, err := wasmhost.New(ctx, mod, wasmhost.Config{
		PluginConfig: fmt.Appendf(nil, `{"cluster":%q,"flush_interval":%q}`, cluster, wakeupInterval),
		Clusters:     map[string]string{cluster: run.HTTPAddr},
		LogLevel:     wasmhost.LevelInfo,
	})
	if err != nil {
		return fmt.Errorf("keda wake-up: %w", err)
	}
	defer h.Close(ctx)
	w := h.Worker(0)
	for i := 0; i < wakeupWarmup+o.wakeups; i++ {
		svc := fmt.Sprintf("wake-%05d", i)
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		stream, err := client.StreamIsActive(sctx, &pb.ScaledObjectRef{Name: svc, Namespace: "bench",
			ScalerMetadata: map[string]string{"service": svc, "targetRequestsPerSecond": "1"}})
		if err == nil {
			_, err = stream.Recv() // the state at open: false
		}
		if err != nil {
			cancel()
			return fmt.Errorf("keda wake-up %d: StreamIsActive: %w", i, err)
		}
		hs := append([][2]string(nil), benchRequest.Headers...)
		hs[0][1] = svc + ".bench.svc.cluster.local:8080"
		start := time.Now()
		if _, err := w.Request(ctx, wasmhost.Request{Headers: hs}); err != nil {
			cancel()
			return fmt.Errorf("keda wake-up: %w", err)
		}
		got := make(chan bool, 1)
		go func() {
			r, err := stream.Recv()
			got <- err == nil && r.GetResult()
		}()
		select {
		case ok := <-got:
			if !ok {
				k.stopped = fmt.Sprintf("wake-up %d: the stream of %s.bench ended or pushed false", i, svc)
			} else if i >= wakeupWarmup {
				k.latencies = append(k.latencies, time.Since(start))
			}
		case <-time.After(wakeupWait):
			k.stopped = fmt.Sprintf("wake-up %d: no push for %s.bench within %v of its first request", i, svc, wakeupWait)
		}
		cancel()
		if k.stopped != "" {
			break
		}
	}
	return w.Crashed()
}

// postLoad starts this binary as role on one core and drives it with
// kedaPostClients keep-alive clients posting single RequestCount bodies over
// kedaPostTargets targets for dur.
func postLoad(ctx context.Context, role string, dur time.Duration) (postRun, error) {
	exe, err := os.Executable()
	if err != nil {
		return postRun{}, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), roleEnv+"="+role, "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return postRun{}, err
	}
	if err := cmd.Start(); err != nil {
		return postRun{}, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return postRun{}, fmt.Errorf("%s: no address: %w", role, err)
	}
	url := "http://" + strings.TrimSpace(line) + ingest.DefaultPath

	bodies := make([][]byte, kedaPostTargets)
	for i := range bodies {
		bodies[i] = messages.AppendJSON(nil, messages.RequestCount{Count: 1 + i%7, Svc: fmt.Sprintf("svc-%04d", i), Namespace: "bench"})
	}
	tr := &http.Transport{MaxIdleConnsPerHost: kedaPostClients, MaxConnsPerHost: kedaPostClients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	post := func(b []byte) error {
		res, err := client.Post(url, "application/json", strings.NewReader(string(b)))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("%s answered %d", role, res.StatusCode)
		}
		return nil
	}
	// Warm up: every connection, every target once.
	for _, b := range bodies {
		if err := post(b); err != nil {
			return postRun{}, err
		}
	}
	var mu sync.Mutex
	var run postRun
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for c := range kedaPostClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			errs := 0
			for i := c; time.Now().Before(deadline); i += kedaPostClients {
				t := time.Now()
				if err := post(bodies[i%len(bodies)]); err != nil {
					errs++
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			run.latencies = append(run.latencies, lat...)
			run.errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	run.elapsed = time.Since(start)
	run.requests = len(run.latencies)
	return run, nil
}

// serveRole runs the benchmark binary as a child server (roleEnv) and
// returns true, or returns false when roleEnv is not set.
func serveRole() bool {
	role := os.Getenv(roleEnv)
	if role == "" {
		return false
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	switch role {
	case "postfloor":
		// The least a request-count endpoint can do: read the body, answer.
		http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, ingest.SuccessBody)
		}))
	case "scaler":
		srv, err := server.New(server.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err == nil {
			var gl net.Listener
			if gl, err = net.Listen("tcp", "127.0.0.1:0"); err == nil {
				err = srv.Serve(context.Background(), ln, gl)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		fmt.Fprintf(os.Stderr, "%s=%q: want scaler or postfloor\n", roleEnv, role)
		os.Exit(2)
	}
	return true
}

// scalerMemoryPerTarget is the Go heap a store at its defaults (1 s buckets
// over the default max window) holds per target, from 10 000 targets.
func scalerMemoryPerTarget() float64 {
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	st, err := store.New(store.Options{})
	if err != nil {
		return 0
	}
	before := heap()
	for i := range kedaMemTargets {
		st.Add([]messages.RequestCount{{Count: 1, Svc: fmt.Sprintf("svc-%05d", i), Namespace: "bench"}})
	}
	after := heap()
	runtime.KeepAlive(st)
	return float64(after-before) / kedaMemTargets
}

func (k *kedaBench) tableRows(row func(...string)) {
	if k == nil {
		return
	}
	value := "none measured"
	detail := fmt.Sprintf("%d wake-ups after %d untimed: the first request of a never-seen key, from just before Worker.Request to KEDA's generated client receiving true on the key's StreamIsActive stream (filter → loopback HTTP → reqcount-scaler → gRPC push)",
		len(k.latencies), wakeupWarmup)
	if len(k.latencies) > 0 {
		value = fmt.Sprintf("p50 %s, p99 %s", ms(percentile(k.latencies, 50)), ms(percentile(k.latencies, 99)))
		detail += fmt.Sprintf("; min–max %s–%s", ms(minDuration(k.latencies)), ms(maxDuration(k.latencies)))
	}
	if k.stopped != "" {
		detail += "; stopped: " + k.stopped
	}
	row("KEDA wake-up latency", fmt.Sprintf("filter → reqcount-scaler → StreamIsActive, flush_interval %v", wakeupInterval), value, detail)
	for _, p := range []struct {
		name string
		run  postRun
	}{{"reqcount-scaler", k.posts}, {"post-floor (read the body, answer 200)", k.floor}} {
		row("sustained POSTs on one core", p.name, fmt.Sprintf("%s/s", groupf(p.run.perSecond())),
			fmt.Sprintf("GOMAXPROCS=1; %d keep-alive clients posting one RequestCount each over %d targets for %v; latency p50 %s, p99 %s; %d errors",
				kedaPostClients, kedaPostTargets, p.run.elapsed.Round(time.Millisecond), ms(percentile(p.run.latencies, 50)), ms(percentile(p.run.latencies, 99)), p.run.errors))
	}
	if f := k.floor.perSecond(); f > 0 {
		row("sustained POSTs on one core", "reqcount-scaler / post-floor", fmt.Sprintf("%.3f", k.posts.perSecond()/f), "ratio of POSTs per second, both measured in this run")
	}
	row("scaler memory per target", fmt.Sprintf("store at its defaults (1 s buckets, %v window)", store.DefaultMaxWindow), fmt.Sprintf("%s B", groupf(k.perTarget)),
		fmt.Sprintf("Go heap after GC, %s targets with one report each; the bucket ring alone is %d B", groupf(kedaMemTargets), int(store.DefaultMaxWindow/store.DefaultResolution)*4))
}

func (k *kedaBench) targets(o options, target func(ok bool, format string, args ...any)) {
	if k == nil {
		return
	}
	p50, p99 := percentile(k.latencies, 50), percentile(k.latencies, 99)
	detail := fmt.Sprintf("p99 %s, p50 %s over %d wake-ups", ms(p99), ms(p50), len(k.latencies))
	if k.stopped != "" {
		detail += "; stopped: " + k.stopped
	}
	target(k.stopped == "" && len(k.latencies) == o.wakeups && p99 < targetKEDAWakeupP99,
		"KEDA wake-up latency (first request in the filter → StreamIsActive true at KEDA's client) p99 < %s: %s", ms(targetKEDAWakeupP99), detail)
	target(k.posts.errors == 0 && k.floor.errors == 0 && k.posts.requests > 0,
		"sustained POSTs: every POST answered 200 (a correctness check of the run): %d and %d errors", k.posts.errors, k.floor.errors)
}
