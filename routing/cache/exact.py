"""The exact layer: answers by the hash of the normalised request, in a per-process LRU backed
by Redis, so that a repeated question costs neither an embedding nor a database query.

Keys carry the tenant's slug and its cache generation; a purge bumps the generation, which makes
every older entry unreachable at once in this process and within GENERATION_SECONDS elsewhere.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings

from config.redis import get_async_redis, get_redis, rkey

# How long a process trusts its copy of a tenant's cache generation.
GENERATION_SECONDS = 1.0


@dataclass(slots=True)
class ExactEntry:
    entry_id: int | None
    answer: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: str  # Decimal as text
    refreshed_at: float  # unix seconds

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: str | bytes) -> ExactEntry:
        return cls(**json.loads(raw))


class _Lru:
    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, ExactEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> ExactEntry | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is not None:
                self._data.move_to_end(key)
            return entry

    def put(self, key: str, entry: ExactEntry) -> None:
        with self._lock:
            self._data[key] = entry
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def drop_prefix(self, prefix: str) -> None:
        with self._lock:
            for key in [k for k in self._data if k.startswith(prefix)]:
                del self._data[key]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_lru = _Lru(settings.CACHE_EXACT_LRU_SIZE)
_generations: dict[str, tuple[float, int]] = {}


def _entry_key(tenant_slug: str, generation: int, exact: str) -> str:
    return rkey("cache", tenant_slug, "x", generation, exact)


async def generation(tenant_slug: str, *, fresh: bool = False) -> int:
    cached = _generations.get(tenant_slug)
    now = time.monotonic()
    if not fresh and cached is not None and cached[0] > now:
        return cached[1]
    raw = await get_async_redis().get(rkey("cache", tenant_slug, "gen"))
    value = int(raw or 0)
    _generations[tenant_slug] = (now + GENERATION_SECONDS, value)
    return value


async def exact_get(tenant_slug: str, exact: str, ttl_seconds: int) -> ExactEntry | None:
    key = _entry_key(tenant_slug, await generation(tenant_slug), exact)
    entry = _lru.get(key)
    if entry is None:
        raw = await get_async_redis().get(key)
        if raw is None:
            return None
        entry = ExactEntry.loads(raw)
        _lru.put(key, entry)
    # Freshness by the tenant's current TTL, so a shortened TTL applies to old entries too.
    if entry.refreshed_at + ttl_seconds <= time.time():
        return None
    return entry


async def exact_put(
    tenant_slug: str, exact: str, entry: ExactEntry, ttl_seconds: int, generation_at_start: int
) -> None:
    """Stores under the generation the write began in: a purge in between makes it unreachable."""
    key = _entry_key(tenant_slug, generation_at_start, exact)
    await get_async_redis().set(key, entry.dumps(), ex=max(int(ttl_seconds), 1))
    _lru.put(key, entry)


def bump_generation(tenant_slug: str) -> None:
    """Makes every exact entry of the tenant unreachable (they expire with their TTL)."""
    get_redis().incr(rkey("cache", tenant_slug, "gen"))
    _generations.pop(tenant_slug, None)
    _lru.drop_prefix(rkey("cache", tenant_slug, "x", ""))


def exact_purge(tenant_slug: str) -> int:
    """Makes every exact entry of the tenant unreachable, then deletes them (sync: the purge
    endpoint and the admin action are sync views). Returns how many keys went."""
    bump_generation(tenant_slug)
    redis = get_redis()
    deleted = 0
    batch: list[Any] = []
    for key in redis.scan_iter(match=rkey("cache", tenant_slug, "x", "*"), count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(redis.delete(*batch))
            batch = []
    if batch:
        deleted += int(redis.delete(*batch))
    return deleted


def forget_exact_cache() -> None:
    """Drops this process' LRU and generations (tests)."""
    _lru.clear()
    _generations.clear()
