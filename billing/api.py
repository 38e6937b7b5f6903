"""REST endpoints: a tenant's usage, the audit trail, and GDPR export and erasure of a user."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.admission import usage_endpoint_state
from billing.audit import record_audit
from billing.models import AuditEvent
from billing.privacy import user_data_erase, user_data_export
from billing.rls import ALL_TENANTS, tenant_scope
from billing.selectors import UsageTotals, month_bounds, tenant_usage
from config.errors import ApiError
from tenants.authentication import request_scopes
from tenants.models import Tenant
from tenants.permissions import BILLING_GROUP, IsTenantAdmin, is_platform_staff, is_tenant_admin
from tenants.selectors import current_tenant, tenant_get_by_identifier

MAX_PERIOD_DAYS = 366


def is_billing_staff(request: Any) -> bool:
    """Platform staff, or a member of the public schema's "billing" group."""
    user = request.user
    if current_tenant() is not None or not user.is_authenticated:
        return False
    return bool(user.is_staff or user.groups.filter(name=BILLING_GROUP).exists())


def _may_read_own_usage(request: Request) -> bool:
    if is_tenant_admin(request):
        return True
    scopes = request_scopes(request)
    return bool(request.user.is_staff and scopes is not None and "usage" in scopes)


def _tenant_for_usage(request: Request, identifier: str) -> Tenant:
    """The tenant in the URL if the caller may read its usage; 404 for any other tenant (never
    403, so tenant ids cannot be probed)."""
    if is_billing_staff(request):
        tenant = tenant_get_by_identifier(identifier)
    else:
        own = current_tenant()
        tenant = own if own is not None and identifier in {str(own.pk), own.slug} else None
        if tenant is not None and not _may_read_own_usage(request):
            raise ApiError(403, "Only an admin of this tenant may read its usage", "permission_denied")
    if tenant is None:
        raise ApiError(404, f"No tenant '{identifier}'", "tenant_not_found")
    return tenant


def _parse_day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, f"{name} must be a date as YYYY-MM-DD", "invalid_period", param=name) from None


def parse_period(params: Any) -> tuple[date, date]:
    """`?period=YYYY-MM`, or `?start=&end=` (inclusive dates); by default this month so far."""
    today = datetime.now(UTC).date()
    if params.get("period"):
        try:
            first = datetime.strptime(params["period"], "%Y-%m").date()
        except ValueError:
            raise ApiError(
                400, "period must be a month as YYYY-MM", "invalid_period", param="period"
            ) from None
        return month_bounds(first)
    start = _parse_day(params["start"], "start") if params.get("start") else today.replace(day=1)
    end = _parse_day(params["end"], "end") if params.get("end") else max(today, start)
    if end < start:
        raise ApiError(400, "end must not be before start", "invalid_period", param="end")
    if (end - start).days >= MAX_PERIOD_DAYS:
        raise ApiError(400, f"a period spans at most {MAX_PERIOD_DAYS} days", "invalid_period", param="start")
    return start, end


def _money(value: Decimal) -> str:
    return f"{value:.6f}"


def totals_out(totals: UsageTotals) -> dict[str, Any]:
    return {
        "tokens_used": totals.tokens,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "cached_tokens": totals.cached_tokens,
        "api_calls": totals.requests,
        "cache_hits": totals.cache_hits,
        "errors": totals.errors,
        "estimated_cost": _money(totals.cost),
        "cache_savings": _money(totals.cost_saved),
    }


class UsageView(APIView):
    """`GET /api/v1/tenants/{tenant_id}/usage`: totals, by model and by day, for a period."""

    def get(self, request: Request, tenant_id: str) -> Response:
        tenant = _tenant_for_usage(request, tenant_id)
        start, end = parse_period(request.query_params)
        usage = tenant_usage(tenant, start, end)
        remaining, month_tokens, month_cost = usage_endpoint_state(tenant)
        body = {
            "object": "usage",
            "tenant_id": tenant.pk,
            "tenant": tenant.slug,
            "period": {"start": start.isoformat(), "end": end.isoformat()},
            **totals_out(usage.total),
            "rate_limit_remaining": remaining,
            "quota": {
                "monthly_tokens": tenant.monthly_token_quota,
                "monthly_cost_usd": _money(tenant.monthly_cost_quota)
                if tenant.monthly_cost_quota is not None
                else None,
                "tokens_used_this_month": month_tokens,
                "cost_this_month": _money(month_cost),
            },
            "by_model": [{"model": m, **totals_out(t)} for m, t in sorted(usage.by_model.items())],
            "by_day": [{"date": d.isoformat(), **totals_out(t)} for d, t in sorted(usage.by_day.items())],
        }
        return Response(body)


def audit_out(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "created_at": event.created_at.isoformat(),
        "tenant": event.tenant_slug or None,
        "action": event.action,
        "actor": {"type": event.actor_type, "id": event.actor_id or None, "label": event.actor_label},
        "target": {"type": event.target_type, "id": event.target_id} if event.target_type else None,
        "ip": event.ip or None,
        "request_id": event.request_id or None,
        "detail": event.detail,
        "hash": event.hash,
    }


def _int_param(params: Any, name: str, default: int, maximum: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    if not str(raw).isdigit() or not 1 <= int(raw) <= maximum:
        raise ApiError(
            400, f"{name} must be a whole number from 1 to {maximum}", "invalid_parameter", param=name
        )
    return int(raw)


class AuditEventListView(APIView):
    """`GET /api/v1/audit-events`: newest first. A tenant admin sees its tenant's trail (on the
    tenant's host); platform staff see everything (on the public host, `?tenant=` to narrow)."""

    def get(self, request: Request) -> Response:
        own = current_tenant()
        if own is not None:
            if not is_tenant_admin(request):
                raise ApiError(
                    403, "Only an admin of this tenant may read its audit trail", "permission_denied"
                )
            scope: int | str = own.pk
        elif is_platform_staff(request):
            scope = ALL_TENANTS
            if request.query_params.get("tenant"):
                chosen = tenant_get_by_identifier(request.query_params["tenant"])
                if chosen is None:
                    raise ApiError(404, f"No tenant '{request.query_params['tenant']}'", "tenant_not_found")
                scope = chosen.pk
        else:
            raise ApiError(403, "Only platform staff may read the audit trail", "permission_denied")
        limit = _int_param(request.query_params, "limit", 50, 500)
        before = _int_param(request.query_params, "before", 2**62, 2**62)
        with tenant_scope(scope):
            # Row-level security limits this to the scope; no tenant filter needed (or trusted).
            events = AuditEvent.objects.filter(id__lt=before).order_by("-id")
            if request.query_params.get("action"):
                events = events.filter(action=request.query_params["action"])
            page = list(events[: limit + 1])
        return Response(
            {"object": "list", "data": [audit_out(e) for e in page[:limit]], "has_more": len(page) > limit}
        )


def _user_or_404(user_id: int) -> Any:
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        raise ApiError(404, f"No user {user_id}", "user_not_found")
    return user


class UserDataExportView(APIView):
    """`GET /api/v1/users/{id}/export`: everything the user left in this tenant, as JSON."""

    permission_classes = [IsTenantAdmin]

    def get(self, request: Request, user_id: int) -> Response:
        tenant = current_tenant()
        assert tenant is not None  # IsTenantAdmin
        user = _user_or_404(user_id)
        data = user_data_export(tenant, user)
        record_audit(
            "gdpr.export",
            request=request,
            target_type="user",
            target_id=user.pk,
            detail={"conversations": len(data["conversations"]), "usage_rows": len(data["usage"])},
        )
        response = Response(data)
        response["Content-Disposition"] = f'attachment; filename="user-{user.pk}-{tenant.slug}.json"'
        return response


class UserDataEraseView(APIView):
    """`POST /api/v1/users/{id}/erase` `{"erase_account": false}`: conversations, messages and
    cached answers go; the usage ledger stays, unlinked from the user."""

    permission_classes = [IsTenantAdmin]

    def post(self, request: Request, user_id: int) -> Response:
        tenant = current_tenant()
        assert tenant is not None
        user = _user_or_404(user_id)
        erase_account = request.data.get("erase_account", False) if isinstance(request.data, dict) else False
        if not isinstance(erase_account, bool):
            raise ApiError(
                400, "erase_account must be true or false", "invalid_parameter", param="erase_account"
            )
        if erase_account and user.pk == request.user.pk:
            raise ApiError(400, "An admin cannot erase their own account", "self_erasure")
        with transaction.atomic():
            result = user_data_erase(tenant, user, erase_account=erase_account)
            record_audit(
                "gdpr.erase", request=request, target_type="user", target_id=user.pk, detail=result.as_dict()
            )
        return Response({"object": "user_data_erasure", **result.as_dict()})


def default_report_period() -> tuple[date, date]:
    """The last 30 days, today included."""
    today = datetime.now(UTC).date()
    return today - timedelta(days=29), today
