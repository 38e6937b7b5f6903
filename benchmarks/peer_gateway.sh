#!/usr/bin/env bash
# Issue 4: our gateway side by side with the direct call, bare pass-throughs and LiteLLM's proxy,
# on this machine, loopback only. See benchmarks/README.md and the "Gateway latency and
# throughput (issue 4)" section of BENCHMARKS.md for what each phase prints and the figures.
#
#   bash benchmarks/peer_gateway.sh [PHASE ...]      default: setup peer openloop ceiling ws
#
# Phases
#   setup     separate benchmark database (chatplatform_bench): migrate, bootstrap_demo, catalog
#             pointed at 127.0.0.1:9100, the demo tenant opened up for benchmarking, the bench key
#   peer      our gateway under daphne and under uvicorn (uvloop + httptools), both 1 process,
#             as EXTRA_TARGETS of /work/shared/bench/peer/run.sh (C=1 and C=50, closed loop,
#             next to direct, pt-httpx, pt-aiohttp and LiteLLM with 1 worker)
#   openloop  benchmarks/open_loop.py at a steady OPEN_RATE (50/s) for OPEN_D s against direct,
#             pt-aiohttp, LiteLLM, ours-daphne, ours-uvicorn (client latency + overhead headers)
#   ceiling   open-loop steps of CEIL_D s (60) at rising rates: the highest rate with no error,
#             the offered rate achieved and p95 overhead < 100 ms, for ours and for LiteLLM; at
#             most CEIL_MAX_INFLIGHT (64) requests outstanding (more would be `dropped`): past its
#             capacity our gateway holds one Postgres connection per queued request and the shared
#             server's max_connections (100) runs out for everyone on the machine
#   ws        benchmarks/ws_load.py: WS_N (1000) WebSocket connections, each streaming a
#             WS_TOKENS-token answer from our fake upstream paced like a model
#   profile   py-spy (scratch venv) on our server under a closed-loop C=50 load
#
# Knobs (defaults in brackets): OUT [/tmp/gwbench], PEER_OUT [/tmp/peerbench] (run.sh's OUT,
# where its venv and LiteLLM live), SERVERS ["daphne uvicorn"], IDLE_TIMEOUT [120],
# BENCH_API_KEY [kept in $OUT/bench-key], and those of run.sh (C, D, W, C1_D, ROUNDS), OPEN_RATE,
# OPEN_D, CEIL_D, CEIL_RATES_OURS, CEIL_RATES_LITELLM, CEIL_SERVER, WS_N, WS_TOKENS, WS_TPS,
# WS_TTFT_MS, WS_STAGGER_S, PROFILE_SERVER, PROFILE_S.
# Every server this script starts is stopped by its PID on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEER="/work/shared/bench/peer"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
OUT="${OUT:-/tmp/gwbench}"
PEER_OUT="${PEER_OUT:-/tmp/peerbench}"
SERVERS="${SERVERS:-daphne uvicorn}"
IDLE_TIMEOUT="${IDLE_TIMEOUT:-120}"
STAMP="$(date +%Y%m%d-%H%M%S)"
RUN="$OUT/run-$STAMP"
mkdir -p "$RUN/logs"
PHASES="${*:-setup peer openloop ceiling ws}"

# The work tree changes under our feet (others are editing it): every phase of one invocation
# runs a frozen copy of it, checked to import, so all figures of a run are of one code version.
# SNAPSHOT=0 runs the live tree; SNAPSHOT_DIR=<an earlier run's src> measures that same copy again.
SRC="$ROOT"
if [ -n "${SNAPSHOT_DIR:-}" ]; then
  SRC="$SNAPSHOT_DIR"
elif [ "${SNAPSHOT:-1}" = 1 ]; then
  SRC="$RUN/src"
  rsync -a --exclude .venv --exclude .git --exclude .cache --exclude .mypy_cache --exclude .pytest_cache \
    --exclude .ruff_cache --exclude staticfiles --exclude tests --exclude __pycache__ "$ROOT/" "$SRC/"
fi
cd "$SRC"

# --- environment of every manage.py call and of our servers ----------------------------------
export DATABASE_URL="${BENCH_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/chatplatform_bench}"
export REDIS_KEY_PREFIX=gwbench
export PLATFORM_ENV=production DEBUG=0
# Throwaway secrets: production refuses the development defaults.
export DJANGO_SECRET_KEY="bench-$("$PY" -c 'import secrets; print(secrets.token_hex(24))')"
export JWT_SECRET_KEY="bench-jwt-$("$PY" -c 'import secrets; print(secrets.token_hex(24))')"
export SESSION_COOKIE_SECURE=0
export OPENAI_BASE_URL=http://127.0.0.1:9100/v1 OPENAI_API_KEY=bench
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export DJANGO_SETTINGS_MODULE=config.settings
# Database connections: a psycopg pool per server process (DB_POOL=1, the default; see
# config/settings.py). DB_POOL=0 gives one new connection per request, as before the pool.
export DB_POOL="${DB_POOL:-1}"
if [ -z "${BENCH_API_KEY:-}" ]; then
  if [ -s "$OUT/bench-key" ]; then BENCH_API_KEY="$(cat "$OUT/bench-key")"
  else BENCH_API_KEY="sk-$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"; fi
fi
export BENCH_API_KEY
( umask 077; echo "$BENCH_API_KEY" > "$OUT/bench-key" )

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT INT TERM
stop_pid() {  # stop one server we started, and forget it
  local p="$1" keep=()
  kill "$p" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$p" 2>/dev/null || true
  for q in "${PIDS[@]}"; do [ "$q" != "$p" ] && keep+=("$q"); done
  PIDS=("${keep[@]}")
}

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_http() {  # url seconds: until it answers below 500
  for _ in $(seq 1 "$2"); do
    "$PY" - "$1" <<'EOF' && return 0
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
    sys.exit(0)
except urllib.error.HTTPError as e:
    sys.exit(0 if e.code < 500 else 1)
except Exception:
    sys.exit(1)
EOF
    sleep 1
  done
  echo "timeout waiting for $1" >&2; return 1
}

machine_record() {
  {
    echo "date: $(date -Is)"; echo "nproc: $(nproc)"; grep -m1 'model name' /proc/cpuinfo || true
    echo "uptime: $(uptime)"; echo "python: $("$PY" -V 2>&1)"
    "$ROOT/.venv/bin/pip" list 2>/dev/null | grep -iE '^(django|daphne|twisted|uvicorn|uvloop|httptools|channels|channels-redis|openai|aiohttp|redis|psycopg) ' || true
    echo "litellm: $("$PEER_OUT/litellm-venv/bin/pip" show litellm 2>/dev/null | grep ^Version || echo absent)"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD) (dirty: $(git -C "$ROOT" status --porcelain | wc -l) paths)"
    echo "code: $SRC (sha1 of the app packages: $(cd "$SRC" && find config tenants chat routing billing -name '*.py' -print0 | sort -z | xargs -0 cat | sha1sum | cut -c1-12))"
    echo "DB_POOL=$DB_POOL DATABASE_URL=$DATABASE_URL REDIS_KEY_PREFIX=$REDIS_KEY_PREFIX"
  } | tee "$RUN/env.txt"
}

# --- setup: the benchmark database --------------------------------------------------------------
phase_setup() {
  local db="${DATABASE_URL##*/}"
  if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" >/dev/null
  fi
  "$PY" manage.py migrate_schemas -v 0
  "$PY" manage.py bootstrap_demo --credentials-file "$OUT/demo-credentials.json" >/dev/null
  "$PY" manage.py sync_model_catalog
  "$PY" manage.py shell -c '
from tenants.models import Tenant
from tenants.selectors import forget_cached_tenants
t = Tenant.objects.get(slug="demo")
t.primary_model = "gpt-4o-mini"
t.fallback_models = []
t.allowed_models = []
t.routing_strategy = "preference"
t.cache_enabled = False            # every request is a cache miss
t.requests_per_minute = 100_000_000
t.tokens_per_minute = 2_000_000_000
t.max_concurrent_requests = 5_000
t.monthly_token_quota = None
t.monthly_cost_quota = None
t.save()
forget_cached_tenants()
print("demo tenant:", t.primary_model, "cache", t.cache_enabled, "rpm", t.requests_per_minute,
      "tpm", t.tokens_per_minute, "concurrency", t.max_concurrent_requests)
'
  "$PY" manage.py import_api_key --tenant demo --email admin@demo.example.com \
    --secret-env BENCH_API_KEY --scopes chat,models,usage --if-missing
  # Admission state of earlier runs (buckets, reservations) must not leak into this one.
  "$PY" manage.py shell -c 'from billing.admission import flush_admission_state; flush_admission_state()'
}

# --- our servers --------------------------------------------------------------------------------
declare -A SRV_PORT SRV_PID
start_server() {  # kind [workers]
  local kind="$1" workers="${2:-1}" port
  port="$(free_port)"
  case "$kind" in
    daphne)
      "$ROOT/.venv/bin/daphne" -b 127.0.0.1 -p "$port" config.asgi:application \
        >"$RUN/logs/ours-daphne.log" 2>&1 &
      ;;
    uvicorn)
      "$ROOT/.venv/bin/uvicorn" config.asgi:application --host 127.0.0.1 --port "$port" \
        --workers "$workers" --loop uvloop --http httptools --lifespan off --no-access-log \
        --log-level warning --timeout-keep-alive 75 >"$RUN/logs/ours-uvicorn.log" 2>&1 &
      ;;
    *) echo "unknown server $kind" >&2; return 1 ;;
  esac
  local pid=$!
  PIDS+=("$pid"); SRV_PORT[$kind]="$port"; SRV_PID[$kind]="$pid"
  wait_http "http://127.0.0.1:$port/healthz" 60
  echo "ours-$kind: pid $pid on 127.0.0.1:$port"
}
start_ours() { for s in $SERVERS; do start_server "$s"; done; }
ours_targets() { local t=""; for s in $SERVERS; do t+="ours-$s=http://127.0.0.1:${SRV_PORT[$s]} "; done; echo "$t"; }
ours_pids() { local t=""; for s in $SERVERS; do t+="${t:+,}$s=${SRV_PID[$s]}"; done; echo "$t"; }
stop_ours() { for s in $SERVERS; do stop_pid "${SRV_PID[$s]}"; done; }

# --- the shared reference servers, for the phases run.sh does not cover --------------------------
# Same command lines as run.sh (its venv, its LiteLLM), started by path; never copied.
start_refs() {
  for port in 9100 4101 4000; do
    if port_busy "$port"; then echo "port $port already in use; stop that server first" >&2; exit 1; fi
  done
  [ -x "$PEER_OUT/venv/bin/uvicorn" ] || { echo "run the peer phase first (it makes $PEER_OUT/venv)" >&2; exit 1; }
  ( cd "$PEER" && exec "$PEER_OUT/venv/bin/uvicorn" upstream:app --host 127.0.0.1 --port 9100 --workers 1 \
      --no-access-log --timeout-keep-alive 75 --log-level warning ) >"$RUN/logs/upstream.log" 2>&1 &
  UP_PID=$!; PIDS+=("$UP_PID")
  ( cd "$PEER" && PASSTHROUGH_CLIENT=aiohttp exec "$PEER_OUT/venv/bin/uvicorn" passthrough:app --host 127.0.0.1 \
      --port 4101 --workers 1 --no-access-log --timeout-keep-alive 75 --log-level warning ) \
      >"$RUN/logs/pt-aiohttp.log" 2>&1 &
  PA_PID=$!; PIDS+=("$PA_PID")
  LL_PID=0
  [ "${1:-}" = nolitellm ] && { wait_http http://127.0.0.1:9100/health 30; return 0; }
  ( cd "$RUN" && exec env -u DATABASE_URL -u REDIS_HOST -u REDIS_URL -u REDIS_PORT \
      LITELLM_MASTER_KEY="$BENCH_API_KEY" LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
      "$PEER_OUT/litellm-venv/bin/litellm" --config "$PEER/litellm_config.yaml" --host 127.0.0.1 --port 4000 \
      --num_workers "${LITELLM_WORKERS:-1}" ) >"$RUN/logs/litellm.log" 2>&1 &
  LL_PID=$!; PIDS+=("$LL_PID")
  wait_http http://127.0.0.1:9100/health 30
  wait_http http://127.0.0.1:4101/v1/chat/completions 30
  wait_http http://127.0.0.1:4000/health/liveliness 180
}

waitidle() { "$PEER_OUT/venv/bin/python" "$PEER/waitidle.py" --max-busy 15 --timeout "$IDLE_TIMEOUT"; }

open_loop() {  # label url rate seconds pids [extra args]
  # A target that fell behind goes on working on requests its client gave up on (LiteLLM does):
  # let it finish before the next measurement.
  sleep "${COOLDOWN_S:-15}"
  waitidle
  timeout $(( $4 + 120 )) "$PEER_OUT/venv/bin/python" "$ROOT/benchmarks/open_loop.py" --label "$1" \
    --url "$2/v1/chat/completions" --rate "$3" --duration "$4" --warmup "${OPEN_W:-5}" --pids "$5" \
    --json-out "$RUN/open_loop.jsonl" --max-inflight "${OPEN_MAX_INFLIGHT:-1000}" "${@:6}" | tee -a "$RUN/open_loop.log"
}

# --- phases --------------------------------------------------------------------------------------
phase_peer() {
  start_ours
  # run.sh starts the fake upstream on 9100 (our catalog points there), the pass-throughs and LiteLLM.
  OUT="$PEER_OUT" IDLE_TIMEOUT="$IDLE_TIMEOUT" EXTRA_TARGETS="$(ours_targets)" EXTRA_PIDS="$(ours_pids)" \
    bash "$PEER/run.sh" 2>&1 | tee "$RUN/peer.log"
  stop_ours
  local res; res="$(grep -o 'results: .*' "$RUN/peer.log" | tail -1 | cut -d' ' -f2)"
  [ -n "$res" ] && cp "$res/report.md" "$RUN/peer-report.md" && cp "$res/results.jsonl" "$RUN/peer-results.jsonl"
  echo "peer report: $RUN/peer-report.md"
}

phase_openloop() {
  start_refs; start_ours
  local rate="${OPEN_RATE:-50}" d="${OPEN_D:-60}"
  local pids="up=$UP_PID,pa=$PA_PID,ll=$LL_PID,$(ours_pids)"
  for r in $(seq 1 "${OPEN_ROUNDS:-1}"); do
    open_loop direct http://127.0.0.1:9100 "$rate" "$d" "$pids" --tag "open$r"
    open_loop pt-aiohttp http://127.0.0.1:4101 "$rate" "$d" "$pids" --tag "open$r"
    open_loop litellm http://127.0.0.1:4000 "$rate" "$d" "$pids" --tag "open$r"
    for s in $SERVERS; do
      open_loop "ours-$s" "http://127.0.0.1:${SRV_PORT[$s]}" "$rate" "$d" "$pids" --tag "open$r"
    done
  done
  "$PEER_OUT/venv/bin/python" "$ROOT/benchmarks/open_loop.py" --report "$RUN/open_loop.jsonl" | tee "$RUN/open_loop.md"
  stop_ours; cleanup
}

phase_ceiling() {
  # The highest offered rate each target sustains for CEIL_D s: ascending steps, stopping after
  # the first failed step (an error, a shortfall of the offered rate, or p95 overhead >= 100 ms
  # over the direct call's p95, measured once per series at its highest rate).
  local server="${CEIL_SERVER:-uvicorn}" d="${CEIL_D:-60}"
  SERVERS="$server" start_server "$server"
  start_refs
  local pids="up=$UP_PID,ll=$LL_PID,$server=${SRV_PID[$server]}"
  local target
  for target in "ours-$server=http://127.0.0.1:${SRV_PORT[$server]}=${CEIL_RATES_OURS-20 30 40 50 60 80 100 150 200}" \
                "litellm=http://127.0.0.1:4000=${CEIL_RATES_LITELLM-20 30 40 50 60 80}"; do
    local label="${target%%=*}" rest="${target#*=}"; local url="${rest%=*}" rates="${rest##*=}"
    [ -z "${rates// /}" ] && continue  # CEIL_RATES_...="" skips that target
    local top; top="$(echo "$rates" | tr ' ' '\n' | sort -n | tail -1)"
    open_loop direct http://127.0.0.1:9100 "$top" 20 "$pids" --tag "ceil-$label"
    for rate in $rates; do
      open_loop "$label" "$url" "$rate" "$d" "$pids" --tag "ceil-$label" --max-inflight "${CEIL_MAX_INFLIGHT:-64}"
      if ! "$PEER_OUT/venv/bin/python" "$ROOT/benchmarks/open_loop.py" --passes "$RUN/open_loop.jsonl" \
          --label "$label" --rate "$rate" --tag "ceil-$label" --max-p95-overhead 100; then
        echo "ceiling: $label fails at $rate/s"; break
      fi
    done
  done
  "$PEER_OUT/venv/bin/python" "$ROOT/benchmarks/open_loop.py" --report "$RUN/open_loop.jsonl" | tee "$RUN/ceiling.md"
  cleanup
}

phase_ws() {
  ulimit -n 20000
  if port_busy 9100; then echo "port 9100 already in use; stop that server first" >&2; exit 1; fi
  local tps="${WS_TPS:-50}" ttft="${WS_TTFT_MS:-300}" n="${WS_N:-1000}" tokens="${WS_TOKENS:-100}"
  # Our own fake upstream, paced like a model: WS_TTFT_MS to the first token, then WS_TPS tokens/s.
  "$PY" manage.py fake_upstream --port 9100 \
    --knobs "{\"ttft_ms\": $ttft, \"tokens_per_second\": $tps, \"reply_tokens\": $tokens}" \
    >"$RUN/logs/fake-upstream.log" 2>&1 &
  local up=$!; PIDS+=("$up")
  wait_http http://127.0.0.1:9100/v1/models 30
  local server
  for server in ${WS_SERVERS:-$SERVERS}; do
    SERVERS="$server" start_server "$server"
    waitidle
    timeout 900 "$PY" "$ROOT/benchmarks/ws_load.py" --base "http://127.0.0.1:${SRV_PORT[$server]}" \
      --label "ours-$server" --connections "$n" --server-pid "${SRV_PID[$server]}" --upstream-pid "$up" \
      --expect-tokens "$tokens" --upstream-ttft-ms "$ttft" --stagger "${WS_STAGGER_S:-0}" \
      --direct-url http://127.0.0.1:9100/v1/chat/completions \
      --json-out "$RUN/ws.jsonl" | tee -a "$RUN/ws.log"
    stop_pid "${SRV_PID[$server]}"
  done
  cleanup
}

fold_summary() {  # py-spy raw (folded) stacks -> self and inclusive time of the top frames
  "$PY" - "$1" <<'PYEOF'
import collections, re, sys
self_t, incl, total = collections.Counter(), collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    if not stack:
        continue
    n = int(n); total += n
    frames = [re.sub(r" \(/\S*?/(site-packages|lib/python3\.11|main|src)/", " (", f) for f in stack.split(";")]
    self_t[frames[-1]] += n
    for f in set(frames):
        incl[f] += n
print(f"samples: {total}")
print("\n-- top self time --")
for f, n in self_t.most_common(30):
    print(f"{100*n/total:5.1f}%  {f}")
print("\n-- top inclusive time (our code and the big libraries) --")
keep = ("chat/", "routing/", "billing/", "tenants/", "config/", "django/", "openai/", "aiohttp/",
        "redis/", "psycopg/", "asgiref/", "daphne/", "twisted/", "uvicorn/", "channels/", "json/")
for f, n in incl.most_common(400):
    if any(k in f for k in keep):
        print(f"{100*n/total:5.1f}%  {f}")
PYEOF
}

phase_profile() {
  local server="${PROFILE_SERVER:-uvicorn}" secs="${PROFILE_S:-30}"
  local venv="$OUT/pyspy-venv"
  [ -x "$venv/bin/py-spy" ] || { python3 -m venv "$venv"; "$venv/bin/pip" install -q py-spy; }
  SERVERS="$server" start_server "$server"
  start_refs nolitellm
  local pid="${SRV_PID[$server]}"
  waitidle
  "$PEER_OUT/venv/bin/python" "$PEER/loadgen.py" --url "http://127.0.0.1:${SRV_PORT[$server]}/v1/chat/completions" \
    -c "${PROFILE_C:-50}" -d $(( secs + 10 )) -w 3 --label "ours-$server" --client aiohttp \
    --pids "$server=$pid" >"$RUN/profile-load.log" 2>&1 &
  local lg=$!
  sleep 5
  # --gil: only the thread holding the GIL, i.e. where the process' CPU goes.
  "$venv/bin/py-spy" record --pid "$pid" --duration "$secs" --rate "${PROFILE_RATE:-100}" --format raw --gil \
    --output "$RUN/profile-$server.folded" --nonblocking >"$RUN/logs/py-spy.log" 2>&1 || true
  wait "$lg" || true
  cat "$RUN/profile-load.log"
  fold_summary "$RUN/profile-$server.folded" | tee "$RUN/profile-$server.txt"
  cleanup
}

machine_record
# A snapshot taken in the middle of someone's edit may not even import: refuse it.
"$PY" manage.py check >/dev/null || { echo "the code in $SRC does not import; try again" >&2; exit 1; }
for phase in $PHASES; do
  echo "=== phase $phase ($(date -Is))"
  "phase_$phase"
done
echo "results: $RUN"
