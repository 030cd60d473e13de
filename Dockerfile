# syntax=docker/dockerfile:1
# The Meltemi image: the host and its registry plugins side by side in /usr/local/bin, where the
# host looks for plugins by default. Built by `make image`:
#
#   make image VERSION=v0.1.0    (passes the plugin list: --build-arg PLUGINS=…)
#
# The final image is distroless and runs as a non-root user; the chart mounts a writable /tmp
# (plugin sockets) over an otherwise read-only root file system.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH
# Plugin packages shipped in the image: the Makefile's list (IMAGE_PLUGINS), passed by `make image`.
ARG PLUGINS
RUN test -n "$PLUGINS" || { echo "PLUGINS is empty: build the image with make image" >&2; exit 1; }
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ ./cmd/meltemi ${PLUGINS}

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="meltemi" \
      org.opencontainers.image.description="Brings services of external registries into an Istio mesh" \
      org.opencontainers.image.source="https://github.com/meltemi-mesh/meltemi" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 9090 18010
ENTRYPOINT ["/usr/local/bin/meltemi"]
CMD ["run"]
