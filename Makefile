# sse-sidecar: build, run, test. Every target installs the Debian packages it needs
# when they are missing (scripts/install-deps.sh: a no-op when present).
#
#   make run            demo SSE app on 127.0.0.1:3000 + sse-sidecar on :8080 in front of it
#   make test           the whole suite, as CI runs it (.ci/run)
#   make lint           rustfmt, clippy, shellcheck, hadolint
#   make check-config   `sse-sidecar check` on every shipped config, `nginx -t` on the nginx example
#   make docker-check   hadolint + the Dockerfile's build and runtime steps without Docker
#   make k8s-validate   examples/kubernetes/ against the Kubernetes schemas
#   make bench          the full benchmark against nginx and HAProxy (~45 min)
#   make bench-smoke    the same workloads, tiny, as in CI
#   make soak           the fault soak: 2,000 streams, churn, resets, app restarts, upgrades
#                       (SOAK_SECS=1800 by default; soak-smoke runs 120 s, as in CI)
#   make fuzz           every fuzz target in tests/fuzz/ for FUZZ_SECS (300) s each (nightly)
#   make fuzz-smoke     the same, 60 s each in CI (CI=true), 15 s each elsewhere
#
# One build profile: everything, tests included, is built with --release. The timing
# tests (events delivered one by one, upstream closed within 100 ms of the client
# leaving) and the bench smoke then see the speed users get, and the dependencies
# (pingora, with zlib-ng built by cmake) are compiled once instead of once per
# profile; clippy runs with --release for the same reason (it shares build scripts
# and proc-macros with the release build).

SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
# CI builds exactly the committed Cargo.lock.
LOCKED := $(if $(CI),--locked,)

BUILD_PKGS := cmake
TEST_PKGS := cmake nginx haproxy curl redis-server
# The browser end-to-end tests (tests/browser/: playwright-core driving Debian's
# Chromium, Node's eventsource; an Express app with compression() for
# tests/learned_routes.rs) need Chromium and their npm packages.
BROWSER_DIR := tests/browser
BROWSER_PKGS ?= $(if $(wildcard $(BROWSER_DIR)/package.json),chromium,)
SHELL_SCRIPTS := .ci/run scripts/install-deps.sh scripts/py-tools.sh scripts/run-demo.sh \
	scripts/suite.sh scripts/check-configs.sh scripts/validate-k8s.sh scripts/docker-mirror.sh \
	scripts/fuzz.sh scripts/promtool.sh

.PHONY: help deps build release-bin run test test-deps lint fmt-check clippy shellcheck \
	hadolint cargo-test check-config k8s-validate docker-check bench bench-smoke soak soak-smoke \
	fuzz fuzz-smoke

help:
	@sed -n '4,15s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

deps:
	@scripts/install-deps.sh $(BUILD_PKGS)

build: deps
	$(CARGO) build --release $(LOCKED) --bin sse-sidecar --example demo_origin

release-bin: deps
	$(CARGO) build --release $(LOCKED) --bin sse-sidecar

run: build
	@scripts/install-deps.sh curl
	@scripts/run-demo.sh

test-deps:
	@scripts/install-deps.sh $(TEST_PKGS) $(BROWSER_PKGS)
	@scripts/py-tools.sh
	@scripts/promtool.sh
	@# npm ci only when node_modules is older than the lockfile.
	@if [ -f $(BROWSER_DIR)/package-lock.json ] && \
	    [ ! $(BROWSER_DIR)/node_modules/.package-lock.json -nt $(BROWSER_DIR)/package-lock.json ]; then \
		echo "test-deps: npm ci in $(BROWSER_DIR)"; \
		npm ci --prefix $(BROWSER_DIR) --no-audit --no-fund --loglevel=error; \
	fi

# Steps run in order, continuing past failures; the closing line reads
# "suite: N passed, N failed, N skipped".
test: test-deps
	@scripts/suite.sh

lint: fmt-check clippy shellcheck hadolint

fmt-check:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --all --manifest-path tests/fuzz/Cargo.toml -- --check

clippy: deps
	$(CARGO) clippy --release $(LOCKED) --all-targets -- -D warnings

shellcheck:
	scripts/py-tools.sh shellcheck $(SHELL_SCRIPTS)

hadolint:
	scripts/py-tools.sh hadolint --no-color Dockerfile

# --no-fail-fast: every test binary runs, so one CI run reports every failure.
cargo-test: deps
	$(CARGO) test --release $(LOCKED) --no-fail-fast

check-config: release-bin
	@scripts/install-deps.sh nginx
	scripts/check-configs.sh

k8s-validate: release-bin
	scripts/validate-k8s.sh

docker-check: deps hadolint
	scripts/docker-mirror.sh

bench: test-deps
	scripts/bench.sh $(BENCH_ARGS)

# Guarded until the benchmark script lands; the suite reports the step as skipped.
bench-smoke: test-deps
	@if [ -x scripts/bench.sh ]; then \
		scripts/bench.sh --smoke; \
	else \
		echo "bench-smoke: skipped, scripts/bench.sh is not there yet" | tee -a "$${SUITE_NOTE:-/dev/null}"; \
	fi

# The fault soak (tests/soak/): one ignored test, run alone so that nothing else loads the
# machine while it measures RSS and fds. SOAK_STREAMS and SOAK_SEED pass through too.
SOAK_SECS ?= 1800
soak: deps
	SOAK_SECS=$(SOAK_SECS) $(CARGO) test --release $(LOCKED) --test soak -- --ignored --nocapture

soak-smoke:
	@$(MAKE) --no-print-directory soak SOAK_SECS=120

# Coverage-guided fuzzing (scripts/fuzz.sh: installs cargo-fuzz under target/ if missing,
# needs the nightly toolchain). A crash fails the target and is kept in target/fuzz-artifacts/.
FUZZ_SECS ?= 300
FUZZ_SMOKE_SECS ?= $(if $(filter true,$(CI)),60,15)

fuzz: deps
	FUZZ_SECS=$(FUZZ_SECS) scripts/fuzz.sh $(FUZZ_TARGETS)

fuzz-smoke: deps
	FUZZ_SECS=$(FUZZ_SMOKE_SECS) scripts/fuzz.sh
