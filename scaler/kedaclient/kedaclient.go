// Package kedaclient watches an external-push scaler the way KEDA does, with
// KEDA's own generated client: one StreamIsActive stream per trigger, reopened
// after 2 s (doubling to a minute) when it ends, and, every pollingInterval,
// GetMetricSpec, GetMetrics and IsActive, as KEDA's scale loop and the HPA's
// metrics adapter call them. It is what make run-keda prints from, what the
// tests and the benchmark measure with, and a way to check a deployed scaler
// from a laptop.
package kedaclient

import (
	"context"
	"errors"
	"io"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Event is one thing KEDA would have seen.
type Event struct {
	// At is when it was received.
	At time.Time
	// Kind is "stream" (an IsActiveResponse pushed on the stream), "poll" (the
	// answers of one pollingInterval) or "error".
	Kind string
	// Active is the pushed or polled state.
	Active bool
	// Rate is GetMetrics's value (poll only); Target is GetMetricSpec's
	// target (poll only).
	Rate, Target float64
	// Err is the failure (error only).
	Err error
}

// Options configures Watch.
type Options struct {
	// PollingInterval is KEDA's pollingInterval; 0: no polling, the stream
	// only. KEDA's default is 30s.
	PollingInterval time.Duration
	// RetryMin is the first wait before a stream is reopened: KEDA's is 2s.
	// Default 2s.
	RetryMin time.Duration
}

// Dial connects to a scaler at addr (host:port) without TLS.
func Dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// Watch calls fn with every event for ref until ctx ends. fn is called from
// two goroutines (the stream's and the poller's), never at once.
func Watch(ctx context.Context, conn grpc.ClientConnInterface, ref *pb.ScaledObjectRef, opts Options, fn func(Event)) {
	if opts.RetryMin <= 0 {
		opts.RetryMin = 2 * time.Second
	}
	c := pb.NewExternalScalerClient(conn)
	events := make(chan Event)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range events {
			fn(e)
		}
	}()
	send := func(e Event) bool {
		select {
		case events <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		if opts.PollingInterval > 0 {
			poll(ctx, c, ref, opts.PollingInterval, send)
		}
	}()
	stream(ctx, c, ref, opts.RetryMin, send)
	<-pollDone
	close(events)
	<-done
}

// stream runs StreamIsActive as KEDA's runStreamIsActive does.
func stream(ctx context.Context, c pb.ExternalScalerClient, ref *pb.ScaledObjectRef, retryMin time.Duration, send func(Event) bool) {
	retry := retryMin
	for {
		err := streamOnce(ctx, c, ref, send)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, io.EOF) {
			retry = retryMin
		}
		if !send(Event{At: time.Now(), Kind: "error", Err: err}) {
			return
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		retry = min(2*retry, time.Minute)
	}
}

func streamOnce(ctx context.Context, c pb.ExternalScalerClient, ref *pb.ScaledObjectRef, send func(Event) bool) error {
	s, err := c.StreamIsActive(ctx, ref)
	if err != nil {
		return err
	}
	for {
		r, err := s.Recv()
		if err != nil {
			return err
		}
		if !send(Event{At: time.Now(), Kind: "stream", Active: r.GetResult()}) {
			return ctx.Err()
		}
	}
}

// poll calls what KEDA calls every pollingInterval.
func poll(ctx context.Context, c pb.ExternalScalerClient, ref *pb.ScaledObjectRef, every time.Duration, send func(Event) bool) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		e := Poll(ctx, c, ref)
		if ctx.Err() != nil || !send(e) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll makes one round of KEDA's pull calls: GetMetricSpec, then GetMetrics
// for the metric it names, then IsActive. A failure is an "error" event.
func Poll(ctx context.Context, c pb.ExternalScalerClient, ref *pb.ScaledObjectRef) Event {
	fail := func(err error) Event { return Event{At: time.Now(), Kind: "error", Err: err} }
	spec, err := c.GetMetricSpec(ctx, ref)
	if err != nil {
		return fail(err)
	}
	if len(spec.GetMetricSpecs()) != 1 {
		return fail(errors.New("kedaclient: GetMetricSpec answered other than one metric"))
	}
	ms := spec.GetMetricSpecs()[0]
	m, err := c.GetMetrics(ctx, &pb.GetMetricsRequest{ScaledObjectRef: ref, MetricName: ms.GetMetricName()})
	if err != nil {
		return fail(err)
	}
	a, err := c.IsActive(ctx, ref)
	if err != nil {
		return fail(err)
	}
	e := Event{At: time.Now(), Kind: "poll", Active: a.GetResult(), Target: ms.GetTargetSizeFloat()}
	for _, v := range m.GetMetricValues() {
		e.Rate += v.GetMetricValueFloat()
	}
	return e
}
