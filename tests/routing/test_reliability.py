"""Fault scenarios driven through the fake upstream's knobs, end to end through the gateway."""

from __future__ import annotations

from typing import Any

import pytest
from django_tenants.utils import schema_context

from billing.models import UsageRecord
from tests.conftest import Api, World, assert_error

pytestmark = pytest.mark.usefixtures("gateway")


def _test_started() -> Any:
    # Postgres' now() is the start of the current transaction, i.e. of this test.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def _chat(api: Api, key: str, **body: Any) -> Any:
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "tell me something"}]} | body
    # These tests are about routing and billing, not the cache: every call must reach a model.
    return api.post("/v1/chat/completions", payload, token=key, headers={"Cache-Control": "no-cache"})


def _rows(world: World) -> list[UsageRecord]:
    """Usage rows this test wrote (its transaction's; rows other tests committed are older)."""
    with schema_context(world.acme.tenant.schema_name):
        return list(UsageRecord.objects.filter(created_at__gte=_test_started()).order_by("created_at"))


def test_primary_failing_falls_back_opens_circuit_and_recovers(
    api: Api, world: World, acme_key: str, knobs: Any, settings: Any
) -> None:
    settings.CIRCUIT_BREAKER_THRESHOLD = 3
    # Long enough that the three requests below cannot outlast it, even on a loaded machine.
    settings.CIRCUIT_BREAKER_COOLDOWN_SECONDS = 3.0
    knobs.knobs.update({"provider": "openai", "model": "gpt-4o-mini", "error_status": 500})
    for _ in range(3):
        response = _chat(api, acme_key)
        assert response.status_code == 200, response.content
        assert response.headers["x-gateway-model"] == "claude-3-5-haiku"  # the tenant's fallback
        assert response.headers["x-gateway-provider"] == "fake-anthropic"
        assert response.headers["x-gateway-route"].endswith("claude-3-5-haiku=ok")
    calls_when_open = knobs.count("openai", "gpt-4o-mini", "total")
    assert calls_when_open == 3  # one failed attempt each, then the circuit opened
    # Open: the primary is not even tried.
    assert _chat(api, acme_key).headers["x-gateway-model"] == "claude-3-5-haiku"
    assert knobs.count("openai", "gpt-4o-mini", "total") == calls_when_open
    # The primary heals; after the cool-down a probe goes through and closes the circuit.
    knobs.knobs.clear()
    import time

    time.sleep(3.2)
    assert _chat(api, acme_key).headers["x-gateway-model"] == "gpt-4o-mini"
    assert _chat(api, acme_key).headers["x-gateway-model"] == "gpt-4o-mini"
    rows = _rows(world)
    assert [r.model for r in rows] == ["claude-3-5-haiku"] * 4 + ["gpt-4o-mini"] * 2
    assert all(r.outcome == "ok" for r in rows)


def test_429_with_retry_after_is_retried_on_the_same_model(
    api: Api, world: World, acme_key: str, knobs: Any
) -> None:
    knobs.knobs.update(
        {
            "provider": "openai",
            "model": "gpt-4o-mini",
            "error_status": 429,
            "retry_after": 0.3,
            "fail_next": 1,
        }
    )
    import time

    started = time.monotonic()
    response = _chat(api, acme_key)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.headers["x-gateway-model"] == "gpt-4o-mini"
    assert knobs.count("openai", "gpt-4o-mini", "total") == 2
    assert elapsed >= 0.3  # Retry-After is a floor for the backoff (a lower bound, not a timing race)
    [row] = _rows(world)
    assert row.attempts == 2


def test_slow_provider_hits_the_deadline_with_a_clear_timeout(
    api: Api, world: World, acme_key: str, knobs: Any, settings: Any
) -> None:
    settings.REQUEST_TIMEOUT_SECONDS = 0.5
    knobs.knobs.update({"provider": "*", "model": "*", "latency_ms": 3000, "ttft_ms": 3000})
    error = assert_error(_chat(api, acme_key), 504, "timeout")
    assert "deadline" in error["message"] or "time" in error["message"]
    assert_error(_chat(api, acme_key, stream=True), 504, "timeout")
    assert _rows(world) == []


def test_all_models_failing_is_a_502_naming_what_was_tried(api: Api, acme_key: str, knobs: Any) -> None:
    knobs.knobs.update({"provider": "*", "model": "*", "error_status": 503})
    error = assert_error(_chat(api, acme_key), 502, "upstream_error")
    assert "gpt-4o-mini" in error["message"] and "claude-3-5-haiku" in error["message"]


def test_provider_400_is_not_retried_nor_fallen_back(api: Api, acme_key: str, knobs: Any) -> None:
    knobs.knobs.update({"provider": "openai", "model": "gpt-4o-mini", "error_status": 400})
    assert_error(_chat(api, acme_key), 400, "upstream_bad_request")
    assert knobs.count("openai", "gpt-4o-mini", "total") == 1
    assert knobs.count("anthropic", "claude-3-5-haiku-latest", "total") == 0


def test_bulkhead_refuses_beyond_the_tenant_cap(api: Api, world: World, acme_key: str) -> None:
    import asyncio

    from routing.bulkhead import Bulkhead
    from tenants.models import Tenant
    from tenants.selectors import forget_cached_tenants

    Tenant.objects.filter(pk=world.acme.tenant.pk).update(max_concurrent_requests=1)
    forget_cached_tenants()
    holder = Bulkhead("acme", 1, 30)
    assert asyncio.run(holder.acquire())
    response = _chat(api, acme_key)
    error = assert_error(response, 429, "concurrency_limit_exceeded")
    assert error["type"] == "rate_limit_error" and response.headers["Retry-After"] == "1"
    asyncio.run(holder.release())
    assert _chat(api, acme_key).status_code == 200
