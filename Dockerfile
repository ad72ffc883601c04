# syntax=docker/dockerfile:1
# podcap-agent image: the static agent binary on Debian bookworm-slim with tcpdump and nsenter.
#   docker build -t podcap/podcap-agent:dev .
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
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/podcap-agent ./cmd/podcap-agent

FROM debian:bookworm-slim
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
