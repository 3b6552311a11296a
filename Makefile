# sentinel-proxy: developer and CI entry points (`make help`).
#
# Needs Go (see go.mod) on PATH. Everything else (Redis, Sentinel, HAProxy,
# twemproxy, PHP, python3-redis) is installed by `make deps` on Debian/Ubuntu
# when something is missing.
#
# Installing redis-server with apt may start a system Redis on 6379 where
# systemd runs; nothing here uses fixed ports, so it does not matter.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO ?= go
GOPATH1 := $(firstword $(subst :, ,$(shell $(GO) env GOPATH 2>/dev/null)) $(HOME)/go)
GOBIN := $(or $(shell $(GO) env GOBIN 2>/dev/null),$(GOPATH1)/bin)
# Tools installed with `go install`, and haproxy / nutcracker in sbin.
export PATH := $(GOBIN):$(PATH):/usr/local/sbin:/usr/sbin:/sbin

# staticcheck 2026.2.2, built for and working with Go 1.26.
STATICCHECK_VERSION ?= v0.8.2
DEB_PACKAGES := redis-server redis-sentinel redis-tools php-cli php-redis php-predis python3-redis node-redis haproxy nutcracker iproute2 openssl
TEST_TIMEOUT ?= 25m
FUZZTIME ?= 30s
FUZZMINTIME ?= 2s
# make test fuzzes each target (command reader, reply framer, sentinel
# events, config file, cluster parsers) for a count of inputs, on top of
# replaying the committed corpus. A count, not a duration: Go 1.26's fuzz
# coordinator can fail a target with a bare "context deadline exceeded" when
# a -fuzztime duration ends on a loaded machine (go.dev/issue/75804, fixed in
# Go 1.27); a count sets no deadline.
FUZZTIME_CI ?= 20000x
FUZZMINTIME_CI ?= 200x
DEMO_ARGS ?=

.PHONY: help build deps check-go test lint vet fmt-check staticcheck demo bench fuzz clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: check-go ## build bin/sentinel-proxy
	$(GO) build -o bin/sentinel-proxy ./cmd/sentinel-proxy

check-go:
	@command -v $(GO) >/dev/null 2>&1 || { \
		echo "go not found on PATH: install Go $$(sed -n 's/^go //p' go.mod) or newer and put its bin directory (e.g. /usr/local/go/bin) on PATH" >&2; \
		exit 1; }
	@echo "using $$($(GO) version)"

deps: check-go ## install the Debian/Ubuntu packages the tests, demo and bench need, if any is missing
	@have() { command -v "$$1" >/dev/null 2>&1; }; \
	missing=""; \
	for b in redis-server redis-sentinel redis-cli redis-benchmark php haproxy nutcracker ip; do \
		have "$$b" || missing="$$missing $$b"; \
	done; \
	if have php && ! php -m 2>/dev/null | grep -qix redis; then missing="$$missing php-redis"; fi; \
	[ -f /usr/share/php/Predis/Autoloader.php ] || missing="$$missing php-predis"; \
	[ -d /usr/share/nodejs/redis ] || missing="$$missing node-redis"; \
	if ! /usr/bin/python3 -c 'import redis' >/dev/null 2>&1; then missing="$$missing python3-redis"; fi; \
	if [ -z "$$missing" ]; then echo "deps: everything is installed"; exit 0; fi; \
	echo "deps: missing:$$missing"; \
	if ! have apt-get; then \
		echo "deps: no apt-get here; install the equivalents of: $(DEB_PACKAGES)" >&2; exit 1; \
	fi; \
	sudo=""; \
	if [ "$$(id -u)" != 0 ]; then \
		if have sudo; then sudo=sudo; else \
			echo "deps: not root and no sudo; as root run: apt-get update && apt-get install -y $(DEB_PACKAGES)" >&2; exit 1; \
		fi; \
	fi; \
	echo "deps: installing $(DEB_PACKAGES)"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y $(DEB_PACKAGES)

test: deps lint ## vet, gofmt, staticcheck, every test with -race, then each fuzz target for FUZZTIME_CI
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME_CI) FUZZMINTIME=$(FUZZMINTIME_CI)

lint: vet fmt-check staticcheck ## go vet, gofmt check, staticcheck

vet: check-go
	$(GO) vet ./...

fmt-check: check-go
	@files=$$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -print0 \
		| xargs -0 -r "$$($(GO) env GOROOT)/bin/gofmt" -l); \
	if [ -n "$$files" ]; then echo "gofmt needed on:" >&2; echo "$$files" >&2; exit 1; fi; \
	echo "gofmt: ok"

staticcheck: check-go
	@sc="$(GOBIN)/staticcheck"; \
	if ! "$$sc" -version 2>/dev/null | grep -qF "($(STATICCHECK_VERSION:v%=%))"; then \
		echo "installing staticcheck $(STATICCHECK_VERSION)"; \
		if ! $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); then \
			echo "WARNING: staticcheck $(STATICCHECK_VERSION) could not be installed; skipping it" >&2; \
			exit 0; \
		fi; \
	fi; \
	echo "$$sc ./..."; \
	"$$sc" ./...

demo: deps build ## one-minute failover demo: local Sentinel topology, proxy, live writes/s (DEMO_ARGS=--keep, --manual or --cluster)
	bin/sentinel-proxy dev $(DEMO_ARGS)

bench: deps ## throughput vs direct/HAProxy/twemproxy and memory per idle client (BENCH_TARGETS=… to choose)
	bench/bench.sh

# make soak runs the randomized fault-injecting reply-order tests, the
# Sentinel one then the cluster one, each for REPLYORDER_DURATION;
# SOAK_TIMEOUT leaves them 15 minutes each to start the topology, settle
# and check. Raise both together (REPLYORDER_DURATION=2h
# SOAK_TIMEOUT=4h30m); REPLYORDER_SEED=… replays a run (SOAK_RUN=Cluster
# runs only TestReplyOrderCluster). `make test` runs both for their
# defaults (60 s and 45 s).
REPLYORDER_DURATION ?= 30m
SOAK_TIMEOUT ?= 90m
SOAK_RUN ?= (Cluster)?

.PHONY: soak
soak: deps ## the randomized reply-order tests (Sentinel, then cluster) under faults for REPLYORDER_DURATION (30m) each
	REPLYORDER_DURATION=$(REPLYORDER_DURATION) $(GO) test -race -count=1 -v -timeout $(SOAK_TIMEOUT) -run '^TestReplyOrder$(SOAK_RUN)$$' ./integration/

.PHONY: bench-failover
bench-failover: deps ## failover as clients see it, sentinel-proxy vs HAProxy (FAILOVER_RUNS=… etc., see the script)
	bench/failover.sh

fuzz: check-go ## run every fuzz target for FUZZTIME (30s) each
	@grep -rl --include='*_test.go' '^func Fuzz' . | xargs -r -n1 dirname | sort -u | while read -r dir; do \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$$dir"/*_test.go | cut -d' ' -f2); do \
			echo "== $$dir $$f for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) "$$dir/" || exit 1; \
		done; \
	done

clean: ## remove build output
	rm -rf bin
