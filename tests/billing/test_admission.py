"""Admission against the real Redis: rate limits, reservations, quotas, headers and refusals.

Tests are synchronous and call the async API through async_to_sync, so the database work that
admission does (quota loading, audit records) runs on the test's own connection and is rolled
back with it.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django_tenants.utils import schema_context

from billing.admission import Admission, admit, rate_limit_remaining, release, settle
from billing.limits import reset_header
from billing.models import AuditEvent, UsageRecord
from billing.rls import tenant_scope
from billing.selectors import tenant_month_used
from config.errors import ApiError
from tenants.models import ApiKey, Tenant
from tenants.selectors import api_key_get_active
from tenants.services import api_key_create, api_key_update_limits
from tests.billing.conftest import limited
from tests.conftest import World

pytestmark = pytest.mark.usefixtures("db")


def _admit(tenant: Tenant, api_key: ApiKey | None = None, tokens: int = 10, cost: str = "0") -> Admission:
    return async_to_sync(admit)(tenant, api_key, tokens, Decimal(cost))


def _refusal(tenant: Tenant, api_key: ApiKey | None = None, tokens: int = 10, cost: str = "0") -> ApiError:
    with pytest.raises(ApiError) as refused:
        _admit(tenant, api_key, tokens, cost)
    return refused.value


def _audit_actions(tenant: Tenant) -> list[str]:
    with tenant_scope(tenant.pk):
        return list(AuditEvent.objects.values_list("action", flat=True))


def test_requests_per_minute_are_admitted_up_to_the_limit_then_429_with_retry_after(world: World) -> None:
    tenant = limited(world.acme.tenant, requests_per_minute=3, tokens_per_minute=10_000)
    admitted = [_admit(tenant) for _ in range(3)]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in admitted] == ["2", "1", "0"]
    assert admitted[0].headers["x-ratelimit-limit-requests"] == "3"
    assert admitted[0].headers["x-ratelimit-limit-tokens"] == "10000"
    assert admitted[0].headers["x-ratelimit-remaining-tokens"] == "9990"
    assert admitted[0].headers["x-ratelimit-reset-tokens"].endswith(("ms", "s"))
    error = _refusal(tenant)
    assert (error.status_code, error.code, error.error_type) == (
        429,
        "rate_limit_exceeded",
        "rate_limit_error",
    )
    # One request comes back every 20 s at 3 a minute.
    assert 1 <= int(error.headers["Retry-After"]) <= 20
    assert error.headers["x-ratelimit-remaining-requests"] == "0"


def test_the_other_tenant_has_its_own_bucket(world: World) -> None:
    acme = limited(world.acme.tenant, requests_per_minute=1)
    _admit(acme)
    assert _refusal(acme).status_code == 429
    _admit(limited(world.outsider.tenant, requests_per_minute=1))


def test_tokens_are_reserved_before_and_settled_with_real_use_after(world: World) -> None:
    tenant = limited(world.acme.tenant, requests_per_minute=100, tokens_per_minute=1000)
    first = _admit(tenant, tokens=600)
    assert 400 <= int(first.headers["x-ratelimit-remaining-tokens"]) <= 402
    assert _refusal(tenant, tokens=600).status_code == 429  # 400 left
    async_to_sync(settle)(first, 100, Decimal("0.001"))  # 500 of the 600 come back
    assert 900 <= rate_limit_remaining(tenant)["tokens"] <= 910
    async_to_sync(settle)(first, 100, Decimal("0.001"))  # a second settle changes nothing
    assert rate_limit_remaining(tenant)["tokens"] <= 910
    second = _admit(tenant, tokens=600)
    async_to_sync(release)(second)  # failed before any token: all 600 come back
    assert rate_limit_remaining(tenant)["tokens"] >= 900


def test_using_more_than_reserved_leaves_a_debt(world: World) -> None:
    tenant = limited(world.acme.tenant, tokens_per_minute=1000)
    admission = _admit(tenant, tokens=100)
    async_to_sync(settle)(admission, 1500, Decimal(0))  # the estimate was far too low
    assert rate_limit_remaining(tenant)["tokens"] == 0
    assert _refusal(tenant, tokens=1).status_code == 429


def test_a_request_larger_than_the_token_limit_is_refused_without_retry_after(world: World) -> None:
    tenant = limited(world.acme.tenant, tokens_per_minute=1000)
    error = _refusal(tenant, tokens=1001)
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert "Request too large" in error.message and "Retry-After" not in error.headers
    _admit(tenant, tokens=1000)  # nothing was taken by the refusal


def test_an_api_key_can_narrow_the_tenant_limit(world: World) -> None:
    tenant = limited(world.acme.tenant, requests_per_minute=100)
    narrow = api_key_create(
        tenant=world.acme.tenant, user_id=world.acme.member.pk, name="n", requests_per_minute=2
    )
    other = api_key_create(tenant=world.acme.tenant, user_id=world.acme.member.pk, name="o")
    first = _admit(tenant, narrow.api_key)
    assert first.headers["x-ratelimit-limit-requests"] == "2"  # the tighter bucket is reported
    _admit(tenant, narrow.api_key)
    error = _refusal(tenant, narrow.api_key)
    assert "API key" in error.message
    assert _admit(tenant, other.api_key).headers["x-ratelimit-remaining-requests"] == "97"


def test_token_quota_admits_while_anything_is_left_then_402_until_raised(world: World) -> None:
    baseline, _ = tenant_month_used(world.acme.tenant)
    tenant = limited(world.acme.tenant, monthly_token_quota=baseline + 1000)
    first = _admit(tenant, tokens=600)
    assert "x-quota-warning" not in first.headers
    second = _admit(tenant, tokens=600)  # 600 < 1000 committed before it: admitted
    assert "tenant monthly quota 120% used" in second.headers["x-quota-warning"]
    error = _refusal(tenant, tokens=600)
    assert (error.status_code, error.code, error.error_type) == (402, "quota_exceeded", "insufficient_quota")
    assert "until the month ends or an admin raises the quota" in error.message
    _refusal(tenant, tokens=1)  # refused again, but audited once
    assert _audit_actions(tenant).count("quota.warning") == 1
    assert _audit_actions(tenant).count("quota.exhausted") == 1
    # Settling with less than reserved frees budget.
    async_to_sync(settle)(first, 100, Decimal(0))
    async_to_sync(release)(second)
    _admit(tenant, tokens=600)  # 100 used + 600 reserved
    # An admin raising the quota lets requests through at once.
    raised = limited(tenant, monthly_token_quota=baseline + 5000)
    assert _admit(raised, tokens=600)


def test_quota_starts_from_the_usage_already_in_the_database(world: World) -> None:
    baseline, _ = tenant_month_used(world.acme.tenant)
    with schema_context(world.acme.tenant.schema_name):
        UsageRecord.objects.create(
            request_id="earlier", model="m", provider="p", prompt_tokens=500, completion_tokens=400
        )
    tenant = limited(world.acme.tenant, monthly_token_quota=baseline + 1000)
    admission = _admit(tenant, tokens=50)
    assert "95%" in admission.headers["x-quota-warning"]
    _admit(tenant, tokens=50)  # 950 committed before it
    assert _refusal(tenant, tokens=50).code == "quota_exceeded"


def test_cost_quota(world: World) -> None:
    _, baseline = tenant_month_used(world.acme.tenant)
    tenant = limited(world.acme.tenant, monthly_cost_quota=baseline + Decimal("0.010"))
    first = _admit(tenant, cost="0.006")
    _admit(tenant, cost="0.006")
    error = _refusal(tenant, cost="0.006")
    assert error.code == "quota_exceeded" and "cost quota" in error.message
    async_to_sync(settle)(first, 10, Decimal("0.001"))  # 0.001 used + 0.006 reserved
    _admit(tenant, cost="0.001")  # 0.008
    async_to_sync(release)(first)  # already settled: gives nothing back a second time
    _admit(tenant, cost="0.001")  # 0.009
    _admit(tenant, cost="0.001")  # 0.009 committed before it: admitted, 0.010 after
    assert _refusal(tenant, cost="0.001").code == "quota_exceeded"


def _key_audits(tenant: Tenant, api_key: ApiKey, action: str) -> list[dict[str, object]]:
    with tenant_scope(tenant.pk):
        details = AuditEvent.objects.filter(action=action).values_list("detail", flat=True)
        return [d for d in details if d.get("api_key_id") == api_key.pk]


def test_api_key_token_quota_warns_refuses_and_can_be_raised(world: World) -> None:
    created = api_key_create(
        tenant=world.acme.tenant, user_id=world.acme.member.pk, name="q", monthly_token_quota=100
    )
    first = _admit(world.acme.tenant, created.api_key, tokens=70)
    assert "x-quota-warning" not in first.headers  # 70 of 100
    second = _admit(world.acme.tenant, created.api_key, tokens=20)  # 70 committed before it
    assert second.headers["x-quota-warning"] == "API key monthly quota 90% used"
    _admit(world.acme.tenant, created.api_key, tokens=20)  # admitted while anything is left: 110
    error = _refusal(world.acme.tenant, created.api_key, tokens=1)
    assert (error.status_code, error.code, error.error_type) == (402, "quota_exceeded", "insufficient_quota")
    assert "tokens quota of this API key" in error.message
    assert len(_key_audits(world.acme.tenant, created.api_key, "quota.warning")) == 1
    assert len(_key_audits(world.acme.tenant, created.api_key, "quota.exhausted")) == 1
    _admit(world.acme.tenant, None, tokens=80)  # the tenant itself is not limited
    api_key_update_limits(created.api_key, monthly_token_quota=1000)
    raised = api_key_get_active(created.secret)  # as the gateway reads the key
    assert raised is not None and raised.monthly_token_quota == 1000
    assert "x-quota-warning" not in _admit(world.acme.tenant, raised, tokens=80).headers


def test_api_key_cost_quota_warns_refuses_with_402_and_can_be_raised(world: World) -> None:
    created = api_key_create(
        tenant=world.acme.tenant,
        user_id=world.acme.member.pk,
        name="budget",
        monthly_cost_quota=Decimal("0.0100"),
    )
    other = api_key_create(tenant=world.acme.tenant, user_id=world.acme.member.pk, name="other")
    first = _admit(world.acme.tenant, created.api_key, cost="0.004")
    assert "x-quota-warning" not in first.headers  # 40 percent
    second = _admit(world.acme.tenant, created.api_key, cost="0.0045")
    assert second.headers["x-quota-warning"] == "API key monthly quota 85% used"
    [warning] = _key_audits(world.acme.tenant, created.api_key, "quota.warning")
    assert warning["scope"] == "API key" and warning["cost_limit"] == "0.0100"
    assert warning["cost_committed"] == "0.0085"
    _admit(world.acme.tenant, created.api_key, cost="0.004")  # 0.0085 committed: admitted, 0.0125 after
    error = _refusal(world.acme.tenant, created.api_key, cost="0.0001")
    assert (error.status_code, error.code, error.error_type) == (402, "quota_exceeded", "insufficient_quota")
    assert "Monthly cost quota of this API key is used up (0.0100 USD)" in error.message
    _refusal(world.acme.tenant, created.api_key, cost="0")  # nothing left, even for a free request
    [exhausted] = _key_audits(world.acme.tenant, created.api_key, "quota.exhausted")
    assert exhausted["exhausted"] == "cost"
    # Neither the tenant nor its other keys are held back by this key's budget.
    _admit(world.acme.tenant, None, cost="0.004")
    _admit(world.acme.tenant, other.api_key, cost="0.004")
    # Settling with less than reserved gives budget back.
    async_to_sync(settle)(first, 10, Decimal("0.001"))  # 0.0095 committed
    _admit(world.acme.tenant, created.api_key, cost="0.004")
    assert _refusal(world.acme.tenant, created.api_key, cost="0.004").status_code == 402
    # An admin raising the budget lets the key's requests through at once.
    api_key_update_limits(created.api_key, monthly_cost_quota=Decimal("1.0000"))
    raised = api_key_get_active(created.secret)
    assert raised is not None and raised.monthly_cost_quota == Decimal("1.0000")
    assert "x-quota-warning" not in _admit(world.acme.tenant, raised, cost="0.004").headers


def test_api_key_cost_budget_starts_from_the_keys_spend_in_the_database(world: World) -> None:
    created = api_key_create(
        tenant=world.acme.tenant,
        user_id=world.acme.member.pk,
        name="spent",
        monthly_cost_quota=Decimal("0.0100"),
    )
    with schema_context(world.acme.tenant.schema_name):
        UsageRecord.objects.create(
            request_id="key-earlier",
            api_key_id=created.api_key.pk,
            model="m",
            provider="p",
            cost=Decimal("0.0098"),
        )
        UsageRecord.objects.create(request_id="other-earlier", model="m", provider="p", cost=Decimal("5"))
    admission = _admit(world.acme.tenant, created.api_key, cost="0.001")
    assert admission.headers["x-quota-warning"] == "API key monthly quota 108% used"
    assert _refusal(world.acme.tenant, created.api_key, cost="0.001").code == "quota_exceeded"


def test_reset_header_uses_openai_durations() -> None:
    assert [reset_header(ms) for ms in (0, 850, 1000, 12_500, 60_000, 90_250)] == [
        "0s",
        "850ms",
        "1s",
        "12.5s",
        "1m0s",
        "1m30.25s",
    ]


def test_hundreds_of_admissions_at_once_share_redis_instead_of_failing_open(world: World) -> None:
    """More admissions in flight than redis-py's default pool allows (100) wait for a connection;
    none may take Redis for unreachable and fall back to the local limits."""
    tenant = limited(world.acme.tenant, requests_per_minute=10_000, tokens_per_minute=10_000_000)

    async def burst() -> list[Admission]:
        return await asyncio.gather(*(admit(tenant, None, 10, Decimal(0)) for _ in range(300)))

    admitted = async_to_sync(burst)()
    assert len(admitted) == 300
    assert {a.mode for a in admitted} == {"redis"}
    # All counted in the one shared bucket (which refills meanwhile, so not to the unit).
    assert min(int(a.headers["x-ratelimit-remaining-requests"]) for a in admitted) < 10_000 - 100
