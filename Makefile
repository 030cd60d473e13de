# Meltemi. `make demo` and `make test` work on a fresh machine: they install what they need.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
export MELTEMI_CACHE ?= $(HOME)/.cache/meltemi
export PATH := $(MELTEMI_CACHE)/bin:$(PATH)

# The one list of plugins: every registries/<kind>/cmd/meltemi-registry-<kind> package is built
# beside the host, and all but the synthetic test plugin ship in the image (the Dockerfile takes
# this list; it has none of its own).
PLUGINS := $(sort $(patsubst %/,./%,$(dir $(wildcard registries/*/cmd/meltemi-registry-*/main.go))))
IMAGE_PLUGINS := $(filter-out %-synthetic,$(PLUGINS))
TOOLS := ./e2e/cmd/dubbo-seed

.PHONY: all build test conformance demo demo-down bench generate lint fmt clean tools image helm-lint

all: build

## build: the host, its plugins and the demo tools into bin/
build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/meltemi $(PLUGINS) $(TOOLS)

## image: the container image with the host and its plugins (IMAGE=...; needs a Docker engine)
IMAGE ?= ghcr.io/meltemi-mesh/meltemi:$(VERSION)
image:
	@docker info >/dev/null 2>&1 || { echo "make image: no Docker engine answers (docker info failed); start one, or build the Dockerfile with another OCI builder" >&2; exit 1; }
	docker build --build-arg VERSION=$(VERSION) --build-arg PLUGINS="$(IMAGE_PLUGINS)" -t $(IMAGE) .

## helm-lint: lint the chart with helm built from the Go module proxy (cached)
helm-lint:
	e2e/infra/tools.sh helm
	"$$(e2e/infra/tools.sh path helm)" lint --strict charts/meltemi

## tools: install the Debian packages the tests and demo need
tools:
	e2e/infra/tools.sh apt

## test: unit tests plus e2e tests against real kube-apiserver, etcd, istiod, ZooKeeper, Consul and Polaris
test: tools build
	e2e/test.sh

## conformance: the conformance suite against each supported Istio version (current, previous)
conformance: tools build
	e2e/conformance.sh

## demo: local ZooKeeper + kube-apiserver, seeded Dubbo providers, meltemi, ServiceEntries listed
demo: tools build
	e2e/demo.sh

## demo-down: stop everything the demo started
demo-down:
	e2e/demo-down.sh

## bench: run the benchmarks and write BENCHMARKS.md
bench: tools build
	e2e/bench.sh

## generate: regenerate the plugin protocol's Go code from its .proto
generate:
	GOBIN=$(MELTEMI_CACHE)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	GOBIN=$(MELTEMI_CACHE)/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
	command -v protoc >/dev/null || (apt-get update -qq && apt-get install -y -qq protobuf-compiler)
	protoc -I plugins/proto --go_out=plugins/proto --go_opt=paths=source_relative \
		--go-grpc_out=plugins/proto --go-grpc_opt=paths=source_relative registry/v1/registry.proto

## lint: gofmt, go vet and staticcheck
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
