// Package external serves a store to KEDA as an external-push scaler: KEDA's
// own generated externalscaler.ExternalScaler service.
//
//   - StreamIsActive sends the target's state when the stream opens, then true
//     the moment a count arrives for a target that was inactive, and false once
//     nothing arrived for the window. KEDA scales a ScaledObject from zero on
//     its true without waiting for its pollingInterval.
//   - IsActive answers the same state on demand.
//   - GetMetricSpec announces one metric, reqcount-<namespace>-<service>, with
//     targetRequestsPerSecond as its target; GetMetrics answers the rate.
//   - StreamMetricSpec answers Unimplemented: the specs change only with the
//     ScaledObject, and KEDA then falls back to GetMetricSpec.
//
// See the Field constants for the scalerMetadata a trigger sets.
package external

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/reqcount/reqcount/scaler/store"
)

// DefaultMaxStreams is Options.MaxStreams's default.
const DefaultMaxStreams = 1000

// Options configures a Scaler.
type Options struct {
	// MaxStreams bounds the open StreamIsActive streams (KEDA opens one per
	// ScaledObject trigger); one more is refused with ResourceExhausted.
	// Default DefaultMaxStreams.
	MaxStreams int
	// Registerer, if set, gets the scaler's metrics.
	Registerer prometheus.Registerer
}

// Scaler implements externalscaler.ExternalScaler over a store. Create one
// with New, register it with pb.RegisterExternalScalerServer, and Close it
// before stopping the gRPC server: Close ends the open streams, which
// GracefulStop would otherwise wait for forever.
type Scaler struct {
	pb.UnimplementedExternalScalerServer

	st         *store.Store
	maxStreams int64
	streams    atomic.Int64
	done       chan struct{}
	closeOnce  sync.Once

	invalidTotal *prometheus.CounterVec // by method and field
	refusedTotal prometheus.Counter
	pushesTotal  *prometheus.CounterVec // by state sent
	callsTotal   *prometheus.CounterVec // by method and gRPC code
}

// New returns a Scaler serving st.
func New(st *store.Store, opts Options) *Scaler {
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	s := &Scaler{
		st:         st,
		maxStreams: int64(opts.MaxStreams),
		done:       make(chan struct{}),
		invalidTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reqcount_scaler_grpc_invalid_metadata_total",
			Help: "KEDA calls refused with InvalidArgument, by method and the scalerMetadata field at fault (\"unknown\" for a field the scaler does not read).",
		}, []string{"method", "field"}),
		refusedTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "reqcount_scaler_grpc_streams_refused_total",
			Help: "StreamIsActive streams refused with ResourceExhausted because -max-streams were open.",
		}),
		pushesTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reqcount_scaler_grpc_stream_pushes_total",
			Help: "IsActiveResponse messages sent on StreamIsActive streams, by the state sent.",
		}, []string{"active"}),
		callsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "reqcount_scaler_grpc_calls_total",
			Help: "KEDA calls answered, by method and gRPC status code (streams count when they end).",
		}, []string{"method", "code"}),
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(s.invalidTotal, s.refusedTotal, s.pushesTotal, s.callsTotal,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "reqcount_scaler_grpc_streams",
				Help: "StreamIsActive streams open now.",
			}, func() float64 { return float64(s.streams.Load()) }))
	}
	return s
}

// Close ends every open stream (each returns, so KEDA sees the stream end and
// reopens it, on another replica if this one is going away) and refuses new
// ones with Unavailable.
func (s *Scaler) Close() { s.closeOnce.Do(func() { close(s.done) }) }

// Streams returns the number of open StreamIsActive streams.
func (s *Scaler) Streams() int { return int(s.streams.Load()) }

// target parses ref for method, counting a refusal.
func (s *Scaler) target(method string, ref *pb.ScaledObjectRef) (Target, error) {
	t, err := parseRef(ref, s.st)
	if err != nil {
		field := "unknown"
		var fe *fieldError
		if errors.As(err, &fe) && (fe.field == "scaledObjectRef" || slices.Contains(ourFields, fe.field)) {
			field = fe.field
		}
		s.invalidTotal.WithLabelValues(method, field).Inc()
	}
	return t, err
}

// answered counts a call's outcome.
func (s *Scaler) answered(method string, err error) {
	s.callsTotal.WithLabelValues(method, status.Code(err).String()).Inc()
}

// IsActive reports whether the target was reported within its window.
func (s *Scaler) IsActive(_ context.Context, ref *pb.ScaledObjectRef) (res *pb.IsActiveResponse, err error) {
	defer func() { s.answered("IsActive", err) }()
	t, err := s.target("IsActive", ref)
	if err != nil {
		return nil, err
	}
	active, _ := s.st.Active(t.Key, t.Window)
	return &pb.IsActiveResponse{Result: active}, nil
}

// StreamIsActive sends the target's state at once, then every change: true
// the moment a count arrives while it was inactive, false when its window
// passes with none.
func (s *Scaler) StreamIsActive(ref *pb.ScaledObjectRef, stream grpc.ServerStreamingServer[pb.IsActiveResponse]) (err error) {
	defer func() { s.answered("StreamIsActive", err) }()
	t, err := s.target("StreamIsActive", ref)
	if err != nil {
		return err
	}
	select {
	case <-s.done:
		return status.Error(codes.Unavailable, "reqcount-scaler is shutting down")
	default:
	}
	if s.streams.Add(1) > s.maxStreams {
		s.streams.Add(-1)
		s.refusedTotal.Inc()
		return status.Errorf(codes.ResourceExhausted, "%d streams open, the scaler's -max-streams", s.maxStreams)
	}
	defer s.streams.Add(-1)

	// Subscribe before reading the state: a count that arrives in between
	// is then a signal, not lost.
	sub := s.st.Subscribe(t.Key)
	defer sub.Close()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	sent := false
	var last bool
	ctx := stream.Context()
	for {
		active, left := s.st.Active(t.Key, t.Window)
		if !sent || active != last {
			if err := stream.Send(&pb.IsActiveResponse{Result: active}); err != nil {
				return err
			}
			s.pushesTotal.WithLabelValues(strconv.FormatBool(active)).Inc()
			sent, last = true, active
		}
		// Wake when the state would turn false; a count resets that.
		if active {
			timer.Reset(left)
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.done:
			return nil
		case <-sub.C():
		case <-timer.C:
		}
	}
}

// GetMetricSpec announces the target's one metric and its per-replica target.
func (s *Scaler) GetMetricSpec(_ context.Context, ref *pb.ScaledObjectRef) (res *pb.GetMetricSpecResponse, err error) {
	defer func() { s.answered("GetMetricSpec", err) }()
	t, err := s.target("GetMetricSpec", ref)
	if err != nil {
		return nil, err
	}
	return &pb.GetMetricSpecResponse{MetricSpecs: []*pb.MetricSpec{{
		MetricName:      t.MetricName(),
		TargetSizeFloat: t.RequestsPerSecond,
	}}}, nil
}

// GetMetrics answers the target's requests per second over its window.
func (s *Scaler) GetMetrics(_ context.Context, req *pb.GetMetricsRequest) (res *pb.GetMetricsResponse, err error) {
	defer func() { s.answered("GetMetrics", err) }()
	t, err := s.target("GetMetrics", req.GetScaledObjectRef())
	if err != nil {
		return nil, err
	}
	if name := req.GetMetricName(); name != t.MetricName() {
		s.invalidTotal.WithLabelValues("GetMetrics", "metricName").Inc()
		return nil, status.Errorf(codes.InvalidArgument, "metricName: %q is not this trigger's metric %q", name, t.MetricName())
	}
	return &pb.GetMetricsResponse{MetricValues: []*pb.MetricValue{{
		MetricName:       t.MetricName(),
		MetricValueFloat: s.st.Rate(t.Key, t.Window),
	}}}, nil
}
