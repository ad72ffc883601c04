# syntax=docker/dockerfile:1
# podcap-agent image: the static agent binary on Debian bookworm-slim with tcpdump and nsenter.
#   make image   (docker build with the build args VERSION, COMMIT and BUILD_DATE of the Makefile)
# Not built on the project's own machines (no Docker engine there): the local test cluster
# assembles an equivalent image from the same Debian packages (test/cluster/cluster.sh).

# The build runs on the builder's platform and cross-compiles (CGO_ENABLED=0), so a multi-arch
# `docker buildx build --platform linux/amd64,linux/arm64` needs no emulation.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
# The build's identity (agent/version), from `make image`'s build args: .dockerignore drops .git,
# so the build cannot ask git itself.
ARG VERSION=dev
ARG COMMIT=unknown
ARG BUILD_DATE=unknown
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -o /out/podcap-agent \
      -ldflags="-s -w -X github.com/podcap/podcap/agent/version.Version=${VERSION} -X github.com/podcap/podcap/agent/version.Commit=${COMMIT} -X github.com/podcap/podcap/agent/version.BuildDate=${BUILD_DATE}" \
      ./cmd/podcap-agent

FROM debian:bookworm-slim
ARG VERSION=dev
ARG COMMIT=unknown
ARG BUILD_DATE=unknown
LABEL org.opencontainers.image.title="podcap-agent" \
      org.opencontainers.image.description="podcap's Kubernetes node agent: captures the traffic of the pods on its node when they ask for it" \
      org.opencontainers.image.source="https://github.com/podcap/podcap" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${BUILD_DATE}"
# tcpdump: the capture process; util-linux: nsenter (Essential in Debian, named to be explicit).
# Docs, man pages and locales are never read in the container.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tcpdump util-linux \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
           /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*
COPY --from=build /out/podcap-agent /usr/local/bin/podcap-agent
# Runs as root on purpose: `tcpdump -Z root` and /proc/<pid>/ns of other containers need uid 0;
# the DaemonSet drops every capability but the few it needs (deploy/daemonset.yaml).
USER 0:0
ENTRYPOINT ["/usr/local/bin/podcap-agent"]
