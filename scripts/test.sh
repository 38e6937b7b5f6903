#!/usr/bin/env bash
# The whole suite: lint, type check, then pytest against the real Postgres and Redis.
# `make test` runs this after installing what is missing (see the Makefile).
set -euo pipefail
cd "$(dirname "$0")/.."
export PLATFORM_ENV=test
VENV=${VENV:-.venv}
bash scripts/tools.sh  # promtool, Helm's engine and Kubernetes' schemas (platform/ tests)

echo "==> ruff"
"$VENV/bin/ruff" check .
echo "==> mypy"
"$VENV/bin/mypy" --no-error-summary .  # a failure stops here (set -e), unlike in an && list
echo "mypy: clean"
bash scripts/browser.sh  # Debian's Chromium for the browser tests (root only, idempotent)
echo "==> pytest"
"$VENV/bin/pytest" "$@"
