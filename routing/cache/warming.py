"""Cache warming: popular answers about to expire are asked again upstream and stored afresh, so
that the questions a tenant's users ask most keep being answered from the cache.

A tenant opts in and sets a daily budget in its admin (routing.CacheSettings). Each run refreshes
at most `warm_max_entries_per_run` entries, most served first, and stops before the day's spend
would pass the budget (the previous answer's cost is the estimate; the real cost is what counts).
Run it periodically: `python manage.py cache_warm` (cron or Celery beat).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from config.redis import get_async_redis, rkey
from routing.cache.serialise import request_from_json
from routing.cache.service import cache_store
from routing.models import CacheEntry, CacheSettings
from routing.types import ChatRequest, Usage
from tenants.models import Tenant
from tenants.schema import tenant_db

log = logging.getLogger(__name__)
_MICRO = Decimal("1000000")

# (tenant, request, model) -> (answer text, usage, cost): how a refresh asks upstream.
Refresh = Callable[[Tenant, ChatRequest, str], Awaitable[tuple[str, Usage, Decimal]]]


@dataclass
class WarmReport:
    tenant: str
    refreshed: int = 0
    spent_usd: Decimal = Decimal(0)
    skipped_for_budget: int = 0
    failed: int = 0
    entry_ids: list[int] = field(default_factory=list)


def _settings_row() -> CacheSettings:
    row = CacheSettings.objects.first()
    return row if row is not None else CacheSettings.objects.create()


def _expiring_popular(ttl_seconds: int, window_seconds: int, min_hits: int, limit: int) -> list[CacheEntry]:
    now = timezone.now()
    # Fresh until refreshed_at + ttl: expiring within the window, not yet expired.
    return list(
        CacheEntry.objects.filter(
            hits__gte=min_hits,
            refreshed_at__gt=now - timedelta(seconds=ttl_seconds),
            refreshed_at__lte=now - timedelta(seconds=max(ttl_seconds - window_seconds, 0)),
        )
        .exclude(request={})
        .order_by("-hits")[:limit]
    )


async def _gateway_refresh(tenant: Tenant, request: ChatRequest, model: str) -> tuple[str, Usage, Decimal]:
    """Asks through the gateway (routing, fallback, billing to the tenant), bypassing the cache."""
    from chat.gateway import Caller, GatewayCall, answer  # the gateway imports this package

    caller = Caller(tenant=tenant, request_id=f"cache-warm-{uuid.uuid4().hex[:12]}")
    result = await answer(caller, GatewayCall(request=request, requested_model=model, use_cache=False))
    choice = result.result.choices[0]
    if choice.finish_reason != "stop":
        raise RuntimeError(f"refresh ended with {choice.finish_reason}")
    return choice.message.text(), result.result.usage, result.settlement.cost


def _spend_key(tenant: Tenant) -> str:
    return rkey("cache", tenant.slug, "warm_spent", datetime.now(UTC).strftime("%Y%m%d"))


async def warm_tenant(tenant: Tenant, refresh: Refresh = _gateway_refresh) -> WarmReport:
    report = WarmReport(tenant.slug)
    if not tenant.cache_enabled or tenant.cache_ttl_seconds <= 0:
        return report
    config = await tenant_db(tenant, _settings_row)
    if not config.warm_enabled or config.warm_max_entries_per_run <= 0:
        return report
    entries = await tenant_db(
        tenant,
        _expiring_popular,
        tenant.cache_ttl_seconds,
        settings.CACHE_WARM_WINDOW_SECONDS,
        config.warm_min_hits,
        config.warm_max_entries_per_run,
    )
    redis = get_async_redis()
    budget = config.warm_budget_usd_per_day
    for entry in entries:
        spent = Decimal(int(await redis.get(_spend_key(tenant)) or 0)) / _MICRO
        if spent + entry.cost > budget:
            report.skipped_for_budget += 1
            continue
        try:
            request = request_from_json(entry.request)
            text, usage, cost = await refresh(tenant, request, entry.model)
        except Exception:
            log.warning("cache warming of entry %s for %s failed", entry.pk, tenant.slug, exc_info=True)
            report.failed += 1
            continue
        await redis.incrby(_spend_key(tenant), int(cost * _MICRO))
        await redis.expire(_spend_key(tenant), 2 * 86_400)
        entry_id = await cache_store(tenant, request, entry.model, text, usage, cost)
        report.refreshed += 1
        report.spent_usd += cost
        if entry_id is not None:
            report.entry_ids.append(entry_id)
    return report
