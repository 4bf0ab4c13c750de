#!/usr/bin/env bash
# The real consumers of deploy/ and the chart, built from their Go modules into .cache/bin
# (pinned, cached and version-stamped like tests/control-plane/kcp.sh):
#
#   kube-state-metrics  k8s.io/kube-state-metrics/v2        (custom-resource state metrics)
#   promtool            github.com/prometheus/prometheus/cmd/promtool  (check/test rules)
#   consumers           this directory: Argo CD's health Lua in gopher-lua, and kstatus
#   actionlint          github.com/rhysd/actionlint/cmd/actionlint   (.github/workflows/*.yml)
#
#   tests/tools/tools.sh build      # build what is missing or stale (cheap when up to date)
#   tests/tools/tools.sh versions   # print the pinned versions
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
BIN="$REPO/.cache/bin"

# kube-state-metrics: pinned in kube-state-metrics/go.mod (v2.15.0, client-go 0.32; v2.16.0
# is missing from sum.golang.org and v2.17.0 from the Go proxy this CI reaches).
# Prometheus 3.16.0 (module versions are v0.<minor>.<patch>).
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
# actionlint lints the GitHub Actions workflows (tests/integration/release.rs runs it); it uses
# shellcheck for run: scripts when shellcheck is on PATH.
ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"

log() { echo "tools.sh: $*" >&2; }

# go_install NAME PACKAGE VERSION [go install flags...]: installs PACKAGE@VERSION as
# $BIN/NAME unless $BIN/.NAME.stamp already names exactly this package, version and flags.
go_install() {
  local name="$1" pkg="$2" version="$3"
  shift 3
  local stamp="$BIN/.$name.stamp" want="$pkg@$version $*"
  if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "$name $version is present"
    return 0
  fi
  mkdir -p "$BIN"
  log "installing $name ($pkg@$version) with go install..."
  local start=$SECONDS tmp
  tmp="$(mktemp -d "$BIN/.gobin.XXXXXX")"
  if ! GOBIN="$tmp" GOFLAGS=-trimpath go install "$@" "$pkg@$version"; then
    rm -rf "$tmp"
    return 1
  fi
  mv -f "$tmp/$(basename "${pkg%/v[0-9]*}")" "$BIN/$name"
  rmdir "$tmp"
  echo "$want" >"$stamp"
  log "installed $name in $((SECONDS - start))s"
}

# up_to_date OUT FILE...: OUT exists and is newer than every FILE and than this script.
up_to_date() {
  local out="$1" f
  shift
  [[ -x "$out" ]] || return 1
  for f in "$@" "$SCRIPT_DIR/tools.sh"; do
    [[ "$out" -nt "$f" ]] || return 1
  done
}

build_ksm() {
  local dir="$SCRIPT_DIR/kube-state-metrics" out="$BIN/kube-state-metrics"
  if up_to_date "$out" "$dir/go.mod" "$dir/go.sum"; then
    log "kube-state-metrics is up to date ($out)"
    return 0
  fi
  mkdir -p "$BIN"
  local version v="github.com/prometheus/common/version" start=$SECONDS
  version="$(cd "$dir" && go list -m -f '{{.Version}}' k8s.io/kube-state-metrics/v2)"
  log "building kube-state-metrics $version (tool directive in $dir/go.mod)..."
  (cd "$dir" && go build -trimpath -o "$out.tmp.$$" \
    -ldflags="-s -w -X $v.Version=${version#v} -X $v.Branch=release -X $v.Revision=module" \
    k8s.io/kube-state-metrics/v2)
  mv -f "$out.tmp.$$" "$out"
  log "built kube-state-metrics in $((SECONDS - start))s"
}

build_promtool() {
  # remove_all_sd: no cloud service-discovery plugins (AWS, Azure, GCE, ...); promtool's rule
  # checking and unit testing do not use them and they double the build.
  # Module v0.3MM.P is Prometheus 3.MM.P.
  local v="github.com/prometheus/common/version" pv="${PROMETHEUS_VERSION#v0.}"
  pv="3.$((${pv%%.*} - 300)).${pv#*.}"
  go_install promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION" \
    -tags=remove_all_sd -ldflags="-s -w -X $v.Version=$pv -X $v.Branch=release -X $v.Revision=go-install"
}

build_actionlint() {
  go_install actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION"
}

build_consumers() {
  local out="$BIN/consumers"
  if up_to_date "$out" "$SCRIPT_DIR"/*.go "$SCRIPT_DIR/go.mod" "$SCRIPT_DIR/go.sum"; then
    log "consumers is up to date ($out)"
    return 0
  fi
  mkdir -p "$BIN"
  log "building consumers (gopher-lua, kstatus)..."
  local start=$SECONDS
  (cd "$SCRIPT_DIR" && go build -trimpath -ldflags="-s -w" -o "$out.tmp.$$" .)
  mv -f "$out.tmp.$$" "$out"
  log "built consumers in $((SECONDS - start))s"
}

case "${1:-}" in
  build)
    build_consumers
    build_ksm
    build_promtool
    build_actionlint
    ;;
  build-consumers) build_consumers ;;
  build-kube-state-metrics) build_ksm ;;
  build-promtool) build_promtool ;;
  build-actionlint) build_actionlint ;;
  versions)
    (cd "$SCRIPT_DIR/kube-state-metrics" && go list -m k8s.io/kube-state-metrics/v2)
    echo "github.com/prometheus/prometheus $PROMETHEUS_VERSION (promtool)"
    echo "github.com/rhysd/actionlint $ACTIONLINT_VERSION (actionlint)"
    (cd "$SCRIPT_DIR" && go list -m github.com/yuin/gopher-lua sigs.k8s.io/cli-utils)
    ;;
  *)
    echo "usage: $0 build|build-consumers|build-kube-state-metrics|build-promtool|build-actionlint|versions" >&2
    exit 2
    ;;
esac
