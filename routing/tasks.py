"""Scheduled cache work (CELERY_BEAT_SCHEDULE in settings): warming popular answers.

The beat entry runs on the public schema and fans out one task per tenant with the cache on,
queued inside the tenant's schema so that tenant-schemas-celery runs it there; each tenant's
own settings (routing.CacheSettings: on/off, daily budget, entries per run) bound what it spends,
and a slow tenant holds up no other.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django_tenants.utils import schema_context

from config.celery_app import app
from routing.cache.warming import warm_tenant
from tenants.models import Tenant
from tenants.schema import active_schema_name


@app.task(name="routing.tasks.warm_all_tenants")
def warm_all_tenants() -> int:
    """Queues a warming run for every active tenant whose cache is on; returns how many."""
    tenants = list(Tenant.objects.exclude(schema_name="public").filter(is_active=True, cache_enabled=True))
    for tenant in tenants:
        with schema_context(tenant.schema_name):
            warm_tenant_cache.delay()
    return len(tenants)


@app.task(name="routing.tasks.warm_tenant_cache")
def warm_tenant_cache() -> dict[str, Any]:
    """One tenant's warming run, in the schema tenant-schemas-celery activated for it."""
    schema = active_schema_name()
    tenant = Tenant.objects.filter(schema_name=schema).first() if schema != "public" else None
    if tenant is None:
        raise RuntimeError("this task runs in a tenant's schema; queue it inside schema_context")
    report = async_to_sync(warm_tenant)(tenant)
    return {
        "tenant": report.tenant,
        "refreshed": report.refreshed,
        "spent_usd": str(report.spent_usd),
        "skipped_for_budget": report.skipped_for_budget,
        "failed": report.failed,
    }
