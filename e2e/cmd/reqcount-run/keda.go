package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"

	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/scaler/kedaclient"
	"github.com/reqcount/reqcount/scaler/server"
	"github.com/reqcount/reqcount/scaler/store"
)

// kedaTarget is the targetRequestsPerSecond of make run-keda's ScaledObjects.
const kedaTarget = 1.0

// kedaMaxReplicas is their maxReplicaCount, for the replicas printed.
const kedaMaxReplicas = 10

// kedaDemo is make run-keda's side: reqcount-scaler in process, as the
// filter's cluster, and a KEDA-like client per cold service that does what
// KEDA and Kubernetes would: on StreamIsActive's true it scales the service
// from zero (its cluster gets a healthy host -up-after later), on false it
// scales it to zero, and every -keda-poll it prints what the HPA would see.
type kedaDemo struct {
	run  *server.Running
	conn *grpc.ClientConn
}

func startKEDA(ctx context.Context, grpcLn net.Listener, o options, wakeAfter time.Duration, cold map[string]string, hostp *atomic.Pointer[wasmhost.Host]) (*kedaDemo, error) {
	res := store.DefaultResolution
	window := o.kedaWindow.Round(res)
	if window < res {
		return nil, fmt.Errorf("-keda-window %v: want at least %v", o.kedaWindow, res)
	}
	if wakeAfter > 0 && window < wakeAfter {
		// KEDA scales to zero cooldownPeriod after the window passes with no
		// count; this demo at once (a cooldownPeriod of 0).
		log.Printf("keda: warning: -keda-window %v is shorter than the filter's wake_after %v: a request that comes after the scale to zero "+
			"but within wake_after of the last one is not a wake-up, so it is not held and gets Envoy's 503; keep window + cooldownPeriod ≥ wake_after (README, KEDA)",
			window, wakeAfter)
	}
	srv, err := server.New(server.Options{
		Store: store.Options{MaxWindow: max(store.DefaultMaxWindow, window)},
		Log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return nil, err
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &kedaDemo{run: srv.StartOn(hl, grpcLn)}

	addr := grpcAddress(o.keda, grpcLn.Addr())
	log.Printf("keda: grpc reqcount-scaler %s (a ScaledObject's external-push trigger: scalerAddress %s)", addr, addr)
	if d.conn, err = kedaclient.Dial(addr); err != nil {
		d.close()
		return nil, err
	}
	if len(cold) == 0 {
		log.Printf("keda: no -cold services, nothing to watch")
	}
	for k, cluster := range cold {
		svc, ns, _ := strings.Cut(k, ".")
		ref := &pb.ScaledObjectRef{Name: svc, Namespace: ns, ScalerMetadata: map[string]string{
			"scalerAddress":           addr,
			"service":                 svc,
			"targetRequestsPerSecond": fmt.Sprint(kedaTarget),
			"window":                  window.String(),
		}}
		log.Printf("keda: watching %s as a ScaledObject would (targetRequestsPerSecond %v, window %v, pollingInterval %v, minReplicaCount 0)",
			k, kedaTarget, window, o.kedaPoll)
		w := &kedaWatch{key: k, cluster: cluster, upAfter: o.upAfter, hostp: hostp}
		go kedaclient.Watch(ctx, d.conn, ref, kedaclient.Options{PollingInterval: o.kedaPoll}, w.event)
	}
	return d, nil
}

// grpcAddress is the -keda address with the port bound (for -keda host:0).
func grpcAddress(flagAddr string, bound net.Addr) string {
	host, _, err := net.SplitHostPort(flagAddr)
	_, port, perr := net.SplitHostPort(bound.String())
	if err != nil || perr != nil {
		return bound.String()
	}
	if host == "" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func (d *kedaDemo) close() {
	if d.conn != nil {
		d.conn.Close()
	}
	if err := d.run.Stop(); err != nil {
		log.Printf("keda: reqcount-scaler shutdown: %v", err)
	}
}

// kedaWatch is one ScaledObject's KEDA: it prints what KEDA sees and scales
// the service. Its event is called from one goroutine at a time.
type kedaWatch struct {
	key, cluster string
	upAfter      time.Duration
	hostp        *atomic.Pointer[wasmhost.Host]
	replicas     int          // what KEDA set: 0, or 1 and more
	gen          atomic.Int64 // bumped on every scale to zero, so a late scale-up is dropped
	lastPoll     string
}

func (w *kedaWatch) event(e kedaclient.Event) {
	switch e.Kind {
	case "stream":
		switch {
		case e.Active && w.replicas == 0:
			w.replicas = 1
			gen := w.gen.Load()
			log.Printf("keda: %s active (StreamIsActive pushed true): scaling 0 → 1, ready in %v", w.key, w.upAfter)
			time.AfterFunc(w.upAfter, func() { w.scaledUp(gen) })
		case !e.Active && w.replicas > 0:
			w.replicas = 0
			w.gen.Add(1)
			log.Printf("keda: %s inactive (StreamIsActive pushed false: no request for the window): scaling to 0", w.key)
			if h := w.hostp.Load(); h != nil {
				h.SetClusterHealthy(w.cluster, false)
			}
		default:
			log.Printf("keda: %s StreamIsActive: %v", w.key, e.Active)
		}
	case "poll":
		want := 0
		if e.Active {
			want = min(max(1, int(math.Ceil(e.Rate/e.Target))), kedaMaxReplicas)
		}
		line := fmt.Sprintf("active %v, rate %.2f/s, target %v/s: the HPA wants %d replicas", e.Active, e.Rate, e.Target, want)
		if line != w.lastPoll {
			w.lastPoll = line
			log.Printf("keda: %s poll: %s", w.key, line)
		}
	case "error":
		log.Printf("keda: %s: %v", w.key, e.Err)
	}
}

// scaledUp gives the service's cluster a healthy host, unless it was scaled
// to zero again since gen.
func (w *kedaWatch) scaledUp(gen int64) {
	h := w.hostp.Load()
	if h == nil || w.gen.Load() != gen {
		return
	}
	h.SetClusterHealthy(w.cluster, true)
	log.Printf("keda: %s is up (its cluster has a healthy host)", w.key)
}
