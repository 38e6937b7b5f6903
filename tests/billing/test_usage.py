"""GET /api/v1/tenants/{id}/usage against the sum of what was recorded, before and after rollups."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tenants.utils import schema_context

from billing.admission import admit, month_used_now, rate_limit_remaining
from billing.models import DailyUsage, UsageRecord
from billing.rls import ALL_TENANTS, tenant_scope
from billing.rollups import purge_raw_usage, rollup_tenant_usage
from billing.selectors import tenant_month_used
from tenants.models import Tenant
from tenants.services import api_key_create, user_create
from tests.conftest import PASSWORD, Api, World, assert_error

DAY1, DAY2 = date(2025, 3, 10), date(2025, 3, 11)


def record(
    tenant: Tenant, day: date, model: str, prompt: int, completion: int, cost: str, **extra: Any
) -> None:
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
        UsageRecord.objects.filter(pk=row.pk).update(
            created_at=datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
        )


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
    result = rollup_tenant_usage(
        world.acme.tenant, now=timezone.now() + timedelta(seconds=settings.USAGE_ROLLUP_GRACE_SECONDS)
    )
    assert result.rows >= 3
    again = rollup_tenant_usage(
        world.acme.tenant, now=timezone.now() + timedelta(seconds=settings.USAGE_ROLLUP_GRACE_SECONDS)
    )
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
    rollup_tenant_usage(
        world.acme.tenant, now=timezone.now() + timedelta(seconds=settings.USAGE_ROLLUP_GRACE_SECONDS)
    )
    assert purge_raw_usage(world.acme.tenant) >= 4
    with schema_context(world.acme.tenant.schema_name):
        assert not UsageRecord.objects.filter(created_at__date__in=[DAY1, DAY2]).exists()
    check_march(usage(api, api.token(world.acme.admin.email, tenant="acme")).json())


def test_rollups_are_per_tenant_and_visible_to_staff(db: None, world: World) -> None:
    seed(world)
    for tenant in (world.acme.tenant, world.outsider.tenant):
        rollup_tenant_usage(
            tenant, now=timezone.now() + timedelta(seconds=settings.USAGE_ROLLUP_GRACE_SECONDS)
        )
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
    key = api_key_create(
        tenant=world.acme.tenant, user_id=world.acme.admin.pk, name="u", scopes=["usage"]
    ).secret
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


def _dailyusage_reads(queries: CaptureQueriesContext) -> int:
    return sum('"billing_dailyusage"' in q["sql"] for q in queries.captured_queries)


def test_repeated_reads_skip_the_rollup_query_and_stay_exact_across_rollups(api: Api, world: World) -> None:
    seed(world)
    with schema_context(world.acme.tenant.schema_name):
        UsageRecord.objects.create(request_id="before-mark", model="gpt-4o", provider="p", prompt_tokens=5)
    grace = timedelta(seconds=settings.USAGE_ROLLUP_GRACE_SECONDS)
    rollup_tenant_usage(world.acme.tenant, now=timezone.now() + grace)
    token = api.token(world.acme.admin.email, tenant="acme")
    today = timezone.now().date()
    period = {"start": str(today - timedelta(days=1)), "end": str(today)}
    with CaptureQueriesContext(connection) as first:
        base = usage(api, token, **period).json()
    # The period's rows, and the month's for the quota (until Redis holds the month's counters).
    assert base["api_calls"] >= 1 and _dailyusage_reads(first) >= 1
    assert "gpt-4o" in {m["model"] for m in base["by_model"]}  # from the rollup rows
    with CaptureQueriesContext(connection) as second:
        assert usage(api, token, **period).json()["api_calls"] == base["api_calls"]
    assert _dailyusage_reads(second) == 0  # the rows read at this watermark, kept
    # A request after the watermark is in the live tail at once...
    with schema_context(world.acme.tenant.schema_name):
        UsageRecord.objects.create(
            request_id="after-mark", model="gpt-4o-mini", provider="p", prompt_tokens=7
        )
    assert usage(api, token, **period).json()["tokens_used"] == base["tokens_used"] + 7
    # ...and once a rollup takes it in, it is counted once, from the new watermark's rows.
    rollup_tenant_usage(world.acme.tenant, now=timezone.now() + grace + timedelta(seconds=1))
    with CaptureQueriesContext(connection) as after_rollup:
        body = usage(api, token, **period).json()
    assert (body["tokens_used"], body["api_calls"]) == (base["tokens_used"] + 7, base["api_calls"] + 1)
    assert _dailyusage_reads(after_rollup) == 1
    check_march(usage(api, token).json())  # another period, its own rows


def test_live_limits_match_admission_in_one_redis_round_trip_and_without_redis(
    api: Api, world: World, settings: Any
) -> None:
    for _ in range(3):
        async_to_sync(admit)(world.acme.tenant, None, 50, Decimal("0.001"))
    token = api.token(world.acme.admin.email, tenant="acme")
    body = usage(api, token).json()
    expected = rate_limit_remaining(world.acme.tenant)
    assert body["rate_limit_remaining"]["requests"] <= world.acme.tenant.requests_per_minute - 2
    assert abs(body["rate_limit_remaining"]["requests"] - expected["requests"]) <= 1
    assert abs(body["rate_limit_remaining"]["tokens"] - expected["tokens"]) <= 10
    tokens, cost = month_used_now(world.acme.tenant)
    assert body["quota"]["tokens_used_this_month"] == tokens
    assert Decimal(body["quota"]["cost_this_month"]) == cost.quantize(Decimal("0.000001"))
    # Redis unreachable: the same figures from this process and the database, not a 500.
    settings.ADMISSION_REDIS_URL = "redis://127.0.0.1:1/0"
    down = usage(api, token)
    assert down.status_code == 200
    assert down.json()["rate_limit_remaining"]["requests"] == world.acme.tenant.requests_per_minute
    assert down.json()["quota"]["tokens_used_this_month"] == tenant_month_used(world.acme.tenant)[0]
