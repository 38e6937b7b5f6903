"""The real tiny local Llama (SmolLM2-135M-Instruct under llama-cpp-python's server) answers the
official `openai` SDK over real HTTP.

Skipped unless `scripts/llama.sh build` has run (it compiles llama.cpp: 13-18 minutes, once).
No database: the server is started by itself on a free port and killed afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from openai import OpenAI

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "llama"
MODEL_PATH_FILE = CACHE / "model_path"
VENV_PYTHON = CACHE / "venv" / "bin" / "python"
MODEL_ALIAS = "smollm2-135m"
# Loading a 98 MB model takes about a second here; the margin covers a loaded CI machine.
STARTUP_TIMEOUT_S = 90.0
PROMPT = "What is the capital of France? Answer in one short sentence."

pytestmark = pytest.mark.llama


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # `llama.sh serve` execs the server, and it runs in its own session: signal the whole group
    # so that nothing it may have spawned outlives the test.
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _answers(url: str) -> bool:
    # Plain urllib: the probe should not depend on which HTTP client the SDK happens to ship with.
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return bool(response.status == 200)
    except OSError:  # refused while the model loads; URLError and timeouts are OSErrors too
        return False


def _wait_until_up(base_url: str, proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-3000:]
            pytest.fail(f"llama server exited with {proc.returncode} before it was up:\n{tail}")
        if _answers(f"{base_url}/models"):
            return
        time.sleep(0.25)
    pytest.fail(f"llama server not up after {STARTUP_TIMEOUT_S:.0f} s")


@pytest.fixture(scope="module")
def llama_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not MODEL_PATH_FILE.is_file() or not VENV_PYTHON.is_file():
        pytest.skip("local Llama not built (run `scripts/llama.sh build`, 13-18 minutes, once)")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    # The log goes to a file, not a pipe: an unread pipe fills up and stalls the server.
    with log_path.open("w+b") as log:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "llama.sh"), "serve", "--port", str(port)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_until_up(base_url, proc, log)
            yield base_url
        finally:
            _stop(proc)


@pytest.fixture
def client(llama_base_url: str) -> OpenAI:
    # The server checks no key; the SDK insists on having one.
    return OpenAI(base_url=llama_base_url, api_key="local", timeout=60.0, max_retries=0)


def test_lists_the_model_under_its_alias(client: OpenAI) -> None:
    assert MODEL_ALIAS in [model.id for model in client.models.list().data]


def test_chat_completion(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL_ALIAS,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=40,
        temperature=0,
    )

    answer = completion.choices[0].message.content
    assert answer and answer.strip()
    # ChatML control tokens must not leak into the text: a sign the chat template is wrong.
    assert "<|im_" not in answer
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_streaming_chat_completion(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL_ALIAS,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=40,
        temperature=0,
        stream=True,
    )

    pieces: list[str] = []
    finish_reasons: list[str] = []
    for chunk in stream:
        # llama-cpp-python 0.3.36 sends no usage in streams (it ignores stream_options), so the
        # gateway has to count streamed tokens itself; here one content chunk is one token.
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)

    answer = "".join(pieces)
    assert answer.strip()
    assert "<|im_" not in answer
    assert len(pieces) > 1, "expected the answer to arrive in several chunks"
    assert finish_reasons[-1:] in (["stop"], ["length"])
