# soci-operator image: one static binary (operator and worker), Debian's CA bundle, non-root.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/soci-operator:TAG --push .
#
# Each platform is built natively by its own builder stage (arm64 under emulation on an amd64
# host), the same way e2e/package-image builds: glibc linked statically (+crt-static), so the
# final stage needs no base image. e2e/dockerfile-check proves the final stage assembles the same
# image as e2e/package-image.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# A static(-pie) binary has no NEEDED entries: it runs in an image without a libc. Root CAs: the
# registry client refuses to start without any, even for plain-HTTP registries.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=private \
    set -eu; \
    target=$(rustc -vV | sed -n 's/^host: //p'); \
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --locked -p soci-operator --target "$target"; \
    bin="target/$target/release/soci-operator"; \
    if readelf -d "$bin" | grep '(NEEDED)'; then echo "$bin needs shared libraries" >&2; exit 1; fi; \
    install -D -m 0755 "$bin" /out/soci-operator; \
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt

# What the final stage copies, as one tree. e2e/dockerfile-check supplies a prebuilt tree in its
# place (--build-context binary=DIR), so the final stage can be built without the builder.
FROM scratch AS binary
COPY --from=builder /out/ /

FROM scratch
# One COPY: one layer, the same files as e2e/package-image's (/soci-operator, the CA bundle).
COPY --from=binary / /
# 65532: the conventional "nonroot" id of distroless images; no passwd entry is needed.
USER 65532:65532
ENTRYPOINT ["/soci-operator"]
LABEL org.opencontainers.image.title="soci-operator" \
      org.opencontainers.image.description="Kubernetes operator that builds SOCI indexes for lazy-loading container images" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="soci-operator"
