#!/usr/bin/env bash
# The official Python SDK (requirements.txt, pinned with its whole dependency closure) in a
# cached virtual environment under .cache/sdk/, for tests/sdk_conformance/conformance.py.
#
#   tests/sdk_conformance/sdk.sh setup    # create it if missing or stale (cheap when present)
#   tests/sdk_conformance/sdk.sh python   # setup, then print the venv's python
#
# Works on a bare Debian bookworm (python3 without the python3-venv and python3-pip packages):
# the venv is made with `python3 -m venv --without-pip` (which needs no ensurepip), and pip
# runs from its wheel (PIP_VERSION, fetched once from PyPI's simple index and checked against
# the SHA-256 it publishes), installing into the venv with --no-deps. The venv's directory is named after a hash
# of requirements.txt, the interpreter's version and PIP_VERSION, so a change of any of them
# builds a new one; concurrent callers wait on a lock.
set -euo pipefail
shopt -s inherit_errexit

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
CACHE="$REPO/.cache/sdk"
PYTHON="${PYTHON:-python3}"
PIP_VERSION="${PIP_VERSION:-24.2}"
REQUIREMENTS="$SCRIPT_DIR/requirements.txt"

log() { echo "sdk.sh: $*" >&2; }

key() {
  {
    cat "$REQUIREMENTS"
    "$PYTHON" -c 'import sys; print(sys.version)'
    echo "pip $PIP_VERSION"
  } | sha256sum | cut -c1-16
}

# The pip wheel, downloaded once from PyPI and verified against the digest PyPI publishes.
pip_wheel() {
  local wheel="$CACHE/pip-$PIP_VERSION-py3-none-any.whl"
  if [[ ! -f "$wheel" ]]; then
    log "fetching pip $PIP_VERSION from PyPI..."
    "$PYTHON" - "$PIP_VERSION" "$wheel" "${PIP_INDEX_URL:-https://pypi.org/simple}" <<'EOF'
import hashlib, html, re, sys, urllib.parse, urllib.request
version, out, index = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/")
# The simple index (PEP 503), as pip reads it: the link carries the file's SHA-256.
page = f"{index}/pip/"
with urllib.request.urlopen(page, timeout=60) as r:
    links = re.findall(r'href="([^"]+)"', r.read().decode())
name = f"pip-{version}-py3-none-any.whl"
link = next(html.unescape(l) for l in links if name in l and "#sha256=" in l)
url, digest = urllib.parse.urljoin(page, link).split("#sha256=")
with urllib.request.urlopen(url, timeout=120) as r:
    data = r.read()
if hashlib.sha256(data).hexdigest() != digest:
    sys.exit(f"{url}: SHA-256 mismatch")
with open(out + ".tmp", "wb") as f:
    f.write(data)
EOF
    mv -f "$wheel.tmp" "$wheel"
  fi
  echo "$wheel"
}

setup() {
  command -v "$PYTHON" >/dev/null || { log "$PYTHON is not installed"; return 1; }
  mkdir -p "$CACHE"
  local venv
  venv="$CACHE/venv-$(key)"
  exec 9>"$CACHE/.lock"
  flock 9
  if [[ -f "$venv/.complete" ]]; then
    echo "$venv"
    return 0
  fi
  local start=$SECONDS wheel
  rm -rf "$venv"
  log "creating $venv..."
  "$PYTHON" -m venv --without-pip "$venv"
  wheel="$(pip_wheel)"
  if ! "$venv/bin/python" "$wheel/pip" install --quiet --disable-pip-version-check \
      --no-deps --no-input -r "$REQUIREMENTS" >&2; then
    rm -rf "$venv"
    log "installing $REQUIREMENTS failed"
    return 1
  fi
  "$venv/bin/python" -c 'import alibabacloud_emr_serverless_spark20230808.client' >&2
  touch "$venv/.complete"
  # Older venvs of this cache (other requirements or interpreters) are not used any more.
  find "$CACHE" -maxdepth 1 -name 'venv-*' ! -path "$venv" -exec rm -rf {} + 2>/dev/null || true
  log "SDK installed in $((SECONDS - start))s"
  echo "$venv"
}

case "${1:-}" in
  setup) setup >/dev/null ;;
  python)
    venv="$(setup)"
    echo "$venv/bin/python"
    ;;
  *)
    echo "usage: $0 setup|python" >&2
    exit 2
    ;;
esac
