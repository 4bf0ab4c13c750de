# syntax=docker/dockerfile:1
# emr-ray-operator: a static (musl) binary on distroless/static, running as non-root 65532.
#
#   docker build -t emr-ray-operator:dev .
#   docker run --rm emr-ray-operator:dev --help
#
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 . (the builder runs on
# the build platform and cross-compiles; TARGETARCH picks the musl target).

ARG RUST_VERSION=1
FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS builder
ARG TARGETARCH
WORKDIR /src
# musl-tools for ring's C/assembly; gcc-aarch64-linux-gnu as the cross linker/assembler host.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends musl-tools; \
    if [ "$TARGETARCH" = "arm64" ] && [ "$(dpkg --print-architecture)" != "arm64" ]; then \
      apt-get install -y --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross; \
    fi; \
    rm -rf /var/lib/apt/lists/*; \
    case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-musl > /rust-target ;; \
      arm64) echo aarch64-unknown-linux-musl > /rust-target ;; \
      *) echo "unsupported TARGETARCH=$TARGETARCH" >&2; exit 1 ;; \
    esac; \
    rustup target add "$(cat /rust-target)"
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
    CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never

COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The library embeds the simulator's reference example.
COPY tests/data ./tests/data
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eux; \
    target="$(cat /rust-target)"; \
    cargo build --release --locked --no-default-features --target "$target" --bin emr-ray-operator; \
    mkdir -p /out; \
    cp "target/$target/release/emr-ray-operator" /out/emr-ray-operator

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="emr-ray-operator" \
      org.opencontainers.image.description="Mirrors Alibaba Cloud EMR Serverless Spark Ray clusters as read-only Kubernetes custom resources" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/emr-ray-operator /usr/local/bin/emr-ray-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/emr-ray-operator"]
CMD ["run"]
