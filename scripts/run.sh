#!/usr/bin/env bash
# `make run`: migrate, seed the demo tenant, then run the whole platform in the foreground:
# uvicorn (HTTP + WebSocket; ASGI_SERVER=daphne for daphne) on 127.0.0.1:$PORT, a Celery worker and, when no provider is
# configured, the local SmolLM2 model. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
PORT=${PORT:-8000}
LLAMA_PORT=${LLAMA_PORT:-8081}
mkdir -p .run

echo "==> migrating the public schema and every tenant schema"
"$PY" manage.py migrate_schemas -v 0

start_local_llama=0
if [ -z "${OPENAI_API_KEY:-}${ANTHROPIC_API_KEY:-}${LLAMA_API_ENDPOINT:-}" ]; then
  start_local_llama=1
  # First run: builds llama.cpp once (about 13 minutes on 2 cores, with progress); later: instant.
  bash scripts/llama.sh build
  export LOCAL_LLAMA_BASE_URL="http://127.0.0.1:${LLAMA_PORT}/v1"
fi

"$PY" manage.py bootstrap_demo --port "$PORT"

stop_all() {
  trap - INT TERM EXIT
  echo; echo "==> stopping"
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop_all INT TERM EXIT

if [ "$start_local_llama" = 1 ]; then
  bash scripts/llama.sh serve --port "$LLAMA_PORT" > .run/llama.log 2>&1 &
  echo "==> local model smollm2-135m on 127.0.0.1:${LLAMA_PORT} (log: .run/llama.log)"
fi
"$VENV/bin/celery" -A config.celery_app worker --loglevel INFO --concurrency 2 > .run/worker.log 2>&1 &
echo "==> Celery worker started (log: .run/worker.log)"
# uvicorn (uvloop + httptools) is the production server: faster than daphne in every figure of
# BENCHMARKS.md ("Gateway latency and throughput"). ASGI_SERVER=daphne runs daphne instead.
if [ "${ASGI_SERVER:-uvicorn}" = daphne ]; then
  echo "==> daphne on http://127.0.0.1:${PORT} (Ctrl-C stops everything)"
  "$VENV/bin/daphne" -b 127.0.0.1 -p "$PORT" config.asgi:application &
else
  echo "==> uvicorn on http://127.0.0.1:${PORT} (Ctrl-C stops everything)"
  "$VENV/bin/uvicorn" config.asgi:application --host 127.0.0.1 --port "$PORT" --loop uvloop \
    --http httptools --lifespan off --no-access-log &
fi
# Stop everything as soon as any one of them exits, so a crash is not hidden.
wait -n
