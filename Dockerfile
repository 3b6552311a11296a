# syntax=docker/dockerfile:1
#
# Build: docker build -t sentinel-proxy .
# Run:   docker run --rm -p 6380:6380 sentinel-proxy \
#          --listen 0.0.0.0:6380 --master-name mymaster \
#          --sentinels s1:26379,s2:26379,s3:26379 --admin 0.0.0.0:9121
#
# The HEALTHCHECK below GETs http://127.0.0.1:9121/readyz from inside the
# container, so run the proxy with its admin endpoint on port 9121:
# --admin 0.0.0.0:9121 (reachable by Prometheus on the container network) or
# --admin 127.0.0.1:9121 (the check only), or `admin:` in the config file. With
# the admin endpoint elsewhere, override the check's --url to match; without
# it, the container never becomes healthy. /readyz is 200 only while every
# master group has a verified master, so `depends_on: condition:
# service_healthy` waits for one. Orchestrators that replace unhealthy
# containers (Swarm, autoheal) should check /healthz instead: a proxy waiting
# out a Redis outage is not helped by a restart.
# examples/compose/ runs it as a sidecar of a PHP application.

# The builder runs on the build machine's platform and cross-compiles for the
# target (docker buildx build --platform linux/amd64,linux/arm64 .).
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# Static (no cgo, so no libc needed), reproducible paths, no debug info.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/sentinel-proxy ./cmd/sentinel-proxy

# Distroless static: CA certificates, tzdata and /etc/passwd, no shell, no
# package manager. 65532 is its "nonroot" user, given by number so that
# Kubernetes' runAsNonRoot can verify it.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sentinel-proxy /usr/local/bin/sentinel-proxy
USER 65532:65532
# 6380: clients (the port of --listen / groups[].listen); 9121: admin.
EXPOSE 6380 9121
# The command's own --timeout (2s) is below the check's (3s), so a hung
# endpoint is reported with a reason rather than killed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/sentinel-proxy", "health", "--url", "http://127.0.0.1:9121/readyz", "--timeout", "2s"]
ENTRYPOINT ["/usr/local/bin/sentinel-proxy"]
