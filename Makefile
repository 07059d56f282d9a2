# One command per job. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
WASM      := build/filter.wasm
SDKABI    := filter/_sdkabi/build.sh
FUZZTIME  ?= 30s
SEED      ?= 1
DURATION  ?= 10m
KEDA      ?= localhost:9090
SCALER_ARCH ?= amd64
# Go sources that go into the module (any change rebuilds it).
FILTER_SRC := $(shell find filter messages -name '*.go' -not -name '*_test.go') filter/_sdkabi/build.sh go.mod go.sum

.PHONY: help build build-tinygo test vet fuzz soak run run-keda run-envoy bench clean oci push dashboard scaler-image

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

build: $(WASM) ## build build/filter.wasm with upstream Go (GOOS=wasip1, c-shared)

$(WASM): $(FILTER_SRC)
	$(SDKABI) -o $@ -tags proxywasm_lean ./filter

build-tinygo: ## build build/filter-tinygo.wasm with TinyGo (not tested here: TinyGo is not installable)
	tinygo build -o build/filter-tinygo.wasm -scheduler=none -target=wasi ./filter

test: vet build ## vet, build the module, run every test (unit, fuzz seeds, e2e on the compiled module)
	$(GO) test -count=1 ./...
	cd messages && $(GO) test -count=1 ./...
	cd scaler && $(GO) test -count=1 ./...

vet: ## gofmt and go vet, every module
	@out="$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go'))"; \
	  if [[ -n "$$out" ]]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd messages && $(GO) vet ./...
	cd scaler && $(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./filter/...

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	cd messages && $(GO) test -run='^$$' -fuzz='^FuzzAppendJSON$$' -fuzztime=$(FUZZTIME) .
	cd messages && $(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) .
	$(GO) test -run='^$$' -fuzz='^FuzzAppendAuthority$$' -fuzztime=$(FUZZTIME) ./filter/key
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./filter/config
	$(GO) test -run='^$$' -fuzz='^FuzzParseMatchesEncodingJSON$$' -fuzztime=$(FUZZTIME) ./filter/config

soak: build ## run the e2e simulation TestSimAggregate on seeds SEED, SEED+1, … (default 1) until DURATION (default 10m) is spent; stops at the first failing seed
	REQCOUNT_SIM_SEEDS='$(SEED)' REQCOUNT_SIM_DURATION='$(DURATION)' $(GO) test -count=1 -timeout 0 -run 'TestSimAggregate' ./e2e/

run: build ## serve localhost:10000 through the compiled filter; flushes print as JSON lines (CONFIG=<json or file>, RUNFLAGS=-h for options)
	$(GO) build -o build/reqcount-run ./e2e/cmd/reqcount-run
	build/reqcount-run -wasm $(WASM) $(if $(CONFIG),-config '$(CONFIG)') $(RUNFLAGS)

run-keda: build ## make run with reqcount-scaler, KEDA's external-push scaler, as the filter's cluster (gRPC on localhost:9090, KEDA=<addr> for another); a KEDA-like client prints what KEDA sees
	$(GO) build -o build/reqcount-run ./e2e/cmd/reqcount-run
	build/reqcount-run -wasm $(WASM) -keda '$(KEDA)' $(if $(CONFIG),-config '$(CONFIG)') $(RUNFLAGS)

run-envoy: build ## the same with a real Envoy (>= 1.33) on PATH
	envoy/run-envoy.sh

bench: ## benchmark the filter against floor plugins (about 4½ minutes); rewrites bench/RESULTS.md
	@echo "make bench: about 4½ minutes on 2 cores; rewrites bench/RESULTS.md (everything above its Notes)"
	$(GO) run ./bench/cmd/reqcount-bench

oci: build ## pack build/filter.wasm as Istio's OCI image: build/oci/ (OCI layout), build/reqcount.oci.tar; prints the digests
	$(GO) run ./envoy/oci/cmd/reqcount-oci -wasm $(WASM) -layout build/oci -tar build/reqcount.oci.tar

# make push refuses before building anything when IMAGE is not given.
ifneq ($(filter push,$(MAKECMDGOALS)),)
ifeq ($(strip $(IMAGE)),)
$(error make push needs IMAGE=<registry>/<repository>:<tag>, e.g. make push IMAGE=ghcr.io/you/reqcount:v0.1.0 (credentials: docker login))
endif
endif

push: build ## push the image of `make oci` to IMAGE=<registry>/<repository>:<tag> (docker login credentials)
	$(GO) run ./envoy/oci/cmd/reqcount-oci -wasm $(WASM) -layout build/oci -tar build/reqcount.oci.tar -push '$(IMAGE)'

dashboard: ## regenerate the Grafana dashboard envoy/grafana/reqcount.json from its generator (envoy/grafana)
	$(GO) run ./envoy/grafana/cmd/reqcount-dashboard -o envoy/grafana/reqcount.json

scaler-image: ## build reqcount-scaler (static, linux/amd64; SCALER_ARCH=arm64) as a container image: build/scaler-oci, build/reqcount-scaler.oci.tar; IMAGE=<registry>/<repository>:<tag> also pushes it
	cd scaler && CGO_ENABLED=0 GOOS=linux GOARCH=$(SCALER_ARCH) $(GO) build -trimpath -ldflags='-s -w' -o ../build/reqcount-scaler ./cmd/reqcount-scaler
	$(GO) run ./envoy/oci/cmd/reqcount-oci -server build/reqcount-scaler -ports 8080/tcp,9090/tcp -tag reqcount-scaler:dev \
	  -layout build/scaler-oci -tar build/reqcount-scaler.oci.tar $(if $(IMAGE),-push '$(IMAGE)')

clean: ## remove build outputs
	rm -rf build
