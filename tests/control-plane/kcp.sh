#!/usr/bin/env bash
# Real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager,
# Kubernetes 1.34) for this repository's integration tests. No containers, no
# kubelet, loopback only.
#
#   tests/control-plane/kcp.sh build   # build .cache/bin/{kcp,kubectl,helm} (cached)
#   tests/control-plane/kcp.sh up      # start in the background (idempotent)
#   tests/control-plane/kcp.sh env     # print export lines: eval "$(tests/control-plane/kcp.sh env)"
#   tests/control-plane/kcp.sh status  # exit 0 if running and healthy
#   tests/control-plane/kcp.sh down    # stop and remove its data
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
BIN="$REPO/.cache/bin"
STATE="$REPO/.cache/kcp"
DATA="$STATE/data"
KUBECONFIG_PATH="$STATE/admin.kubeconfig"
PIDFILE="$STATE/kcp.pid"
LOGFILE="$STATE/kcp.log"
ENVFILE="$STATE/env"
# Pinned helm: v3.19.x is built against the Kubernetes 1.34 libraries.
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
# Version stamped into kcp (what `kubectl version` and /version report).
K8S_VERSION="v1.34.4"

log() { echo "kcp.sh: $*" >&2; }

build_kcp() {
  mkdir -p "$BIN"
  local out="$BIN/kcp"
  if [[ -x "$out" && "$out" -nt "$SCRIPT_DIR/main.go" && "$out" -nt "$SCRIPT_DIR/go.mod" &&
    "$out" -nt "$SCRIPT_DIR/go.sum" && "$out" -nt "$SCRIPT_DIR/kcp.sh" ]]; then
    log "kcp is up to date ($out)"
  else
    log "building kcp (Kubernetes 1.34 apiserver+controller-manager+kubectl; 10-25 min cold on 2 cores)..."
    local start=$SECONDS
    local ld="-s -w" minor="${K8S_VERSION#v1.}" pkg
    minor="${minor%%.*}"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    (cd "$SCRIPT_DIR" && go build -trimpath -ldflags="$ld" -o "$out.tmp.$$" .)
    mv -f "$out.tmp.$$" "$out"
    log "built kcp in $((SECONDS - start))s"
  fi
  ln -sfn kcp "$BIN/kubectl"
}

build_helm() {
  if [[ -x "$BIN/helm" ]] && "$BIN/helm" version --short 2>/dev/null | grep -qx "${HELM_VERSION}"; then
    log "helm ${HELM_VERSION} is present"
    return 0
  fi
  log "installing helm ${HELM_VERSION} with go install..."
  local start=$SECONDS
  # Same version stamping as helm's Makefile (helm v3.19 uses the Kubernetes 1.34 libraries).
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ld+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=34"
  ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=34"
  GOBIN="$BIN" GOFLAGS=-trimpath go install -ldflags="$ld" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
  log "installed helm in $((SECONDS - start))s"
}

running_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

healthy() {
  [[ -f "$KUBECONFIG_PATH" ]] || return 1
  KUBECONFIG="$KUBECONFIG_PATH" "$BIN/kcp" kubectl get --raw /readyz >/dev/null 2>&1
}

print_env() {
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
  echo "export PATH=$BIN:\$PATH"
}

cmd_up() {
  build_kcp
  if pid="$(running_pid)"; then
    if healthy; then
      log "already running (pid $pid)"
      print_usage
      return 0
    fi
    log "running (pid $pid) but not healthy; restarting"
    cmd_down
  fi
  rm -rf "$DATA"
  mkdir -p "$STATE"
  : >"$LOGFILE"
  # setsid: not killed by the caller's terminal/process group going away.
  nohup setsid "$BIN/kcp" up --keep --data-dir "$DATA" --kubeconfig "$KUBECONFIG_PATH" \
    </dev/null >>"$LOGFILE" 2>&1 &
  local pid=$!
  echo "$pid" >"$PIDFILE"
  log "started kcp (pid $pid), waiting for it to become ready (log: $LOGFILE)"
  local timeout="${KCP_READY_TIMEOUT:-180}" start=$SECONDS
  while ! grep -q '^KCP_READY ' "$LOGFILE"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "kcp exited before becoming ready; log tail:"
      tail -n 60 "$LOGFILE" >&2
      rm -f "$PIDFILE"
      return 1
    fi
    if ((SECONDS - start > timeout)); then
      log "kcp not ready after ${timeout}s; log tail:"
      tail -n 60 "$LOGFILE" >&2
      for f in "$DATA"/kube-apiserver.log "$DATA"/kube-controller-manager.log; do
        [[ -f "$f" ]] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
      done
      cmd_down
      return 1
    fi
    sleep 0.5
  done
  log "ready after $((SECONDS - start))s: $(grep '^KCP_READY ' "$LOGFILE")"
  print_env >"$ENVFILE"
  print_usage
}

print_usage() {
  cat >&2 <<EOF
kcp.sh: control plane is up. Use it with:
  eval "\$($SCRIPT_DIR/kcp.sh env)"      # or: source $ENVFILE
  kubectl get ns
  EMR_TEST_KUBECONFIG=$KUBECONFIG_PATH cargo test   # tests reuse it instead of starting their own
Stop it with: $SCRIPT_DIR/kcp.sh down
EOF
}

cmd_down() {
  if pid="$(running_pid)"; then
    log "stopping kcp (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "still running after 30s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  else
    log "not running"
  fi
  rm -f "$PIDFILE" "$ENVFILE"
  rm -rf "$DATA"
}

case "${1:-}" in
  build)
    build_kcp
    build_helm
    ;;
  build-kcp) build_kcp ;;
  up) cmd_up ;;
  down) cmd_down ;;
  env) print_env ;;
  status)
    if pid="$(running_pid)" && healthy; then
      log "running (pid $pid) and healthy"
    else
      log "not running"
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 build|build-kcp|up|down|env|status" >&2
    exit 2
    ;;
esac
