"""Monthly invoices: made from the usage figures, exported as CSV or JSON, and sent to an external
billing system's webhook, signed so that it can tell our requests from anyone else's.

Signature: `X-Gateway-Signature: sha256=<hex>`, the HMAC-SHA256 with INVOICE_WEBHOOK_SECRET of
`<X-Gateway-Timestamp>.<raw body>`. The receiver recomputes it and rejects old timestamps
(replays). `X-Gateway-Delivery` (the invoice number) lets it drop duplicates of a retried send.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import time
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from billing.models import Invoice, InvoiceStatus
from billing.rls import ALL_TENANTS, tenant_scope
from billing.selectors import month_bounds, tenant_usage
from tenants.models import Tenant


class WebhookError(Exception):
    """The billing system did not take the invoice (network error or a non-2xx answer)."""


def previous_month(today: date | None = None) -> date:
    first_of_this = (today or datetime.now(UTC).date()).replace(day=1)
    return (first_of_this - timedelta(days=1)).replace(day=1)


def issue_invoice(tenant: Tenant, month: date) -> tuple[Invoice, bool]:
    """The tenant's invoice for `month`, made once (a rerun returns the one already issued)."""
    first, last = month_bounds(month)
    with tenant_scope(tenant.pk, read_only=False):
        existing = Invoice.objects.filter(tenant_id=tenant.pk, period_start=first).first()
    if existing is not None:
        return existing, False
    usage = tenant_usage(tenant, first, last)
    lines = [
        {
            "model": model,
            "requests": totals.requests,
            "prompt_tokens": totals.prompt_tokens,
            "completion_tokens": totals.completion_tokens,
            "cached_tokens": totals.cached_tokens,
            "cache_hits": totals.cache_hits,
            "cost": f"{totals.cost:.6f}",
            "cost_saved": f"{totals.cost_saved:.6f}",
        }
        for model, totals in sorted(usage.by_model.items())
    ]
    with tenant_scope(tenant.pk, read_only=False):
        invoice, created = Invoice.objects.get_or_create(
            tenant_id=tenant.pk,
            period_start=first,
            defaults={
                "tenant_slug": tenant.slug,
                "number": f"INV-{first:%Y%m}-{tenant.pk:05d}",
                "period_end": last,
                "requests": usage.total.requests,
                "prompt_tokens": usage.total.prompt_tokens,
                "completion_tokens": usage.total.completion_tokens,
                "cost": usage.total.cost,
                "cost_saved": usage.total.cost_saved,
                "lines": lines,
            },
        )
    return invoice, created


def invoice_payload(invoice: Invoice) -> dict[str, Any]:
    return {
        "object": "invoice",
        "number": invoice.number,
        "tenant_id": invoice.tenant_id,
        "tenant": invoice.tenant_slug,
        "period_start": invoice.period_start.isoformat(),
        "period_end": invoice.period_end.isoformat(),
        "currency": invoice.currency,
        "requests": invoice.requests,
        "prompt_tokens": invoice.prompt_tokens,
        "completion_tokens": invoice.completion_tokens,
        "total": f"{invoice.cost:.6f}",
        "cache_savings": f"{invoice.cost_saved:.6f}",
        "lines": invoice.lines,
        "issued_at": invoice.created_at.isoformat(),
    }


CSV_COLUMNS = ["number", "tenant", "period_start", "period_end", "model", "requests", "prompt_tokens",
               "completion_tokens", "cached_tokens", "cache_hits", "cost", "cost_saved", "currency"]


def invoices_csv(invoices: list[Invoice]) -> str:
    """One line per invoice and model."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for invoice in invoices:
        for line in invoice.lines:
            writer.writerow([
                invoice.number, invoice.tenant_slug, invoice.period_start, invoice.period_end, line["model"],
                line["requests"], line["prompt_tokens"], line["completion_tokens"], line["cached_tokens"],
                line["cache_hits"], line["cost"], line["cost_saved"], invoice.currency,
            ])
    return out.getvalue()


def sign(body: bytes, timestamp: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def send_invoice(invoice_id: int) -> Invoice:
    """POSTs the invoice to INVOICE_WEBHOOK_URL; records the outcome; raises WebhookError on
    failure so that the task retries."""
    with tenant_scope(ALL_TENANTS, read_only=False):
        invoice = Invoice.objects.get(pk=invoice_id)
    if not settings.INVOICE_WEBHOOK_URL:
        raise WebhookError("INVOICE_WEBHOOK_URL is not set")
    body = json.dumps(invoice_payload(invoice), separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        settings.INVOICE_WEBHOOK_URL,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "chat-platform-billing/1",
            "X-Gateway-Event": "invoice.issued",
            "X-Gateway-Delivery": invoice.number,
            "X-Gateway-Timestamp": timestamp,
            "X-Gateway-Signature": sign(body, timestamp, settings.INVOICE_WEBHOOK_SECRET),
        },
    )
    invoice.send_attempts += 1
    error = ""
    try:
        with urllib.request.urlopen(request, timeout=settings.INVOICE_WEBHOOK_TIMEOUT_SECONDS) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status, error = exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        status, error = 0, f"{exc.__class__.__name__}: {exc}"
    if 200 <= status < 300:
        invoice.status, invoice.sent_at, invoice.last_error = InvoiceStatus.SENT, timezone.now(), ""
    else:
        invoice.status, invoice.last_error = InvoiceStatus.FAILED, error or f"HTTP {status}"
    with tenant_scope(ALL_TENANTS, read_only=False):
        invoice.save(update_fields=["status", "sent_at", "last_error", "send_attempts"])
    if invoice.status == InvoiceStatus.FAILED:
        raise WebhookError(f"{invoice.number}: {invoice.last_error}")
    return invoice
