"""Time to first token and decode speed of the local SmolLM2 server, through the `openai` SDK.

    .venv/bin/python benchmarks/local_llama_bench.py              # starts its own server
    .venv/bin/python benchmarks/local_llama_bench.py --base-url http://127.0.0.1:8081/v1

Needs `scripts/llama.sh build` first. Requests run one at a time (the server serialises them
anyway); the first one is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from openai import OpenAI

ROOT = Path(__file__).resolve().parents[1]
MODEL_ALIAS = "smollm2-135m"
PROMPTS = [
    "Explain in a few sentences why the sky is blue.",
    "Write a short poem about the sea.",
    "List three tips for writing clean Python code.",
    "What is the difference between a list and a tuple in Python?",
]


@dataclass
class Sample:
    ttft_s: float
    decode_tokens_per_s: float
    completion_tokens: int
    total_s: float


@contextmanager
def local_server() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "llama.sh"), "serve", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                sys.exit(f"server exited with {proc.returncode}; is it built? (scripts/llama.sh status)")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2):
                    break
            except OSError:  # still loading the model
                time.sleep(0.1)
        print(f"server up in {time.monotonic() - started:.1f} s")
        yield base_url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def measure(client: OpenAI, prompt: str, max_tokens: int) -> Sample:
    # Streaming gives the first-token time; llama-cpp-python sends one token per content chunk
    # (and no usage in streams), so chunks count the completion tokens.
    start = time.perf_counter()
    stream = client.chat.completions.create(
        model=MODEL_ALIAS,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
    )
    first: float | None = None
    last = start
    tokens = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
            tokens += 1
    if first is None or tokens < 2:
        raise RuntimeError("the model produced fewer than two tokens")
    return Sample(
        ttft_s=first - start,
        decode_tokens_per_s=(tokens - 1) / (last - first),
        completion_tokens=tokens,
        total_s=last - start,
    )


def run(base_url: str, rounds: int, max_tokens: int) -> None:
    client = OpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=120)
    measure(client, "Hello!", 8)  # warm-up: first request pays for allocating buffers
    samples = [measure(client, PROMPTS[i % len(PROMPTS)], max_tokens) for i in range(rounds)]
    for s in samples:
        print(
            f"ttft {s.ttft_s * 1000:6.0f} ms  decode {s.decode_tokens_per_s:5.1f} tok/s  "
            f"{s.completion_tokens:4d} tokens in {s.total_s:5.2f} s"
        )
    ttfts = [s.ttft_s for s in samples]
    rates = [s.decode_tokens_per_s for s in samples]
    print(
        f"median over {rounds}: ttft {statistics.median(ttfts) * 1000:.0f} ms, "
        f"decode {statistics.median(rates):.1f} tokens/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--base-url", help="an already running server, e.g. http://127.0.0.1:8081/v1")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    if args.base_url:
        run(args.base_url, args.rounds, args.max_tokens)
    else:
        with local_server() as base_url:
            run(base_url, args.rounds, args.max_tokens)


if __name__ == "__main__":
    main()
