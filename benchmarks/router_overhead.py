"""The router's own cost per request, and the adapters' throughput against the fake upstream.

    .venv/bin/python benchmarks/router_overhead.py [--requests 2000] [--concurrency 50]

Prints: plan_route (pure, in-process), the Redis round trips a routed call makes (circuit check
and success record, bulkhead acquire and release), and requests per second of each provider
adapter (OpenAI, Anthropic, Ollama protocols; streamed and not) against the fake upstream,
which this script starts in a subprocess. Needs Redis; no database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("REDIS_KEY_PREFIX", "gwbench")

import django  # noqa: E402

django.setup()

from routing import catalog  # noqa: E402
from routing.bulkhead import Bulkhead  # noqa: E402
from routing.circuit import CircuitBreaker  # noqa: E402
from routing.providers import close_adapters, get_adapter  # noqa: E402
from routing.router import plan_route  # noqa: E402
from routing.types import ChatMessage, ChatRequest, ModelTarget  # noqa: E402
from tenants.models import Tenant  # noqa: E402


def _targets(base: str) -> dict[str, ModelTarget]:
    common = {
        "api_key": "bench",
        "input_price_per_mtok": Decimal("0.15"),
        "output_price_per_mtok": Decimal("0.6"),
    }
    return {
        "gpt-4o-mini": ModelTarget(
            "gpt-4o-mini", "fake-openai", "openai", "gpt-4o-mini", base + "/v1", quality_tier=2, **common
        ),
        "claude-3-5-haiku": ModelTarget(
            "claude-3-5-haiku",
            "fake-anthropic",
            "anthropic",
            "claude-3-5-haiku-latest",
            base,
            quality_tier=2,
            **common,
        ),
        "llama-3.1-8b": ModelTarget(
            "llama-3.1-8b", "fake-ollama", "ollama", "llama3.1:8b", base, quality_tier=2, **common
        ),
    }


def _percentiles(samples: list[float]) -> str:
    samples = sorted(samples)
    p50 = samples[len(samples) // 2]
    p99 = samples[int(len(samples) * 0.99)]
    return (
        f"p50 {p50 * 1e6:7.1f} µs   p99 {p99 * 1e6:7.1f} µs   mean {statistics.fmean(samples) * 1e6:7.1f} µs"
    )


async def bench_plan(tenant: Tenant, n: int) -> None:
    request = ChatRequest(model="gpt-4o-mini", messages=[ChatMessage(role="user", content="hi")])
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await plan_route(tenant, request, "gpt-4o-mini")
        samples.append(time.perf_counter() - started)
    print(f"plan_route (explicit model, 3-model chain)        {_percentiles(samples)}")


async def bench_redis(n: int) -> None:
    breaker = CircuitBreaker()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await breaker.allow("bench", "gpt-4o-mini")
        await breaker.record_success("bench", "gpt-4o-mini")
        samples.append(time.perf_counter() - started)
    print(f"circuit allow + record_success (2 Redis evals)     {_percentiles(samples)}")
    samples = []
    for _ in range(n):
        bulkhead = Bulkhead("bench", 1000, 60)
        started = time.perf_counter()
        await bulkhead.acquire()
        await bulkhead.release()
        samples.append(time.perf_counter() - started)
    print(f"bulkhead acquire + release (2 Redis calls)         {_percentiles(samples)}")


async def bench_adapter(target: ModelTarget, stream: bool, total: int, concurrency: int) -> None:
    request = ChatRequest(
        model=target.name, messages=[ChatMessage(role="user", content="benchmark me")], max_tokens=20
    )
    adapter = get_adapter(target)
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            if stream:
                async for _ in adapter.stream(request, target, 30):
                    pass
            else:
                await adapter.complete(request, target, 30)

    for _ in range(concurrency):  # warm up the connection pool
        await adapter.complete(request, target, 30)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    mode = "stream" if stream else "plain "
    print(
        f"adapter {target.kind:10s} {mode}  {total / elapsed:7.0f} req/s  ({total} requests, {concurrency} concurrent)"
    )


async def main(args: argparse.Namespace) -> None:
    upstream = subprocess.Popen(
        [sys.executable, "-m", "routing.fake_upstream", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert upstream.stdout is not None
        line = upstream.stdout.readline()
        base = re.search(r"(http://\S+)", line).group(1)  # type: ignore[union-attr]
        targets = _targets(base)
        catalog._cache = (time.monotonic() + 3600, targets, {name: name for name in targets})
        tenant = Tenant(
            slug="bench", primary_model="gpt-4o-mini", fallback_models=["claude-3-5-haiku", "llama-3.1-8b"]
        )
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, fake upstream at {base}")
        await bench_plan(tenant, args.requests)
        await bench_redis(args.requests)
        for target in targets.values():
            for stream in (False, True):
                await bench_adapter(target, stream, args.requests, args.concurrency)
        await close_adapters()
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    asyncio.run(main(parser.parse_args()))
