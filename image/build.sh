#!/usr/bin/env bash
# `make image`: the operator's container image as an OCI archive, built without a container
# engine or a registry (see README, "The image").
#
#   image/build.sh                 # target/image/emr-ray-operator.oci.tar, prints size and digest
#
# Environment (all optional):
#   IMAGE_REF       image reference it is known by (default: the chart's default image,
#                   ghcr.io/emr-ray-operator/emr-ray-operator:<Chart appVersion>)
#   IMAGE_ARCH      amd64 or arm64 (default: this machine's; no cross-building)
#   IMAGE_REVISION  org.opencontainers.image.revision (default: git HEAD)
#   IMAGE_SOURCE    org.opencontainers.image.source
#   IMAGE_OUT       where the archive goes
#
# What goes in (the same as the Dockerfile's final stage): the operator's release binary (its
# package has no simulator: that is the emr-sim crate), the C libraries it is linked against (glibc: this toolchain has no musl
# target), /etc/passwd and /etc/group naming the non-root user 65532, /etc/nsswitch.conf
# (host names from /etc/hosts, then DNS) and an empty /tmp. No shell, no package manager.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
CARGO="${CARGO:-cargo}"

chart_app_version() {
  sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/emr-ray-operator/Chart.yaml
}
version="$(chart_app_version)"
[[ -n "$version" ]] || { echo "image/build.sh: no appVersion in the chart" >&2; exit 1; }
host_arch() {
  case "$(uname -m)" in
    x86_64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) echo "image/build.sh: unsupported machine $(uname -m)" >&2; exit 1 ;;
  esac
}
arch="${IMAGE_ARCH:-$(host_arch)}"
if [[ "$arch" != "$(host_arch)" ]]; then
  echo "image/build.sh: IMAGE_ARCH=$arch but this machine is $(host_arch); build on a $arch machine" >&2
  exit 1
fi
ref="${IMAGE_REF:-ghcr.io/emr-ray-operator/emr-ray-operator:$version}"
revision="${IMAGE_REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
source_url="${IMAGE_SOURCE:-https://github.com/emr-ray-operator/emr-ray-operator}"
out="${IMAGE_OUT:-$REPO/target/image/emr-ray-operator.oci.tar}"

# Paths in panic messages and line tables must not name this checkout or this user's cargo
# home, or two machines would build two images from one commit.
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
# The caller's RUSTFLAGS are not inherited: the image is built with these and nothing else.
unset CARGO_ENCODED_RUSTFLAGS
export RUSTFLAGS="--remap-path-prefix=$REPO=/src --remap-path-prefix=$cargo_home=/cargo"
export CARGO_TARGET_DIR="$REPO/target/image-build"
export CARGO_INCREMENTAL=0 SOURCE_DATE_EPOCH=0
echo "image/build.sh: cargo build --profile image -p emr-ray-operator (no simulator, no bench)" >&2
"$CARGO" build --locked --profile image -p emr-ray-operator --bin emr-ray-operator
bin="$CARGO_TARGET_DIR/image/emr-ray-operator"

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/emr-ray-operator-rootfs.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
image/rootfs.sh "$bin" "$rootfs"

digest="$(python3 image/oci.py build --rootfs "$rootfs" --out "$out" --ref "$ref" --arch "$arch" \
  --entrypoint /usr/local/bin/emr-ray-operator --cmd run --user 65532:65532 --expose 8080/tcp --expose 8081/tcp \
  --annotation "org.opencontainers.image.title=emr-ray-operator" \
  --annotation "org.opencontainers.image.description=Mirrors Alibaba Cloud EMR Serverless Spark Ray clusters as read-only Kubernetes custom resources" \
  --annotation "org.opencontainers.image.licenses=Apache-2.0" \
  --annotation "org.opencontainers.image.source=$source_url" \
  --annotation "org.opencontainers.image.revision=$revision" \
  --annotation "org.opencontainers.image.version=$version")"
size="$(stat -c %s "$out")"
echo "image: $ref"
echo "archive: $out"
echo "digest: $digest"
echo "size: $size bytes ($((size / 1024 / 1024)) MiB); binary $(stat -c %s "$bin") bytes"
