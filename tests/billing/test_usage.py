"""GET /api/v1/tenants/{id}/usage against the sum of what was recorded, before and after rollups."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.utils import timezone
from django_tenants.utils import schema_context

from billing.models import DailyUsage, UsageRecord
from billing.rls import ALL_TENANTS, tenant_scope
from billing.rollups import purge_raw_usage, rollup_tenant_usage
from tenants.models import Tenant
from tenants.services import api_key_create, user_create
from tests.conftest import PASSWORD, Api, World, assert_error

DAY1, DAY2 = date(2025, 3, 10), date(2025, 3, 11)


def record(tenant: Tenant, day: date, model: str, prompt: int, completion: int, cost: str, **extra: Any) -> None:
    """A usage row as settle_usage writes it, dated `day` at noon UTC."""
    with schema_context(tenant.schema_name):
        row = UsageRecord.objects.create(
            request_id=f"r-{UsageRecord.objects.count()}-{model}-{day}-{prompt}",
            model=model,
            provider="p",
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost=Decimal(cost),
            **extra,
        )
        # created_at is auto_now_add: set the date afterwards.
        UsageRecord.objects.filter(pk=row.pk).update(created_at=datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12))


def seed(world: World) -> None:
    acme = world.acme.tenant
    record(acme, DAY1, "gpt-4o-mini", 100, 50, "0.000045")
    record(acme, DAY1, "gpt-4o-mini", 10, 5, "0", cache_status="exact", cost_saved=Decimal("0.000005"))
    record(acme, DAY2, "claude-3-5-haiku", 200, 100, "0.000560")
    record(acme, DAY2, "gpt-4o-mini", 1, 0, "0", outcome="error")
    record(world.outsider.tenant, DAY1, "gpt-4o", 9999, 9999, "9.99")  # never in acme's figures


def usage(api: Api, token: str, tenant: str = "acme", identifier: str = "acme", **params: str) -> Any:
    query = "&".join(f"{k}={v}" for k, v in ({"start": str(DAY1), "end": str(DAY2)} | params).items())
    return api.get(f"/api/v1/tenants/{identifier}/usage?{query}", tenant=tenant or None, token=token)


def check_march(body: dict[str, Any]) -> None:
    assert body["tenant"] == "acme" and body["period"] == {"start": "2025-03-10", "end": "2025-03-11"}
    assert body["tokens_used"] == 466 and body["api_calls"] == 4 and body["cache_hits"] == 1
    assert body["estimated_cost"] == "0.000605" and body["cache_savings"] == "0.000005"
    assert body["errors"] == 1
    assert set(body["rate_limit_remaining"]) == {"requests", "tokens"}
    by_model = {m["model"]: m for m in body["by_model"]}
    assert by_model["gpt-4o-mini"]["api_calls"] == 3 and by_model["claude-3-5-haiku"]["tokens_used"] == 300
    assert [(d["date"], d["api_calls"], d["estimated_cost"]) for d in body["by_day"]] == [
        ("2025-03-10", 2, "0.000045"),
        ("2025-03-11", 2, "0.000560"),
    ]


def test_usage_sums_the_ledger_for_the_tenant_admin(api: Api, world: World) -> None:
    seed(world)
    token = api.token(world.acme.admin.email, tenant="acme")
    response = usage(api, token)
    assert response.status_code == 200, response.content
    check_march(response.json())
    # By numeric id too.
    assert usage(api, token, identifier=str(world.acme.tenant.pk)).json()["api_calls"] == 4


def test_rollups_answer_the_same_and_the_ledger_since_is_added(api: Api, world: World) -> None:
    seed(world)
    result = rollup_tenant_usage(world.acme.tenant, now=timezone.now() + timedelta(seconds=settings.USAGE_ROLLUP_GRACE_SECONDS))
    assert result.rows >= 3
    again = rollup_tenant_usage(world.acme.tenant, now=timezone.now() + timedelta(seconds=settings.USAGE_ROLLUP_GRACE_SECONDS))
    with tenant_scope(world.acme.tenant.pk):
        assert DailyUsage.objects.filter(day__in=[DAY1, DAY2]).count() == 3  # rerun replaced, not added
    assert again.rolled_up_to is not None
    token = api.token(world.acme.admin.email, tenant="acme")
    check_march(usage(api, token).json())
    # A request answered after the rollup counts at once.
    today = timezone.now().date()
    before = usage(api, token, start=str(today), end=str(today)).json()["api_calls"]
    with schema_context(world.acme.tenant.schema_name):
        UsageRecord.objects.create(request_id="just-now", model="gpt-4o-mini", provider="p", prompt_tokens=3)
    assert usage(api, token, start=str(today), end=str(today)).json()["api_calls"] == before + 1


def test_raw_rows_past_retention_go_but_their_figures_stay(api: Api, world: World) -> None:
    seed(world)
    rollup_tenant_usage(world.acme.tenant, now=timezone.now() + timedelta(seconds=settings.USAGE_ROLLUP_GRACE_SECONDS))
    assert purge_raw_usage(world.acme.tenant) >= 4
    with schema_context(world.acme.tenant.schema_name):
        assert not UsageRecord.objects.filter(created_at__date__in=[DAY1, DAY2]).exists()
    check_march(usage(api, api.token(world.acme.admin.email, tenant="acme")).json())


def test_rollups_are_per_tenant_and_visible_to_staff(db: None, world: World) -> None:
    seed(world)
    for tenant in (world.acme.tenant, world.outsider.tenant):
        rollup_tenant_usage(tenant, now=timezone.now() + timedelta(seconds=settings.USAGE_ROLLUP_GRACE_SECONDS))
    with tenant_scope(ALL_TENANTS):
        tenants = set(DailyUsage.objects.filter(day=DAY1).values_list("tenant_id", flat=True))
    assert tenants == {world.acme.tenant.pk, world.outsider.tenant.pk}


def test_who_may_read_usage(api: Api, world: World) -> None:
    member = api.token(world.acme.member.email, tenant="acme")
    assert_error(usage(api, member), 403, "permission_denied")
    outsider_admin = api.token(world.outsider.admin.email, tenant="outsider")
    # Another tenant's usage does not exist, as far as a tenant admin can tell.
    assert_error(usage(api, outsider_admin, tenant="outsider", identifier="acme"), 404, "tenant_not_found")
    assert_error(usage(api, outsider_admin, tenant="outsider", identifier=str(world.acme.tenant.pk)), 404)
    # Platform staff (public host) see any tenant.
    staff = api.token(world.staff.email)
    assert usage(api, staff, tenant="", identifier="acme").status_code == 200
    assert_error(usage(api, staff, tenant="", identifier="nope"), 404, "tenant_not_found")
    # A key of a tenant admin with the "usage" scope reads its own tenant's usage.
    key = api_key_create(tenant=world.acme.tenant, user_id=world.acme.admin.pk, name="u", scopes=["usage"]).secret
    assert usage(api, key, tenant="").status_code == 200


def test_billing_group_reads_any_tenant(api: Api, world: World) -> None:
    user = user_create(email="billing@platform.test", password=PASSWORD)
    group, _ = Group.objects.get_or_create(name="billing")
    user.groups.add(group)
    token = api.token("billing@platform.test")
    seed(world)
    check_march(usage(api, token, tenant="", identifier="acme").json())
    # ...but an ordinary public-schema user does not.
    user_create(email="nobody@platform.test", password=PASSWORD)
    assert_error(usage(api, api.token("nobody@platform.test"), tenant="", identifier="acme"), 404)


def test_bad_periods_are_400(api: Api, world: World) -> None:
    token = api.token(world.acme.admin.email, tenant="acme")
    assert_error(usage(api, token, start="yesterday"), 400, "invalid_period")
    assert_error(usage(api, token, start="2025-03-12", end="2025-03-11"), 400, "invalid_period")
    assert_error(usage(api, token, start="2020-01-01", end="2025-01-01"), 400, "invalid_period")
    response = api.get("/api/v1/tenants/acme/usage?period=2025-03", tenant="acme", token=token)
    assert response.json()["period"] == {"start": "2025-03-01", "end": "2025-03-31"}
    assert_error(api.get("/api/v1/tenants/acme/usage?period=March", tenant="acme", token=token), 400)
