"""Scheduled billing work (CELERY_BEAT_SCHEDULE in settings): rollups, retention, invoices.

The beat entries run on the public schema and fan out one task per tenant, queued inside the
tenant's schema so that tenant-schemas-celery runs each in that schema (and a slow tenant holds
up no other).
"""

from __future__ import annotations

import logging
from datetime import date
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction
from django_tenants.utils import schema_context

from billing.admission import REDIS_DOWN_ERRORS, reconcile_quota
from billing.invoices import WebhookError, issue_invoice, previous_month, send_invoice
from billing.rollups import purge_raw_usage, rollup_tenant_usage
from config.celery_app import app
from tenants.models import Tenant
from tenants.schema import active_schema_name

logger = logging.getLogger(__name__)


def _tenants() -> list[Tenant]:
    return list(Tenant.objects.exclude(schema_name="public").filter(is_active=True))


def _task_tenant() -> Tenant:
    """The tenant whose schema tenant-schemas-celery activated for this task."""
    schema = active_schema_name()
    tenant = Tenant.objects.filter(schema_name=schema).first() if schema != "public" else None
    if tenant is None:
        raise RuntimeError("this task runs in a tenant's schema; queue it inside schema_context")
    return tenant


@app.task(name="billing.tasks.rollup_all_tenants")
def rollup_all_tenants() -> int:
    tenants = _tenants()
    for tenant in tenants:
        with schema_context(tenant.schema_name):
            rollup_tenant.delay()
    return len(tenants)


@app.task(name="billing.tasks.rollup_tenant")
def rollup_tenant() -> dict[str, Any]:
    tenant = _task_tenant()
    result = rollup_tenant_usage(tenant)
    try:
        async_to_sync(reconcile_quota)(tenant)
    except REDIS_DOWN_ERRORS:  # the next run reconciles
        logger.warning("billing: quota reconciliation skipped for %s (Redis unreachable)", tenant.slug)
    return {"tenant": result.tenant, "days": result.days, "rows": result.rows}


@app.task(name="billing.tasks.purge_all_tenants")
def purge_all_tenants() -> int:
    tenants = _tenants()
    for tenant in tenants:
        with schema_context(tenant.schema_name):
            purge_tenant.delay()
    return len(tenants)


@app.task(name="billing.tasks.purge_tenant")
def purge_tenant() -> int:
    return purge_raw_usage(_task_tenant())


@app.task(name="billing.tasks.issue_monthly_invoices")
def issue_monthly_invoices(month: str | None = None) -> list[str]:
    """Last month's invoices (or `month`, YYYY-MM-01), each queued for the webhook once made."""
    from django.conf import settings

    first = date.fromisoformat(month) if month else previous_month()
    numbers = []
    for tenant in Tenant.objects.exclude(schema_name="public"):
        rollup_tenant_usage(tenant)
        invoice, created = issue_invoice(tenant, first)
        numbers.append(invoice.number)
        if created and settings.INVOICE_WEBHOOK_URL:
            transaction.on_commit(partial(send_invoice_task.delay, invoice.pk))
    return numbers


@app.task(
    name="billing.tasks.send_invoice",
    autoretry_for=(WebhookError,),
    retry_backoff=30,
    retry_backoff_max=3600,
    retry_jitter=True,
    max_retries=10,
)
def send_invoice_task(invoice_id: int) -> str:
    return str(send_invoice(invoice_id).status)
