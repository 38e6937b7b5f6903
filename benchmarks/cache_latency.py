"""Latency of cache answers: exact hits, semantic hits and misses.

    .venv/bin/python benchmarks/cache_latency.py                 # in-process: the service alone
    .venv/bin/python benchmarks/cache_latency.py --base-url http://127.0.0.1:8000 --api-key gwk_...

In-process it times `cache_lookup` (what the gateway adds before routing). With --base-url it
sends OpenAI-compatible requests to a running gateway: first the seed questions (misses, stored
after the answer), then repeats (exact hits) and paraphrases (semantic hits), and times each at the
client; the x-gateway-cache header says which layer answered and x-gateway-overhead-ms what the
gateway itself added. Prompts are Quora duplicates from the shared data, so hits are real ones.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "semantic-cache"


def _pairs(limit: int) -> list[tuple[str, str]]:
    """Duplicate pairs whose second question the cache serves from the first (checked below)."""
    with (DATA / "meancache_qqp_val.csv").open(newline="") as handle:
        return [(r["question1"], r["question2"]) for r in csv.DictReader(handle) if r["is_duplicate"] == "1"][
            : limit * 6
        ]


def _cpu_ticks() -> int:
    """Busy CPU ticks of the whole machine so far (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as handle:
        values = [int(x) for x in handle.readline().split()[1:9]]
    return values[0] + values[1] + values[2] + values[5] + values[6]


def _summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: none"
    ordered = sorted(values)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"{name}: n={len(values)}, p50 {statistics.median(ordered):.2f} ms, p95 {p95:.2f} ms, max {ordered[-1]:.2f} ms"


async def in_process(tenant: Any, pairs: list[tuple[str, str]], target: int) -> dict[str, list[float]]:
    from routing.cache.service import cache_drain, cache_lookup, cache_store
    from routing.types import ChatMessage, ChatRequest, Usage

    def ask(text: str) -> ChatRequest:
        return ChatRequest(model="gpt-4o-mini", messages=[ChatMessage(role="user", content=text)])

    timings: dict[str, list[float]] = defaultdict(list)
    await cache_lookup(tenant, ask("warm up the embedding model"), "gpt-4o-mini", True)
    for first, second in pairs:
        if len(timings["semantic"]) >= target:
            break
        started = time.perf_counter()
        hit, status = await cache_lookup(tenant, ask(first), "gpt-4o-mini", True)
        timings["miss" if hit is None else status].append((time.perf_counter() - started) * 1000)
        await cache_store(tenant, ask(first), "gpt-4o-mini", "answer", Usage(20, 200), Decimal("0.0001"))
        for text in (first, second):
            started = time.perf_counter()
            hit, status = await cache_lookup(tenant, ask(text), "gpt-4o-mini", True)
            timings["miss" if hit is None else status].append((time.perf_counter() - started) * 1000)
    await cache_drain()
    return timings


def over_http(base_url: str, api_key: str, model: str, pairs: list[tuple[str, str]], target: int) -> None:
    import httpx

    client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
    client_ms: dict[str, list[float]] = defaultdict(list)
    overhead_ms: dict[str, list[float]] = defaultdict(list)

    def send(text: str, stream: bool = False) -> None:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "temperature": 0,
            "stream": stream,
        }
        started = time.perf_counter()
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            for _ in response.iter_bytes():
                pass
        elapsed = (time.perf_counter() - started) * 1000
        layer = response.headers.get("x-gateway-cache", "?")
        client_ms[layer].append(elapsed)
        if "x-gateway-overhead-ms" in response.headers:
            overhead_ms[layer].append(float(response.headers["x-gateway-overhead-ms"]))

    # Seeds: misses, answered upstream and stored after the answer. About a third of Quora's
    # duplicates are semantic hits at the default setting, so seed four times the target.
    seeds = pairs[: 4 * target]
    for first, _ in seeds:
        send(first)
    time.sleep(1.0)  # stores run after the answer, off the request path
    client_ms.clear()
    overhead_ms.clear()
    busy_before = _cpu_ticks()
    started = time.perf_counter()
    timed = 0
    for first, second in seeds:
        if len(client_ms["semantic"]) >= target:
            break
        send(first)  # an exact hit
        send(second)  # a semantic hit, or a miss when the verifier refuses the pair
        timed += 2
    busy = (_cpu_ticks() - busy_before) / os.sysconf("SC_CLK_TCK") / (time.perf_counter() - started)
    print(
        f"{timed} timed requests, one at a time; machine CPU busy during them {100 * busy:.0f}% "
        f"(100 = one core, this client and the gateway included; {os.cpu_count()} cores)"
    )
    for layer in sorted(client_ms):
        print(_summary(f"client, x-gateway-cache={layer}", client_ms[layer]))
        print(_summary(f"  gateway overhead header, {layer}", overhead_ms[layer]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="semantic hits to time")
    parser.add_argument("--base-url", help="a running gateway; without it, time the service in-process")
    parser.add_argument("--api-key")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--tenant", default="cache-latency")
    args = parser.parse_args()
    pairs = _pairs(args.requests)
    if args.base_url:
        over_http(args.base_url, args.api_key or "", args.model, pairs, args.requests)
        return

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    from asgiref.sync import async_to_sync
    from cache_eval import eval_tenant

    from routing.cache.service import purge_tenant_cache

    tenant = eval_tenant(args.tenant)
    tenant.cache_enabled, tenant.cache_ttl_seconds = True, 3600
    purge_tenant_cache(tenant)
    try:
        timings = async_to_sync(in_process)(tenant, pairs, args.requests)
    finally:
        purge_tenant_cache(tenant)
    print(f"cache_lookup in-process, threshold {tenant.semantic_cache_threshold}:")
    for layer in ("exact", "semantic", "miss"):
        print("  " + _summary(layer, timings[layer]))


if __name__ == "__main__":
    main()
