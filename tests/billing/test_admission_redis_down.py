"""What admission does when its Redis cannot be reached (docs/billing.md: fail open by default)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from billing.admission import admit, settle
from billing.selectors import tenant_month_used
from config.errors import ApiError
from tests.billing.conftest import limited
from tests.conftest import World

pytestmark = pytest.mark.usefixtures("db")

# Nothing listens on port 1: connections are refused at once, a real outage.
DEAD_REDIS = "redis://127.0.0.1:1/0"


def test_fail_open_admits_against_this_process_limits(world: World, settings: Any) -> None:
    settings.ADMISSION_REDIS_URL = DEAD_REDIS
    tenant = limited(world.acme.tenant, requests_per_minute=2, tokens_per_minute=1000)
    first = async_to_sync(admit)(tenant, None, 600, Decimal(0))
    assert first.mode == "local"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-remaining-tokens"] == "400"
    async_to_sync(settle)(first, 100, Decimal(0))  # settles locally, gives 500 back
    second = async_to_sync(admit)(tenant, None, 600, Decimal(0))
    assert 300 <= int(second.headers["x-ratelimit-remaining-tokens"]) <= 301
    with pytest.raises(ApiError) as refused:
        async_to_sync(admit)(tenant, None, 1, Decimal(0))
    assert refused.value.status_code == 429 and "Retry-After" in refused.value.headers


def test_fail_open_enforces_a_share_of_each_limit(world: World, settings: Any) -> None:
    settings.ADMISSION_REDIS_URL = DEAD_REDIS
    settings.ADMISSION_LOCAL_LIMIT_SHARE = 0.5  # e.g. two replicas
    tenant = limited(world.acme.tenant, requests_per_minute=4)
    for _ in range(2):
        async_to_sync(admit)(tenant, None, 1, Decimal(0))
    with pytest.raises(ApiError):
        async_to_sync(admit)(tenant, None, 1, Decimal(0))


def test_fail_open_still_enforces_quotas_from_the_database(world: World, settings: Any) -> None:
    settings.ADMISSION_REDIS_URL = DEAD_REDIS
    baseline, _ = tenant_month_used(world.acme.tenant)
    tenant = limited(world.acme.tenant, monthly_token_quota=baseline + 100)
    async_to_sync(admit)(tenant, None, 80, Decimal(0))
    warned = async_to_sync(admit)(tenant, None, 80, Decimal(0))
    assert "x-quota-warning" in warned.headers
    with pytest.raises(ApiError) as refused:
        async_to_sync(admit)(tenant, None, 80, Decimal(0))
    assert refused.value.status_code == 402 and refused.value.code == "quota_exceeded"


def test_fail_closed_refuses_with_503(world: World, settings: Any) -> None:
    settings.ADMISSION_REDIS_URL = DEAD_REDIS
    settings.ADMISSION_REDIS_FAILURE_MODE = "closed"
    with pytest.raises(ApiError) as refused:
        async_to_sync(admit)(world.acme.tenant, None, 1, Decimal(0))
    error = refused.value
    assert (error.status_code, error.code, error.error_type) == (503, "admission_unavailable", "service_unavailable")
    assert int(error.headers["Retry-After"]) >= 1


def test_goes_back_to_redis_once_it_answers_again(world: World, settings: Any) -> None:
    settings.ADMISSION_REDIS_RETRY_SECONDS = 0.0
    real = settings.ADMISSION_REDIS_URL
    settings.ADMISSION_REDIS_URL = DEAD_REDIS
    assert async_to_sync(admit)(world.acme.tenant, None, 1, Decimal(0)).mode == "local"
    settings.ADMISSION_REDIS_URL = real
    assert async_to_sync(admit)(world.acme.tenant, None, 1, Decimal(0)).mode == "redis"
