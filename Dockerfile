# syntax=docker/dockerfile:1
# emr-ray-operator for people with a container engine. The release image is NOT built from
# this file: it is built by `make image` (image/build.sh, no engine, reproducible), natively on
# each architecture. Both build the same binary the same way (profile `image`, the operator
# package alone: no simulator, no bench; the same path remapping) on Debian bookworm and stage the same files with
# image/rootfs.sh: the binary, glibc's loader and libraries, /etc/passwd and /etc/group with
# user 65532, /etc/nsswitch.conf and /tmp; no shell, no package manager; user 65532.
#
#   docker build -t emr-ray-operator:dev .
#   docker run --rm emr-ray-operator:dev --help

# The toolchain the project is tested and released with.
ARG RUST_VERSION=1.95.0
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# Same paths after remapping as image/build.sh (checkout /src, cargo home /cargo, target dir
# target/image-build).
ENV CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never \
    SOURCE_DATE_EPOCH=0 \
    CARGO_HOME=/usr/local/cargo \
    CARGO_TARGET_DIR=/src/target/image-build \
    RUSTFLAGS="--remap-path-prefix=/src=/src --remap-path-prefix=/usr/local/cargo=/cargo"
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
# The other workspace members (only the operator package is built), and the reference example
# its unit tests and the simulator embed.
COPY sim ./sim
COPY bench ./bench
COPY fuzz/Cargo.toml ./fuzz/Cargo.toml
COPY fuzz/fuzz_targets ./fuzz/fuzz_targets
COPY tests/data ./tests/data
COPY image ./image
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eux; \
    cargo build --locked --profile image -p emr-ray-operator --bin emr-ray-operator; \
    image/rootfs.sh target/image-build/image/emr-ray-operator /rootfs

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="emr-ray-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.description="Mirrors Alibaba Cloud EMR Serverless Spark Ray clusters as read-only Kubernetes custom resources" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/emr-ray-operator/emr-ray-operator"
COPY --from=builder /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 65532:65532
WORKDIR /
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/emr-ray-operator"]
CMD ["run"]
