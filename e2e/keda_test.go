package e2e_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"

	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/scaler/kedaclient"
	"github.com/reqcount/reqcount/scaler/server"
	"github.com/reqcount/reqcount/scaler/store"
)

// startScaler serves reqcount-scaler on loopback until the test ends and
// returns it with its HTTP and gRPC addresses.
func startScaler(t testing.TB) (srv *server.Server, httpAddr, grpcAddr string) {
	t.Helper()
	srv, err := server.New(server.Options{
		Store: store.Options{MaxWindow: time.Minute},
		Log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	run, err := srv.Start("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := run.Stop(); err != nil {
			t.Errorf("scaler shutdown: %v", err)
		}
	})
	return srv, run.HTTPAddr, run.GRPCAddr
}

// TestKEDAFirstRequest is the KEDA path end to end: the compiled filter in the
// e2e host reports to its cluster, the cluster is reqcount-scaler, and KEDA's
// generated client, watching web.shop on StreamIsActive, sees the first
// request as a push of true (the filter's wake-up, sent from the request
// itself). Then every request the workers saw is in the scaler exactly once,
// as counts over the flush intervals, and GetMetrics answers their rate.
func TestKEDAFirstRequest(t *testing.T) {
	for _, tc := range []struct{ mode, aggregate string }{
		{"single", "envoy"},
		{"batch", "envoy"},
		{"single", "worker"},
	} {
		t.Run(tc.mode+"/"+tc.aggregate, func(t *testing.T) {
			srv, httpAddr, grpcAddr := startScaler(t)
			conn, err := kedaclient.Dial(grpcAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			ref := &pb.ScaledObjectRef{Name: "web", Namespace: "shop",
				ScalerMetadata: map[string]string{"service": "web", "targetRequestsPerSecond": "10", "window": "1m"}}
			events := make(chan kedaclient.Event, 64)
			go kedaclient.Watch(ctx, conn, ref, kedaclient.Options{}, func(e kedaclient.Event) { events <- e })
			expect := func(active bool) time.Time {
				t.Helper()
				select {
				case e := <-events:
					if e.Kind != "stream" || e.Active != active {
						t.Fatalf("KEDA client got %+v, want the stream's %v", e, active)
					}
					return e.At
				case <-ctx.Done():
					t.Fatalf("KEDA client: no %v within %v", active, waitLimit)
					return time.Time{}
				}
			}
			expect(false)

			h := startHost(t, wasmhost.Config{
				Workers: 2,
				PluginConfig: []byte(fmt.Sprintf(`{"cluster":"reqcount-scaler","flush_interval":"1s","mode":%q,"aggregate":%q}`,
					tc.mode, tc.aggregate)),
				Clusters: map[string]string{"reqcount-scaler": httpAddr},
			})
			req := func(w int, authority string) {
				t.Helper()
				if _, err := h.Worker(w).Request(ctx, wasmhost.Request{Headers: [][2]string{
					{":authority", authority}, {":path", "/"}, {":method", "GET"}}}); err != nil {
					t.Fatal(err)
				}
			}
			sent := time.Now()
			req(0, "web.shop")
			at := expect(true)
			t.Logf("first request in the filter → StreamIsActive true at the KEDA client: %v", at.Sub(sent))

			// Traffic on both workers, to web.shop and to a service nobody watches.
			const perWorker = 50
			for i := range perWorker {
				req(0, "web.shop")
				req(1, "web.shop:80")
				if i%10 == 0 {
					req(1, "api.shop")
				}
			}
			wantWeb, wantAPI := uint64(1+2*perWorker), uint64(perWorker/10)
			closeHost(t, h) // the shutdown flushes what is left
			web, api := store.Key{Service: "web", Namespace: "shop"}, store.Key{Service: "api", Namespace: "shop"}
			if got := srv.Store.Sum(web, time.Minute); got != wantWeb {
				t.Errorf("scaler holds %d requests of web.shop, want %d (each exactly once)", got, wantWeb)
			}
			if got := srv.Store.Sum(api, time.Minute); got != wantAPI {
				t.Errorf("scaler holds %d requests of api.shop, want %d", got, wantAPI)
			}
			e := kedaclient.Poll(ctx, pb.NewExternalScalerClient(conn), ref)
			if e.Kind != "poll" || !e.Active || e.Rate != float64(wantWeb)/60 || e.Target != 10 {
				t.Errorf("KEDA's poll = %+v, want active, rate %v (%d over the 1m window), target 10", e, float64(wantWeb)/60, wantWeb)
			}
			select {
			case e := <-events:
				t.Errorf("KEDA client got %+v after the first true; want nothing (the target stayed active)", e)
			default:
			}
		})
	}
}
