#!/usr/bin/env bash
# Real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager,
# Kubernetes 1.34) for this repository's integration tests, loopback only; with
# --node also a real node (kube-scheduler, kubelet, containerd), so that pods run.
#
#   tests/control-plane/kcp.sh build   # build .cache/bin/{kcp,kubectl,helm} (cached)
#   tests/control-plane/kcp.sh up      # start in the background (idempotent)
#   tests/control-plane/kcp.sh env     # print export lines: eval "$(tests/control-plane/kcp.sh env)"
#   tests/control-plane/kcp.sh status  # exit 0 if running and healthy
#   tests/control-plane/kcp.sh down    # stop and remove its data
#
# With --node the same commands act on a separate instance (state in .cache/kcp-node) that
# also runs a node; the plain instance (.cache/kcp) never gets one:
#   tests/control-plane/kcp.sh up --node           # installs containerd/runc/CNI plugins if missing
#   tests/control-plane/kcp.sh env --node          # KUBECONFIG, KCP_NODE_BRIDGE_IP, KCP_NODE_CONTAINERD_SOCK
#   tests/control-plane/kcp.sh node-import A.tar   # import OCI archives into the node's containerd
#   tests/control-plane/kcp.sh status --node       # exit 0 if running, healthy and the node Ready
#   tests/control-plane/kcp.sh down --node         # non-zero if anything of the node is left
#                                                  # or a kernel setting changed
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
BIN="$REPO/.cache/bin"

NODE=0
ARGS=()
for a in "$@"; do
  if [[ "$a" == "--node" ]]; then NODE=1; else ARGS+=("$a"); fi
done
set -- "${ARGS[@]+"${ARGS[@]}"}"
[[ "${1:-}" == node-import ]] && NODE=1

if ((NODE)); then
  STATE="$REPO/.cache/kcp-node"
else
  STATE="$REPO/.cache/kcp"
fi
DATA="$STATE/data"
KUBECONFIG_PATH="$STATE/admin.kubeconfig"
PIDFILE="$STATE/kcp.pid"
LOGFILE="$STATE/kcp.log"
ENVFILE="$STATE/env"
# Pinned helm: v3.19.x is built against the Kubernetes 1.34 libraries.
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
# Version stamped into kcp (what `kubectl version` and /version report).
K8S_VERSION="v1.34.4"

# The node's Debian packages, each with a file it provides.
NODE_PACKAGES=(containerd:/usr/bin/containerd runc:/usr/sbin/runc
  containernetworking-plugins:/usr/lib/cni/bridge iptables:/usr/sbin/iptables
  nftables:/usr/sbin/nft iproute2:/usr/sbin/ip gcc:/usr/bin/gcc)
# The node's sandbox image: built here (pause/pause.c), imported, never pulled.
PAUSE_REF="registry.k8s.io/pause:3.10"
PAUSE_DIR="$REPO/.cache/kcp-pause"
PAUSE_TAR="$PAUSE_DIR/pause.tar"

log() { echo "kcp.sh: $*" >&2; }

build_kcp() {
  mkdir -p "$BIN"
  local out="$BIN/kcp" stale="" f
  for f in "$SCRIPT_DIR"/*.go "$SCRIPT_DIR/go.mod" "$SCRIPT_DIR/go.sum" "$SCRIPT_DIR/kcp.sh"; do
    [[ -x "$out" && "$out" -nt "$f" ]] || stale="$f"
  done
  if [[ -z "$stale" ]]; then
    log "kcp is up to date ($out)"
  else
    log "building kcp (Kubernetes 1.34 apiserver+controller-manager+scheduler+kubelet+kubectl; 10-25 min cold on 2 cores)..."
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

# ---------------------------------------------------------------- node (--node)

ensure_node_packages() {
  local missing=() p
  for p in "${NODE_PACKAGES[@]}"; do
    # A tool found on PATH (wherever another package put it) counts as present; a CNI plugin
    # does not (iproute2's `bridge` command is not the CNI bridge plugin).
    [[ -e "${p#*:}" ]] || { [[ "${p#*:}" != /usr/lib/* ]] &&
      command -v "$(basename "${p#*:}")" >/dev/null 2>&1; } || missing+=("${p%%:*}")
  done
  ((${#missing[@]})) || return 0
  if dpkg -s containerd.io >/dev/null 2>&1; then
    log "Docker's containerd.io is installed; installing Debian's ${missing[*]} would replace it: install them yourself or use another machine"
    return 1
  fi
  if ((EUID != 0)); then
    log "the node needs root and the Debian packages: ${missing[*]}"
    return 1
  fi
  mkdir -p "$STATE"
  log "installing Debian packages: ${missing[*]}"
  local start=$SECONDS
  if ! apt-get update -qq >"$STATE/apt.log" 2>&1; then
    log "apt-get update failed, so the node's packages (${missing[*]}) cannot be installed; log $STATE/apt.log:"
    tail -n 20 "$STATE/apt.log" >&2
    return 1
  fi
  for p in "${missing[@]}"; do
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >>"$STATE/apt.log" 2>&1; then
      log "could not install the Debian package '$p' (apt-get install -y $p); log $STATE/apt.log:"
      tail -n 20 "$STATE/apt.log" >&2
      return 1
    fi
  done
  for p in "${NODE_PACKAGES[@]}"; do
    if [[ ! -e "${p#*:}" ]] && { [[ "${p#*:}" == /usr/lib/* ]] ||
      ! command -v "$(basename "${p#*:}")" >/dev/null 2>&1; }; then
      log "the Debian package '${p%%:*}' is installed but ${p#*:} is missing"
      return 1
    fi
  done
  log "installed ${missing[*]} in $((SECONDS - start))s"
}

# The sandbox image: static C packed with image/oci.py; rebuilt when either changes.
build_pause_image() {
  local src="$SCRIPT_DIR/pause/pause.c" tool="$REPO/image/oci.py"
  if [[ ! -f "$tool" ]]; then
    log "missing $tool (the OCI image tool the pause image is packed with)"
    return 1
  fi
  if [[ -f "$PAUSE_TAR" && "$PAUSE_TAR" -nt "$src" && "$PAUSE_TAR" -nt "$tool" ]]; then
    return 0
  fi
  rm -rf "$PAUSE_DIR"
  mkdir -p "$PAUSE_DIR/rootfs"
  gcc -static -O2 -Wall -s -o "$PAUSE_DIR/rootfs/pause" "$src"
  python3 "$tool" build --rootfs "$PAUSE_DIR/rootfs" --out "$PAUSE_TAR.tmp" --ref "$PAUSE_REF" \
    --entrypoint /pause --user 65535:65535 >"$PAUSE_DIR/digest"
  mv -f "$PAUSE_TAR.tmp" "$PAUSE_TAR"
  log "built the pause image $PAUSE_REF ($PAUSE_TAR, $(tr -d '\n' <"$PAUSE_DIR/digest"))"
}

# Undoes what the node journal in $DATA/node lists (processes, mounts, rules, links,
# cgroups, scratch dirs) and checks that nothing is left and that the kernel settings are
# those from before the node started. Non-zero otherwise. Idempotent.
node_down() {
  [[ -d "$DATA/node" ]] || return 0
  if [[ ! -x "$BIN/kcp" ]]; then
    log "no $BIN/kcp to clean up $DATA/node with (build it: $0 build-kcp)"
    return 1
  fi
  "$BIN/kcp" node-down --data-dir "$DATA"
}

ready_field() { # KEY: a field of the KCP_READY line
  grep -m1 '^KCP_READY ' "$LOGFILE" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

print_node_env() {
  print_env
  echo "export KCP_NODE_NAME=$(ready_field node)"
  echo "export KCP_NODE_BRIDGE_IP=$(ready_field bridge_ip)"
  echo "export KCP_NODE_CONTAINERD_SOCK=$(ready_field containerd)"
}

cmd_node_import() {
  (($#)) || { log "usage: $0 node-import ARCHIVE.tar..."; return 2; }
  local sock=""
  [[ -f "$ENVFILE" ]] && sock="$(sed -n 's/^export KCP_NODE_CONTAINERD_SOCK=//p' "$ENVFILE")"
  if [[ -z "$sock" || ! -S "$sock" ]] || ! running_pid >/dev/null; then
    log "the node is not running; start it with: $0 up --node"
    return 1
  fi
  local a
  for a in "$@"; do
    log "importing $a"
    ctr --address "$sock" -n k8s.io images import "$a"
  done
}

# ---------------------------------------------------------------- up / down

cmd_up() {
  mkdir -p "$STATE"
  if ((NODE)); then
    ensure_node_packages
  fi
  build_kcp
  if ((NODE)); then
    build_pause_image
  fi
  if pid="$(running_pid)"; then
    if healthy; then
      log "already running (pid $pid)"
      print_usage
      return 0
    fi
    log "running (pid $pid) but not healthy; restarting"
    cmd_down
  fi
  if ((NODE)); then
    # A node of an earlier run that was never brought down (kcp killed hard): undo it first.
    node_down || { log "could not clean up the node of an earlier run in $DATA (see above)"; return 1; }
  fi
  rm -rf --one-file-system "$DATA"
  mkdir -p "$STATE"
  : >"$LOGFILE"
  local extra=()
  ((NODE)) && extra=(--node --node-image "$PAUSE_TAR" --pause-image "$PAUSE_REF")
  # setsid: not killed by the caller's terminal/process group going away.
  nohup setsid "$BIN/kcp" up --keep --data-dir "$DATA" --kubeconfig "$KUBECONFIG_PATH" "${extra[@]}" \
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
      if ((NODE)); then node_down || true; fi
      return 1
    fi
    if ((SECONDS - start > timeout)); then
      log "kcp not ready after ${timeout}s; log tail:"
      tail -n 60 "$LOGFILE" >&2
      for f in "$DATA"/kube-apiserver.log "$DATA"/kube-controller-manager.log \
        "$DATA"/node/containerd.log "$DATA"/node/kubelet.log; do
        [[ -f "$f" ]] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
      done
      cmd_down || true
      return 1
    fi
    sleep 0.5
  done
  log "ready after $((SECONDS - start))s: $(grep '^KCP_READY ' "$LOGFILE")"
  if ((NODE)); then
    print_node_env >"$ENVFILE"
  else
    print_env >"$ENVFILE"
  fi
  print_usage
}

print_usage() {
  if ((NODE)); then
    cat >&2 <<EOF
kcp.sh: control plane and node are up. Use them with:
  eval "\$($SCRIPT_DIR/kcp.sh env --node)"      # or: source $ENVFILE
  kubectl get nodes
  $SCRIPT_DIR/kcp.sh node-import IMAGE.tar    # images are never pulled: import them
Stop them with: $SCRIPT_DIR/kcp.sh down --node
EOF
    return 0
  fi
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
    for _ in $(seq 1 120); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "still running after 60s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  else
    log "not running"
  fi
  rm -f "$PIDFILE" "$ENVFILE"
  if ((NODE)); then
    # kcp undid its node on SIGTERM; `kcp node-down` undoes whatever is left (kcp killed
    # hard) and checks that no process, mount, rule, link or cgroup of the node is left and
    # that the kernel settings are as before.
    if ! node_down; then
      log "the node was NOT cleaned up completely (see above); $DATA is kept: retry with $0 down --node"
      return 1
    fi
  fi
  rm -rf --one-file-system "$DATA"
}

case "${1:-}" in
  build)
    build_kcp
    build_helm
    ;;
  build-kcp) build_kcp ;;
  up) cmd_up ;;
  down) cmd_down ;;
  env)
    if ((NODE)) && [[ -f "$ENVFILE" ]]; then cat "$ENVFILE"; else print_env; fi
    ;;
  status)
    if pid="$(running_pid)" && healthy; then
      if ((NODE)); then
        node="$(ready_field node)"
        if [[ -n "$node" ]] && KUBECONFIG="$KUBECONFIG_PATH" "$BIN/kcp" kubectl get node "$node" \
          -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True; then
          log "running (pid $pid) and healthy, node $node Ready"
        else
          log "running (pid $pid) but the node is not Ready"
          exit 1
        fi
      else
        log "running (pid $pid) and healthy"
      fi
    else
      log "not running"
      exit 1
    fi
    ;;
  node-import)
    shift
    cmd_node_import "$@"
    ;;
  node-deps) ensure_node_packages ;;
  *)
    echo "usage: $0 build|build-kcp|up|down|env|status [--node] | node-import ARCHIVE... | node-deps" >&2
    exit 2
    ;;
esac
