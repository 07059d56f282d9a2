// Package scaler is reqcount-scaler: the KEDA external-push scaler fed by the
// reqcount filter.
//
// The filter, inside Envoy, reports RequestCount messages ({"count", "svc",
// "namespace"}) to an upstream cluster: a wake-up at once for the first request
// of an idle service, then the counts once per flush_interval. reqcount-scaler
// is that cluster. It takes the messages on the operator's endpoint
// (POST /informer/incoming-request, package ingest), keeps per-service counts in
// one-second buckets (package store), and serves them to KEDA as an
// externalscaler.ExternalScaler over gRPC (package external): StreamIsActive
// pushes true the moment a service that was inactive is reported, GetMetrics
// answers its request rate over a window. The command is cmd/reqcount-scaler;
// package kedaclient is a small client that watches a target the way KEDA does.
package scaler
