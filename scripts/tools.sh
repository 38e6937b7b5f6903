#!/usr/bin/env bash
# Tools the test suite uses beyond requirements.txt, installed once (idempotent):
#   promtool             Debian's prometheus package: checks and unit-tests the alert rules
#   helm-python-sdk      Helm's own engine (Go, as a library in a PyPI wheel; no helm binary in
#                        Debian): renders and lints the chart
#   kubernetes-validate  Kubernetes' JSON schemas: validates the rendered manifests
# The Python two go into the venv only (not requirements.txt), so the image stays small.
# Without root (apt) promtool is skipped with a note, and its test skips with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing promtool (Debian's prometheus package)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package's server is not wanted here, only its promtool.
    if command -v service >/dev/null 2>&1; then service prometheus stop >/dev/null 2>&1 || true; fi
  else
    echo "==> promtool missing and not root: the alert-rule test will skip" >&2
  fi
fi

if ! "$VENV/bin/python" -c "import helm_python, kubernetes_validate" >/dev/null 2>&1; then
  echo "==> installing helm-python-sdk and kubernetes-validate into $VENV"
  "$VENV/bin/python" -m pip install -q helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
fi
