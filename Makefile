# podcap. `make help` lists the targets. The test bed needs root on Linux (Debian 12 verified):
# `make test` installs Debian packages, builds a Kubernetes node from the Go module proxy into
# .cache/ (about 17 min cold on an idle 2-core machine, seconds when cached) and runs every
# test against it.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Go from the official tarball if it is not on PATH
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
# The build's identity (agent/version): `podcap-agent version`, `kubectl podcap version`, the
# agent's start log, podcap_build_info, pcapng files, the image's OCI labels. Override any of
# them: make build VERSION=v0.1.0
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
# evaluated once: every binary of one make run carries the same values
VERSION := $(VERSION)
COMMIT := $(COMMIT)
BUILD_DATE := $(BUILD_DATE)
VERSION_PKG := github.com/podcap/podcap/agent/version
LDFLAGS = -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Commit=$(COMMIT) -X $(VERSION_PKG).BuildDate=$(BUILD_DATE)
# The agent image, one name everywhere (deploy/, the Helm chart, the test bed's :dev build):
# $(REGISTRY)/$(IMAGE):$(TAG). podcap publishes no image yet: push to your registry,
#   make image push REGISTRY=registry.example.com/platform
# DOCKER=podman works too.
REGISTRY ?= ghcr.io/podcap
IMAGE ?= podcap-agent
TAG ?= $(VERSION)
IMAGE_REF = $(REGISTRY)/$(IMAGE):$(TAG)
DOCKER ?= docker
CLUSTER := test/cluster/cluster.sh
KIND := test/kind/kind.sh

.PHONY: help build plugin test unit-test demo bench policy-test monitoring-test helm-test image push image-ref tag cluster-setup deploy e2e-test cleanup e2e clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## bin/podcap-agent, static (CGO_ENABLED=0)
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/podcap-agent ./cmd/podcap-agent

plugin: ## bin/kubectl-podcap, the kubectl plugin (put it on PATH: `kubectl podcap ...`)
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/kubectl-podcap ./cmd/kubectl-podcap

test: ## as root: packages + cluster binaries (cached), go vet, every test incl. the real-cluster ones
	@if [ "$$(id -u)" != 0 ]; then echo "make test needs root: it installs Debian packages and runs a Kubernetes node (sudo make test; 'make unit-test' runs without)" >&2; exit 1; fi
	@echo "== test bed: Debian packages + cluster binaries and images (cached in .cache/)"
	$(CLUSTER) build
	@echo "== go vet"
	$(GO) vet ./...
	@echo "== promtool: deploy/monitoring's rules and their tests"
	$(MAKE) --no-print-directory monitoring-test
	@echo "== helm lint and helm template: deploy/helm/podcap"
	$(MAKE) --no-print-directory helm-test
	@echo "== go test (test/integration brings up test/cluster instance 'test' once and tears it down)"
	$(GO) test -count=1 -timeout 45m ./...

unit-test: ## every test that needs no root (the integration tests skip)
	$(GO) vet ./...
	$(GO) test -count=1 ./...

demo: ## as root: podcap end to end on a local cluster (test/demo.sh; outputs/)
	test/demo.sh

bench: ## as root: capture, latency, policy, alert and live-stream benchmarks (test/bench/bench.sh)
	@if [ ! -x test/bench/bench.sh ]; then echo "make bench: test/bench/bench.sh does not exist yet" >&2; exit 1; fi
	test/bench/bench.sh

policy-test: ## the Rego tests of rules/ (*_test.rego) through OPA's tester, strict Rego v1
	$(GO) test -count=1 -run 'TestRules|TestKustomization' -v ./policy/

helm-test: ## helm lint + template of deploy/helm/podcap (Helm built into .cache by `test/cluster/cluster.sh build`)
	test/helm/lint.sh

monitoring-test: ## promtool check + test of deploy/monitoring's alerts (Debian's prometheus; installed as root if missing)
	test/monitoring/promtool.sh

image: ## $(DOCKER) build -t $(REGISTRY)/$(IMAGE):$(TAG) . (VERSION, COMMIT, BUILD_DATE as build args: .dockerignore drops .git)
	$(DOCKER) build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) --build-arg BUILD_DATE=$(BUILD_DATE) -t $(IMAGE_REF) .

push: ## $(DOCKER) push the image built by `make image`, then print its reference by digest
	$(DOCKER) push $(IMAGE_REF)
	@ref=$$($(DOCKER) image inspect --format '{{index .RepoDigests 0}}' $(IMAGE_REF)) && \
	  echo "pushed $(IMAGE_REF) = $$ref (helm: --set image.digest=$${ref##*@})"

image-ref: ## print $(REGISTRY)/$(IMAGE):$(TAG), the image `make image` builds
	@echo $(IMAGE_REF)

tag: ## print $(TAG), the image tag `make image` builds (helm: --set image.tag=$$(make -s tag))
	@echo $(TAG)

cluster-setup: ## Docker + kind: create the kind cluster
	$(KIND) setup

deploy: ## Docker + kind: build, load and deploy the agent
	$(KIND) deploy

e2e-test: ## Docker + kind: capture a test pod end to end
	$(KIND) e2e-test

cleanup: ## Docker + kind: delete the kind cluster
	$(KIND) cleanup

e2e: ## Docker + kind: cluster-setup, deploy, e2e-test, then cleanup (also on failure)
	@rc=0; $(MAKE) cluster-setup deploy e2e-test || rc=$$?; $(MAKE) cleanup || true; exit $$rc

clean: ## remove bin/ and outputs/ (the build cache .cache/ stays: rm -rf .cache to rebuild all)
	rm -rf bin outputs
