"""The billing staff's pages (public host, /billing/): the usage and cost report with its chart and
CSV export, and the monthly invoices with their exports and webhook sends.

Who: platform staff and members of the public schema's "billing" group (sessions; /billing/login).
Every export is audited.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from billing.api import default_report_period, is_billing_staff, parse_period
from billing.audit import record_audit
from billing.charts import stacked_daily_chart
from billing.invoices import (
    WebhookError,
    invoice_payload,
    invoices_csv,
    issue_invoice,
    previous_month,
    send_invoice,
)
from billing.models import Invoice
from billing.rls import ALL_TENANTS, tenant_scope
from billing.selectors import UsageBreakdown, UsageTotals, usage_by_tenant
from config.errors import ApiError
from tenants.models import Tenant

CHART_TENANTS = 5  # the biggest by cost get their own colour; the rest are "other tenants"


def billing_staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("billing-login"))
        if not is_billing_staff(request):
            return HttpResponseForbidden("Only billing staff may see this page.")
        return view(request, *args, **kwargs)

    return wrapper


def _selection(request: HttpRequest) -> tuple[date, date, list[Tenant], str]:
    """The period and tenants asked for; an error message instead of a 500 for bad input."""
    error = ""
    try:
        if any(request.GET.get(k) for k in ("start", "end", "period")):
            start, end = parse_period(request.GET)
        else:
            start, end = default_report_period()
    except ApiError as exc:
        start, end = default_report_period()
        error = exc.message
    tenants = list(Tenant.objects.exclude(schema_name="public").order_by("slug"))
    chosen = request.GET.get("tenant", "")
    if chosen:
        tenants = [t for t in tenants if t.slug == chosen]
        if not tenants:
            error = f"No tenant '{chosen}'"
    return start, end, tenants, error


def _chart(days: list[date], usage: dict[Tenant, UsageBreakdown]) -> str:
    ranked = sorted(usage.items(), key=lambda item: item[1].total.cost, reverse=True)
    series: dict[str, dict[date, Decimal]] = {}
    for tenant, breakdown in ranked[:CHART_TENANTS]:
        series[tenant.slug] = {d: t.cost for d, t in breakdown.by_day.items()}
    if len(ranked) > CHART_TENANTS:
        other: dict[date, Decimal] = defaultdict(Decimal)
        for _, breakdown in ranked[CHART_TENANTS:]:
            for day, totals in breakdown.by_day.items():
                other[day] += totals.cost
        series["other tenants"] = dict(other)
    return stacked_daily_chart(days, series, f"Cost per day, {days[0]:%d %b} to {days[-1]:%d %b %Y}")


@require_GET
@billing_staff_required
def report(request: HttpRequest) -> HttpResponse:
    start, end, tenants, error = _selection(request)
    usage = usage_by_tenant(start, end, tenants)
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    grand = UsageTotals()
    by_model: dict[str, UsageTotals] = defaultdict(UsageTotals)
    for breakdown in usage.values():
        _merge(grand, breakdown.total)
        for model, totals in breakdown.by_model.items():
            _merge(by_model[model], totals)
    context = {
        "start": start,
        "end": end,
        "error": error,
        "tenant_filter": request.GET.get("tenant", ""),
        "all_tenants": Tenant.objects.exclude(schema_name="public").order_by("slug"),
        "grand": grand,
        "tenant_rows": sorted(usage.items(), key=lambda item: item[1].total.cost, reverse=True),
        "model_rows": sorted(by_model.items(), key=lambda item: item[1].cost, reverse=True),
        "day_rows": [(day, sum_day(usage, day)) for day in reversed(days)],
        # Built by charts.py, which escapes every piece of text it draws.
        "chart": mark_safe(_chart(days, usage)),
        "csv_query": request.GET.urlencode(),
    }
    return render(request, "billing/report.html", context)


def _merge(into: UsageTotals, other: UsageTotals) -> None:
    for name in ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cache_hits", "errors"):
        setattr(into, name, getattr(into, name) + getattr(other, name))
    into.cost += other.cost
    into.cost_saved += other.cost_saved


def sum_day(usage: dict[Tenant, UsageBreakdown], day: date) -> UsageTotals:
    totals = UsageTotals()
    for breakdown in usage.values():
        if day in breakdown.by_day:
            _merge(totals, breakdown.by_day[day])
    return totals


def _attachment(content: str, filename: str, content_type: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_GET
@billing_staff_required
def report_csv(request: HttpRequest) -> HttpResponse:
    start, end, tenants, _ = _selection(request)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["date", "tenant", "model", "requests", "prompt_tokens", "completion_tokens", "cached_tokens",
                     "cache_hits", "errors", "cost_usd", "cache_savings_usd"])
    rows = 0
    for tenant, breakdown in usage_by_tenant(start, end, tenants).items():
        for (day, model), t in sorted(breakdown.by_day_model.items()):
            writer.writerow([day.isoformat(), tenant.slug, model, t.requests, t.prompt_tokens, t.completion_tokens,
                             t.cached_tokens, t.cache_hits, t.errors, f"{t.cost:.6f}", f"{t.cost_saved:.6f}"])
            rows += 1
    record_audit("data.export", request=request, target_type="usage_report",
                 detail={"start": start.isoformat(), "end": end.isoformat(), "rows": rows,
                         "tenant": request.GET.get("tenant") or None})
    return _attachment(out.getvalue(), f"usage-{start}-{end}.csv", "text/csv")


def _invoices(request: HttpRequest) -> list[Invoice]:
    with tenant_scope(ALL_TENANTS):
        invoices = Invoice.objects.all()
        if request.GET.get("number"):
            invoices = invoices.filter(number=request.GET["number"])
        period = request.GET.get("period", "")
        if period:
            try:
                invoices = invoices.filter(period_start=date.fromisoformat(period[:7] + "-01"))
            except ValueError:
                return []
        return list(invoices[:500])


@require_GET
@billing_staff_required
def invoice_list(request: HttpRequest) -> HttpResponse:
    context = {"invoices": _invoices(request), "last_month": previous_month()}
    return render(request, "billing/invoices.html", context)


@require_POST
@billing_staff_required
def invoice_issue(request: HttpRequest) -> HttpResponse:
    """Issues last month's invoices now (the scheduled task does the same on the 1st)."""
    month = previous_month()
    for tenant in Tenant.objects.exclude(schema_name="public"):
        invoice, created = issue_invoice(tenant, month)
        if created:
            record_audit("invoice.issued", request=request, tenant=tenant, target_type="invoice",
                         target_id=invoice.number)
    return redirect("billing-invoices")


@require_GET
@billing_staff_required
def invoices_export(request: HttpRequest) -> HttpResponse:
    invoices = _invoices(request)
    fmt = request.GET.get("format", "csv")
    record_audit("data.export", request=request, target_type="invoices",
                 detail={"format": fmt, "invoices": [i.number for i in invoices][:100]})
    if fmt == "json":
        body = json.dumps({"object": "list", "data": [invoice_payload(i) for i in invoices]}, indent=2)
        return _attachment(body, "invoices.json", "application/json")
    return _attachment(invoices_csv(invoices), "invoices.csv", "text/csv")


@require_POST
@billing_staff_required
def invoice_send(request: HttpRequest, invoice_id: int) -> HttpResponse:
    """Sends one invoice now, so the page shows the outcome at once (the scheduled sends go
    through the retrying Celery task instead)."""
    with tenant_scope(ALL_TENANTS):
        invoice = Invoice.objects.filter(pk=invoice_id).first()
    if invoice is None:
        return HttpResponse("No such invoice", status=404)
    try:
        send_invoice(invoice.pk)
        outcome = "sent"
    except WebhookError as exc:
        outcome = str(exc)
    record_audit("invoice.sent", request=request, target_type="invoice", target_id=invoice.number,
                 detail={"outcome": outcome})
    return redirect("billing-invoices")
