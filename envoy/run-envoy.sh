#!/usr/bin/env bash
# make run-envoy: the filter in a real Envoy, with the collector standing in for the operator.
#
#   collector  127.0.0.1:8013   the operator's endpoint; prints each message it accepts as a JSON line
#   backend    127.0.0.1:8080   answers 200 "ok" to anything (served by the same collector program)
#   envoy      :10000 -> backend, admin 127.0.0.1:9901, config envoy/envoy.yaml (or $ENVOY_CONFIG)
#
# Then: curl -H 'Host: web.shop' http://127.0.0.1:10000/   and watch {"count":1,"svc":"web","namespace":"shop"}.
# Ctrl-C stops all three. Extra collector flags (e.g. -batch for a batch-mode config): $COLLECTOR_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."

config=${ENVOY_CONFIG:-envoy/envoy.yaml}

# Envoy itself, or func-e (which downloads and runs a chosen Envoy version) if only that is installed.
if command -v envoy >/dev/null 2>&1; then
	envoy=(envoy)
elif command -v func-e >/dev/null 2>&1; then
	envoy=(func-e run)
else
	cat >&2 <<'EOF'
envoy is not on PATH. Install Envoy 1.33 or newer (modules built by upstream Go need the WASI imports
Envoy added in 1.33), for example:
  - func-e (https://func-e.io): install it, then `func-e use 1.33.2`; this script runs `func-e run`
    when there is no envoy on PATH.
  - Docker, from the repository root:
      docker run --rm --network host -v "$PWD:/repo" -w /repo envoyproxy/envoy:v1.33-latest -c envoy/envoy.yaml
    (with the collector started separately: go run ./e2e/collector/cmd/collector -backend 127.0.0.1:8080)
  - Linux packages and other options: https://www.envoyproxy.io/docs/envoy/latest/start/install
EOF
	exit 1
fi

version=$("${envoy[@]}" --version 2>&1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1 || true)
major=${version%%.*}
minor=${version#*.}
minor=${minor%%.*}
if [[ -z $version ]] || ((major < 1 || (major == 1 && minor < 33))); then
	echo "envoy ${version:-of unknown version} is too old: the filter needs Envoy >= 1.33" >&2
	exit 1
fi

if [[ ! -f build/filter.wasm ]]; then
	echo "build/filter.wasm is missing: run make build" >&2
	exit 1
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A built binary rather than `go run`, so that the pid killed on exit is the collector itself.
go build -o "$tmp/collector" ./e2e/collector/cmd/collector
# shellcheck disable=SC2086 # COLLECTOR_FLAGS is a list of flags
"$tmp/collector" -addr 127.0.0.1:8013 -backend 127.0.0.1:8080 ${COLLECTOR_FLAGS:-} &
pids+=($!)

# Envoy runs from the repository root: the module path in the configs (build/filter.wasm) is relative.
# A random --base-id keeps it clear of any other Envoy's shared memory on this machine.
"${envoy[@]}" -c "$config" --base-id $((RANDOM + 1)) --log-level warning &
pids+=($!)

echo "envoy $version with $config; try: curl -H 'Host: web.shop' http://127.0.0.1:10000/" >&2
# Until either one exits (a port already taken, a config Envoy refuses) or Ctrl-C.
wait -n
