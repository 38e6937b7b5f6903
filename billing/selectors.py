"""Reads of usage: per tenant (the usage endpoint, quotas) and across tenants (the billing report).

Days up to the tenant's rollup watermark come from DailyUsage (a few rows a day per model);
only the rows since the watermark, minutes' worth, are read from the raw ledger. So a report
costs the same for a tenant with a million rows as for one with ten, and it still counts a
request answered a second ago.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Count, Q, Sum
from django.db.models.expressions import RawSQL
from django.db.models.functions import TruncDate
from django_tenants.utils import get_public_schema_name, schema_context

from billing.models import DailyUsage, UsageRecord, UsageRollupState
from billing.rls import tenant_scope
from tenants.models import Tenant
from tenants.schema import active_schema_name

CACHE_HIT_STATUSES = ("exact", "semantic")
_ZERO = Decimal(0)


@dataclass
class UsageTotals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_hits: int = 0
    errors: int = 0
    cost: Decimal = _ZERO
    cost_saved: Decimal = _ZERO

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, row: dict[str, Any]) -> None:
        self.requests += int(row["requests"] or 0)
        self.prompt_tokens += int(row["prompt_tokens"] or 0)
        self.completion_tokens += int(row["completion_tokens"] or 0)
        self.cached_tokens += int(row["cached_tokens"] or 0)
        self.cache_hits += int(row["cache_hits"] or 0)
        self.errors += int(row["errors"] or 0)
        self.cost += row["cost"] or _ZERO
        self.cost_saved += row["cost_saved"] or _ZERO


@dataclass
class UsageBreakdown:
    """Totals for a period, and the same split by model, by day, and by (day, model)."""

    start: date
    end: date  # inclusive
    total: UsageTotals = field(default_factory=UsageTotals)
    by_model: dict[str, UsageTotals] = field(default_factory=lambda: defaultdict(UsageTotals))
    by_day: dict[date, UsageTotals] = field(default_factory=lambda: defaultdict(UsageTotals))
    by_day_model: dict[tuple[date, str], UsageTotals] = field(
        default_factory=lambda: defaultdict(UsageTotals)
    )

    def add(self, row: dict[str, Any]) -> None:
        self.total.add(row)
        self.by_model[row["model"]].add(row)
        self.by_day[row["day"]].add(row)
        self.by_day_model[(row["day"], row["model"])].add(row)


def in_schema(tenant: Tenant) -> AbstractContextManager[Any]:
    """The tenant's schema, without a switch (and django-tenants' extra SET search_path on the
    next query) when it is already the active one, as on the tenant's own host."""
    return nullcontext() if active_schema_name() == tenant.schema_name else schema_context(tenant.schema_name)


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def month_bounds(day: date) -> tuple[date, date]:
    """First and last day of `day`'s calendar month."""
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following - timedelta(days=1)


_RAW_SUMS: dict[str, Any] = {
    "requests": Count("id"),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "cached_tokens": Sum("cached_tokens"),
    "cache_hits": Count("id", filter=Q(cache_status__in=CACHE_HIT_STATUSES)),
    "errors": Count("id", filter=Q(outcome="error")),
    "cost": Sum("cost"),
    "cost_saved": Sum("cost_saved"),
}


def raw_usage_rows(since: datetime, until: datetime) -> list[dict[str, Any]]:
    """The current schema's ledger in [since, until), summed per UTC day and model."""
    rows: Any = (
        UsageRecord.objects.filter(created_at__gte=since, created_at__lt=until)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "model")
        .annotate(**_RAW_SUMS)
        .order_by()
    )
    return list(rows)


_ROLLUP_FIELDS = (
    "day",
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_hits",
    "errors",
    "cost",
    "cost_saved",
)


# A period's rollup rows by (tenant id, start, end, watermark). A rollup replaces DailyUsage rows
# and moves the watermark in one transaction, so rows read at a watermark never change while it
# stands: an entry cannot go stale, a rollup just makes the next read use a new key. It saves
# the reporting transaction (five round trips) on every repeated read of a period.
_ROLLUP_CACHE_SIZE = 512
_rollup_cache: OrderedDict[tuple[int, date, date, datetime], list[dict[str, Any]]] = OrderedDict()
_rollup_cache_lock = threading.Lock()


def forget_cached_rollups() -> None:
    """Drops this process' cached rollup rows (between tests, whose rolled-back rows could
    otherwise come back under a watermark that a later test happens to reuse)."""
    with _rollup_cache_lock:
        _rollup_cache.clear()


def _rollup_rows(tenant: Tenant, start: date, end: date, watermark: datetime) -> list[dict[str, Any]]:
    key = (tenant.pk, start, end, watermark)
    with _rollup_cache_lock:
        rows = _rollup_cache.get(key)
        if rows is not None:
            _rollup_cache.move_to_end(key)
            return rows
    with tenant_scope(tenant.pk):
        # No tenant filter on purpose: row-level security scopes this query.
        rows = list(DailyUsage.objects.filter(day__gte=start, day__lte=end).values(*_ROLLUP_FIELDS))
    with _rollup_cache_lock:
        _rollup_cache[key] = rows
        while len(_rollup_cache) > _ROLLUP_CACHE_SIZE:
            _rollup_cache.popitem(last=False)
    return rows


def _watermark_and_tail(
    tenant_id: int, since: datetime, until: datetime
) -> tuple[datetime | None, list[dict[str, Any]]]:
    """The tenant's rollup watermark and the current schema's ledger from max(since, watermark)
    to until, summed as raw_usage_rows() sums it, in one statement: one round trip (and one
    SET search_path) fewer than asking for the watermark first, and both read from one snapshot."""
    tail = (
        UsageRecord.objects.filter(
            created_at__gte=RawSQL("GREATEST(%s, mark.rolled_up_to)", (since,)), created_at__lt=until
        )
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "model")
        .annotate(**_RAW_SUMS)
        .order_by()
    )
    sql, params = tail.query.sql_with_params()
    # Qualified: the state is the public schema's, whichever tenant schema is active.
    quote = connection.ops.quote_name
    state_table = f"{quote(get_public_schema_name())}.{quote(UsageRollupState._meta.db_table)}"
    with connection.cursor() as cursor:
        # LEFT JOIN LATERAL: the watermark's row comes back even when the tail is empty.
        cursor.execute(
            f"SELECT mark.rolled_up_to, tail.* FROM "
            f"(SELECT (SELECT rolled_up_to FROM {state_table} WHERE tenant_id = %s) AS rolled_up_to) AS mark "
            f"LEFT JOIN LATERAL ({sql}) AS tail ON true",
            [tenant_id, *params],
        )
        names = [column.name for column in cursor.description or ()][1:]
        rows = cursor.fetchall()
    watermark = rows[0][0] if rows else None
    return watermark, [
        dict(zip(names, row[1:], strict=True)) for row in rows if row[names.index("requests") + 1]
    ]


def tenant_usage(tenant: Tenant, start: date, end: date) -> UsageBreakdown:
    """One tenant's usage from `start` to `end` (inclusive), exact to the last settled request."""
    breakdown = UsageBreakdown(start, end)
    since, until = day_start(start), day_start(end + timedelta(days=1))
    with in_schema(tenant):
        watermark, tail = _watermark_and_tail(tenant.pk, since, until)
    if watermark is not None and watermark > since:
        for row in _rollup_rows(tenant, start, end, watermark):
            breakdown.add(row)
    for row in tail:
        breakdown.add(row)
    return breakdown


def tenant_month_used(tenant: Tenant, today: date | None = None) -> tuple[int, Decimal]:
    """Tokens and cost this calendar month (the quota's starting point after a Redis restart)."""
    first, last = month_bounds(today or datetime.now(UTC).date())
    total = tenant_usage(tenant, first, last).total
    return total.tokens, total.cost


def api_key_month_used(tenant: Tenant, api_key_id: int, today: date | None = None) -> tuple[int, Decimal]:
    first, _ = month_bounds(today or datetime.now(UTC).date())
    with schema_context(tenant.schema_name):
        sums = UsageRecord.objects.filter(api_key_id=api_key_id, created_at__gte=day_start(first)).aggregate(
            prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), cost=Sum("cost")
        )
    return int(sums["prompt"] or 0) + int(sums["completion"] or 0), sums["cost"] or _ZERO


def usage_by_tenant(start: date, end: date, tenants: list[Tenant]) -> dict[Tenant, UsageBreakdown]:
    """Each tenant's usage for the billing report, read in that tenant's own row-level-security
    scope: rollups, plus the few minutes of ledger since each tenant's last rollup."""
    return {tenant: tenant_usage(tenant, start, end) for tenant in tenants}
