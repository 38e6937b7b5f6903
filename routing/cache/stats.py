"""Per-tenant cache counters in Redis: hits by layer, misses, bypasses, tokens and cost saved.

One hash per tenant, `rkey("cache", slug, "stats")`, shared by every process. Counting is done in
the background so that it never adds a round trip to a cached answer; the usage rows (with their
cache_status) are written by the gateway and stay the billing record.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from config.redis import get_async_redis, get_redis, rkey
from routing.types import Usage

log = logging.getLogger(__name__)

# Cost is counted in millionths of a dollar, so HINCRBY stays exact.
_MICRO = Decimal("1000000")
_tasks: set[asyncio.Task[None]] = set()


def stats_key(tenant_slug: str) -> str:
    return rkey("cache", tenant_slug, "stats")


async def count(tenant_slug: str, **fields: int) -> None:
    try:
        pipe = get_async_redis().pipeline(transaction=False)
        for name, amount in fields.items():
            pipe.hincrby(stats_key(tenant_slug), name, amount)
        await pipe.execute()
    except Exception:
        log.warning("could not count cache stats for %s", tenant_slug, exc_info=True)


def count_later(tenant_slug: str, **fields: int) -> None:
    try:
        task = asyncio.get_running_loop().create_task(count(tenant_slug, **fields))
    except RuntimeError:  # no loop: counting is not worth blocking for
        return
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def count_hit_later(tenant_slug: str, kind: str, usage: Usage, cost: Decimal) -> None:
    count_later(
        tenant_slug,
        **{f"hits_{kind}": 1},
        saved_prompt_tokens=usage.prompt_tokens,
        saved_completion_tokens=usage.completion_tokens,
        saved_cost_micro_usd=int(cost * _MICRO),
    )


async def read(tenant_slug: str) -> dict[str, object]:
    return summarise(await get_async_redis().hgetall(stats_key(tenant_slug)))


def read_sync(tenant_slug: str) -> dict[str, object]:
    return summarise(get_redis().hgetall(stats_key(tenant_slug)))


def summarise(raw: dict[Any, Any]) -> dict[str, object]:
    values = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in raw.items()}
    hits_exact = values.pop("hits_exact", 0)
    hits_semantic = values.pop("hits_semantic", 0)
    misses = values.pop("misses", 0)
    lookups = hits_exact + hits_semantic + misses
    saved_prompt = values.pop("saved_prompt_tokens", 0)
    saved_completion = values.pop("saved_completion_tokens", 0)
    return {
        "hits": hits_exact + hits_semantic,
        "hits_exact": hits_exact,
        "hits_semantic": hits_semantic,
        "misses": misses,
        "bypasses": values.pop("bypasses", 0),
        "errors": values.pop("errors", 0),
        "stores": values.pop("stores", 0),
        "hit_rate": round((hits_exact + hits_semantic) / lookups, 4) if lookups else 0.0,
        "saved_prompt_tokens": saved_prompt,
        "saved_completion_tokens": saved_completion,
        "saved_tokens": saved_prompt + saved_completion,
        "saved_cost_usd": Decimal(values.pop("saved_cost_micro_usd", 0)) / _MICRO,
        # Candidates the guards turned away, by reason: the near misses that did not become hits.
        "refused": {k.removeprefix("refused_"): v for k, v in values.items() if k.startswith("refused_")},
    }


def reset(tenant_slug: str) -> None:
    get_redis().delete(stats_key(tenant_slug))


async def drain() -> None:
    while _tasks:
        await asyncio.gather(*list(_tasks), return_exceptions=True)
