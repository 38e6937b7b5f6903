#!/usr/bin/env bash
# Issue 5: cache hit latency through the real running API (the "Semantic cache" section of
# BENCHMARKS.md quotes what this prints).
#
#   bash benchmarks/cache_bench.sh            # setup, then timing rounds
#
# Sets up a database of its own (chatplatform_cachebench: migrate, bootstrap_demo, the catalog
# pointed at our fake upstream on a free port, the demo tenant with the cache on and limits out
# of the way, a bench API key), starts the fake upstream and our gateway (uvicorn, 1 process, as
# benchmarks/peer_gateway.sh does), waits for a quiet machine, then runs
# benchmarks/cache_latency.py --base-url: seed questions (misses, stored after the answer),
# repeats (exact hits) and Quora paraphrases (semantic hits), each timed at the client, with the
# gateway's own x-gateway-overhead-ms header.
#
# Knobs: OUT [/tmp/cachebench], ROUNDS [2], REQUESTS [200] (semantic hits per round),
# MAX_BUSY [30] and IDLE_TIMEOUT [120] (waitidle before each round), SERVER [uvicorn|daphne].
# Every server this script starts is stopped by its PID on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
OUT="${OUT:-/tmp/cachebench}"
RUN="$OUT/run-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RUN/logs"
SERVER="${SERVER:-uvicorn}"

# Others edit the work tree while this runs: measure the committed code (SNAPSHOT=HEAD, or any
# commit), exported to $RUN/src; SNAPSHOT=0 runs the live tree.
if [ "${SNAPSHOT:-HEAD}" != 0 ]; then
  mkdir -p "$RUN/src"
  git -C "$ROOT" archive "${SNAPSHOT:-HEAD}" | tar -x -C "$RUN/src"
  echo "code: $(git -C "$ROOT" rev-parse --short "${SNAPSHOT:-HEAD}") exported to $RUN/src"
  cd "$RUN/src"
fi

export DATABASE_URL="${BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/chatplatform_cachebench}"
export REDIS_KEY_PREFIX="${BENCH_REDIS_PREFIX:-cachebench}"
export PLATFORM_ENV=production DEBUG=0
export DJANGO_SECRET_KEY="bench-$("$PY" -c 'import secrets; print(secrets.token_hex(24))')"
export JWT_SECRET_KEY="bench-jwt-$("$PY" -c 'import secrets; print(secrets.token_hex(24))')"
export SESSION_COOKIE_SECURE=0
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export DJANGO_SETTINGS_MODULE=config.settings HF_HUB_OFFLINE=1
export DB_CONN_MAX_AGE="${DB_CONN_MAX_AGE:-0}"
BENCH_API_KEY="${BENCH_API_KEY:-sk-$("$PY" -c 'import secrets; print(secrets.token_hex(32))')}"
export BENCH_API_KEY

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {  # url seconds
  for _ in $(seq 1 "$2"); do
    "$PY" -c 'import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError as e:
    sys.exit(0 if e.code < 500 else 1)
except Exception:
    sys.exit(1)' "$1" && return 0
    sleep 1
  done
  echo "timeout waiting for $1" >&2; return 1
}

{
  echo "date: $(date -Is)"; echo "nproc: $(nproc)"; grep -m1 'model name' /proc/cpuinfo || true
  echo "uptime: $(uptime)"; echo "git: $(git -C "$ROOT" rev-parse --short HEAD), running $(pwd)"
  echo "DATABASE_URL=$DATABASE_URL REDIS_KEY_PREFIX=$REDIS_KEY_PREFIX server=$SERVER"
} | tee "$RUN/env.txt"

UP_PORT="$(free_port)"
"$PY" manage.py fake_upstream --port "$UP_PORT" >"$RUN/logs/fake-upstream.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$UP_PORT/v1/models" 30
export OPENAI_BASE_URL="http://127.0.0.1:$UP_PORT/v1" OPENAI_API_KEY=bench

# --- setup ------------------------------------------------------------------------------------
db="${DATABASE_URL##*/}"
if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" >/dev/null
fi
"$PY" manage.py migrate_schemas -v 0
"$PY" manage.py bootstrap_demo --credentials-file "$RUN/demo-credentials.json" >/dev/null
"$PY" manage.py sync_model_catalog >/dev/null
"$PY" manage.py shell -c '
from tenants.models import Tenant
from tenants.selectors import forget_cached_tenants
from routing.cache.service import purge_tenant_cache
t = Tenant.objects.get(slug="demo")
t.primary_model = "gpt-4o-mini"
t.fallback_models = []
t.allowed_models = []
t.routing_strategy = "preference"
t.cache_enabled = True
t.cache_ttl_seconds = 3600
t.requests_per_minute = 100_000_000
t.tokens_per_minute = 2_000_000_000
t.max_concurrent_requests = 5_000
t.monthly_token_quota = None
t.monthly_cost_quota = None
t.save()
forget_cached_tenants()
print("demo tenant: cache", t.cache_enabled, "threshold", t.semantic_cache_threshold, "purged", purge_tenant_cache(t))
'
"$PY" manage.py import_api_key --tenant demo --email admin@demo.example.com \
  --secret-env BENCH_API_KEY --scopes chat,models,usage --if-missing
"$PY" manage.py shell -c 'from billing.admission import flush_admission_state; flush_admission_state()'

# --- the gateway --------------------------------------------------------------------------------
PORT="$(free_port)"
case "$SERVER" in
  uvicorn)
    "$ROOT/.venv/bin/uvicorn" config.asgi:application --host 127.0.0.1 --port "$PORT" --workers 1 \
      --loop uvloop --http httptools --lifespan off --no-access-log --log-level warning \
      >"$RUN/logs/gateway.log" 2>&1 &
    ;;
  daphne)
    "$ROOT/.venv/bin/daphne" -b 127.0.0.1 -p "$PORT" config.asgi:application >"$RUN/logs/gateway.log" 2>&1 &
    ;;
  *) echo "SERVER must be uvicorn or daphne" >&2; exit 1 ;;
esac
PIDS+=("$!")
wait_http "http://127.0.0.1:$PORT/healthz" 60
echo "gateway ($SERVER) on 127.0.0.1:$PORT, fake upstream on $UP_PORT"

for round in $(seq 1 "${ROUNDS:-2}"); do
  "$PY" manage.py shell -c '
from tenants.models import Tenant
from routing.cache.service import purge_tenant_cache
print("purged", purge_tenant_cache(Tenant.objects.get(slug="demo")))'
  # Others share this machine: measure only when it is quiet, and say how quiet it was.
  "$PY" /work/shared/bench/peer/waitidle.py --max-busy "${MAX_BUSY:-30}" --timeout "${IDLE_TIMEOUT:-120}" \
    2>&1 | tee -a "$RUN/round-$round.txt" || true
  echo "round $round: load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RUN/round-$round.txt"
  "$PY" "$ROOT/benchmarks/cache_latency.py" --base-url "http://127.0.0.1:$PORT" --api-key "$BENCH_API_KEY" \
    --requests "${REQUESTS:-200}" --model gpt-4o-mini 2>&1 | tee -a "$RUN/round-$round.txt"
  echo "round $round: load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RUN/round-$round.txt"
done
echo "results: $RUN"
