"""Rolling the raw ledger up into DailyUsage, and deleting raw rows past their retention.

A rollup recomputes every day from the day of the last watermark up to a new one (now minus a
grace period, so a settlement still committing is never skipped) and replaces those days' rows:
rerunning it, or two workers racing, cannot count anything twice. The ledger read, the rollup
write and the watermark move happen in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Min
from django_tenants.utils import schema_context

from billing.models import DailyUsage, UsageRecord, UsageRollupState
from billing.rls import tenant_scope
from billing.selectors import day_start, raw_usage_rows
from tenants.models import Tenant


@dataclass(frozen=True)
class RollupResult:
    tenant: str
    days: int
    rows: int
    rolled_up_to: datetime | None


def rollup_tenant_usage(tenant: Tenant, now: datetime | None = None) -> RollupResult:
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=settings.USAGE_ROLLUP_GRACE_SECONDS)
    with transaction.atomic():
        # The row lock makes concurrent rollups of one tenant take turns.
        state = UsageRollupState.objects.select_for_update().filter(tenant_id=tenant.pk).first()
        if state is not None:
            since = day_start(state.rolled_up_to.date())
        else:
            with schema_context(tenant.schema_name):
                oldest = UsageRecord.objects.aggregate(oldest=Min("created_at"))["oldest"]
            since = day_start(oldest.date()) if oldest is not None else cutoff
        if since >= cutoff:
            return RollupResult(tenant.slug, 0, 0, state.rolled_up_to if state else None)
        with schema_context(tenant.schema_name):
            rows = raw_usage_rows(since, cutoff)
        with tenant_scope(tenant.pk, read_only=False):
            DailyUsage.objects.filter(tenant_id=tenant.pk, day__gte=since.date()).delete()
            DailyUsage.objects.bulk_create(DailyUsage(tenant_id=tenant.pk, **row) for row in rows)
        UsageRollupState.objects.update_or_create(tenant_id=tenant.pk, defaults={"rolled_up_to": cutoff})
    days = (cutoff.date() - since.date()).days + 1
    return RollupResult(tenant.slug, days, len(rows), cutoff)


def purge_raw_usage(tenant: Tenant, now: datetime | None = None) -> int:
    """Deletes raw rows older than the retention, but never one not yet rolled up."""
    state = UsageRollupState.objects.filter(tenant_id=tenant.pk).first()
    if state is None:
        return 0
    keep_from = (now or datetime.now(UTC)) - timedelta(days=settings.USAGE_RAW_RETENTION_DAYS)
    # Whole days only: a rollup recomputes the watermark's day from raw rows.
    limit = min(day_start(keep_from.date()), day_start(state.rolled_up_to.date()))
    with schema_context(tenant.schema_name):
        deleted, _ = UsageRecord.objects.filter(created_at__lt=limit).delete()
    return deleted
