# syntax=docker/dockerfile:1
#
# sse-sidecar image: a Rust builder stage and a slim, non-root runtime stage.
#
#   docker build -t sse-sidecar:0.1.0 .
#   docker run --rm -p 8080:8080 -p 9090:9090 sse-sidecar:0.1.0 --upstream http://host.docker.internal:3000
#
# Flags given to `docker run` replace the CMD below, so repeat `--config` to keep the
# shipped file; environment variables (SSE_SIDECAR_UPSTREAM=...) add to it instead.
# scripts/docker-mirror.sh performs the same build and runtime steps without a
# Docker engine; CI runs it and lints this file with hadolint. Keep them in step.

FROM rust:1-bookworm AS builder
# pingora-core builds zlib-ng (through flate2) with cmake. Unpinned on purpose:
# Debian drops superseded versions from its mirrors, so a pin would break the build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY conf ./conf
# The cache mounts keep the registry and compiled dependencies between builds; the
# binary is copied out of the mounted target dir inside the same step. --strip-debug
# drops the line tables (most of the file) but keeps symbols, so a panic's
# backtrace still names its functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --bin sse-sidecar \
 && install -D -m 0755 target/release/sse-sidecar /out/sse-sidecar \
 && strip --strip-debug /out/sse-sidecar

# The demo SSE app (examples/demo_origin.rs), for examples/docker-compose.yml only:
#   docker build --target demo -t sse-demo-origin .
# `docker build .` builds the last stage and skips these two.
FROM builder AS demo-builder
COPY examples/demo_origin.rs ./examples/demo_origin.rs
COPY examples/demo ./examples/demo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --example demo_origin \
 && install -D -m 0755 target/release/examples/demo_origin /out/demo_origin \
 && strip --strip-debug /out/demo_origin

FROM debian:bookworm-slim AS demo
COPY --from=demo-builder /out/demo_origin /usr/local/bin/demo_origin
USER 65534:65534
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/demo_origin"]
CMD ["--listen", "0.0.0.0:3000"]

# The sidecar image: the default (last) stage.
FROM debian:bookworm-slim AS runtime
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 sse-sidecar \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin sse-sidecar
COPY --from=builder /out/sse-sidecar /usr/local/bin/sse-sidecar
COPY --from=builder /build/conf/sse-sidecar.yaml /etc/sse-sidecar/sse-sidecar.yaml
USER 10001:10001
# 8080: proxied traffic; 9090: /metrics, /healthz, /readyz.
EXPOSE 8080 9090
# No HEALTHCHECK: the slim image has no curl or wget, and adding one would grow the
# image and its attack surface for a check that orchestrators do better themselves
# (Kubernetes probes /healthz and /readyz on 9090; see examples/kubernetes/).
ENTRYPOINT ["/usr/local/bin/sse-sidecar"]
CMD ["--config", "/etc/sse-sidecar/sse-sidecar.yaml"]
