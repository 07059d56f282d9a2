package main

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/reqcount/reqcount/e2e/collector"
	"github.com/reqcount/reqcount/e2e/wasmhost"
	"github.com/reqcount/reqcount/messages"
)

// Wake-up latency (issue 7): how long the first request of an idle key takes
// to reach the operator.
const (
	// wakeupInterval is the flush_interval of the measurement: long enough
	// that no regular report of the key can stand in for its wake-up.
	wakeupInterval = 10 * time.Second
	// wakeupWarmup wake-ups run untimed first (the first loopback connection,
	// the first calls through a fresh code path).
	wakeupWarmup = 20
	// wakeupWait is how long one wake-up may take before the measurement
	// gives up: a filter that only reports on ticks would need up to
	// wakeupInterval per sample.
	wakeupWait = time.Second
)

// wakeups is the wake-up latency measured on the e2e host: the filter
// (key_source authority, flush_interval wakeupInterval, wake_after its
// default) on one worker with real-time ticks, its calls made by the host's
// default dispatcher over loopback HTTP to the e2e collector, which serves
// the operator's contract. Each sample is the first request of a key the
// worker has never seen, timed from just before Worker.Request hands it to
// the worker to the moment the collector accepts the key's message (when it
// writes the message to its Options.Out, after decoding and validating it,
// before its answer goes back).
type wakeups struct {
	latencies []time.Duration
	// stopped says why the measurement ended early, or "".
	stopped string
	// messages is what the collector accepted over the whole run (warm-up
	// included): one per wake-up when nothing else was sent.
	messages int
}

// receipt is one message the collector accepted, with when.
type receipt struct {
	at   time.Time
	line []byte
}

// receiptWriter is the collector's Out: the collector writes one JSON line
// per accepted message, and the time of that write is its receipt.
type receiptWriter chan receipt

func (r receiptWriter) Write(p []byte) (int, error) {
	at := time.Now()
	for _, line := range bytes.Split(bytes.TrimSpace(p), []byte("\n")) {
		r <- receipt{at: at, line: bytes.Clone(line)}
	}
	return len(p), nil
}

func runWakeups(ctx context.Context, o options, mod *wasmhost.Module) (*wakeups, error) {
	out := make(receiptWriter, 1024)
	col := collector.New(collector.Options{Out: out})
	if err := col.Start("127.0.0.1:0"); err != nil {
		return nil, err
	}
	defer col.Close()
	h, err := wasmhost.New(ctx, mod, wasmhost.Config{
		PluginConfig: fmt.Appendf(nil, `{"cluster":%q,"flush_interval":%q}`, cluster, wakeupInterval),
		Clusters:     map[string]string{cluster: col.Addr()},
		LogLevel:     wasmhost.LevelInfo,
	})
	if err != nil {
		return nil, fmt.Errorf("wake-up: %w", err)
	}
	defer h.Close(ctx)
	w := h.Worker(0)
	res := &wakeups{}
	for i := 0; i < wakeupWarmup+o.wakeups; i++ {
		svc := fmt.Sprintf("wake-%05d", i)
		hs := append([][2]string(nil), benchRequest.Headers...)
		hs[0][1] = svc + ".bench.svc.cluster.local:8080"
		start := time.Now()
		if _, err := w.Request(ctx, wasmhost.Request{Headers: hs}); err != nil {
			return nil, fmt.Errorf("wake-up: %w", err)
		}
		at, ok := awaitMessage(out, svc, start.Add(wakeupWait))
		if !ok {
			res.stopped = fmt.Sprintf("wake-up %d: no message for %s.bench within %v of its first request (flush_interval %v): the filter did not wake up", i, svc, wakeupWait, wakeupInterval)
			break
		}
		if i >= wakeupWarmup {
			res.latencies = append(res.latencies, at.Sub(start))
		}
	}
	if err := w.Crashed(); err != nil {
		return nil, fmt.Errorf("wake-up: %w", err)
	}
	res.messages = col.Stats().Messages
	return res, nil
}

// awaitMessage waits until the collector has accepted a message for svc (in
// namespace "bench"), skipping others, and returns when; ok is false if the
// deadline passed first.
func awaitMessage(out receiptWriter, svc string, deadline time.Time) (time.Time, bool) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		select {
		case r := <-out:
			ms, err := messages.Decode(r.line)
			if err == nil && len(ms) == 1 && ms[0].Svc == svc && ms[0].Namespace == "bench" {
				return r.at, true
			}
		case <-timer.C:
			return time.Time{}, false
		}
	}
}
