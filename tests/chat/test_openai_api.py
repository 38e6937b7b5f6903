"""`/v1/chat/completions` and `/v1/models` through the whole gateway, against the fake upstream."""

from __future__ import annotations

from decimal import Decimal
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
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]} | body
    # These tests are about routing and billing, not the cache: every call must reach a model.
    return api.post("/v1/chat/completions", payload, token=key, headers={"Cache-Control": "no-cache"})


def _set_tenant(world: World, **fields: Any) -> None:
    """Changes acme in the database only (the session's `world` objects stay as they were)."""
    from tenants.models import Tenant
    from tenants.selectors import forget_cached_tenants

    Tenant.objects.filter(pk=world.acme.tenant.pk).update(**fields)
    forget_cached_tenants()


def _usage_rows(world: World) -> list[UsageRecord]:
    """Usage rows this test wrote (its transaction's; rows other tests committed are older)."""
    with schema_context(world.acme.tenant.schema_name):
        return list(UsageRecord.objects.filter(created_at__gte=_test_started()).order_by("created_at"))


def test_non_streamed_answer_has_openai_shape_headers_and_one_usage_row(
    api: Api, world: World, acme_key: str, knobs: Any
) -> None:
    response = _chat(api, acme_key, max_tokens=50)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert response.headers["x-gateway-provider"] == "fake-openai"
    assert response.headers["x-gateway-model"] == "gpt-4o-mini"
    assert response.headers["x-gateway-cache"] == "miss"
    assert float(response.headers["x-gateway-overhead-ms"]) >= 0
    assert response.headers["x-request-id"]
    [row] = _usage_rows(world)
    assert (row.prompt_tokens, row.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    expected = (
        Decimal(usage["prompt_tokens"]) * Decimal("0.15")
        + Decimal(usage["completion_tokens"]) * Decimal("0.60")
    ) / 1_000_000
    assert row.cost == expected.quantize(Decimal("0.000001"))
    assert row.user_id == world.acme.member.pk and row.outcome == "ok" and not row.streamed
    assert knobs.count("openai", "gpt-4o-mini", "total") == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": -1}, "top_p"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ],
)
def test_bad_requests_are_400_with_the_param(
    api: Api, acme_key: str, body: dict[str, Any], param: str
) -> None:
    error = assert_error(_chat(api, acme_key, **body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_invalid_json_is_400(api: Api, acme_key: str) -> None:
    response = api.client.post(
        "/v1/chat/completions",
        data="{not json",
        content_type="application/json",
        headers={"Authorization": f"Bearer {acme_key}"},
    )
    assert_error(response, 400, "invalid_json")


def test_unknown_and_disallowed_models(api: Api, world: World, acme_key: str) -> None:
    assert_error(_chat(api, acme_key, model="gpt-9"), 404, "model_not_found")
    _set_tenant(world, allowed_models=["gpt-4o-mini"])
    assert_error(_chat(api, acme_key, model="gpt-4o"), 403, "model_not_allowed")


def test_models_lists_only_allowed_models(api: Api, world: World, acme_key: str) -> None:
    listed = {m["id"] for m in api.get("/v1/models", token=acme_key).json()["data"]}
    assert {"gpt-4o", "gpt-4o-mini", "claude-3-5-haiku"} <= listed
    _set_tenant(world, allowed_models=["claude-3-5-haiku"])
    assert [m["id"] for m in api.get("/v1/models", token=acme_key).json()["data"]] == ["claude-3-5-haiku"]


def test_no_credentials_and_foreign_keys_are_refused(api: Api, world: World, acme_key: str) -> None:
    assert_error(api.post("/v1/chat/completions", {"model": "x", "messages": []}, tenant="acme"), 401)
    assert_error(
        api.post("/v1/chat/completions", {"model": "x", "messages": []}, tenant="outsider", token=acme_key),
        401,
    )


def test_each_provider_protocol_answers_through_the_gateway(api: Api, acme_key: str, knobs: Any) -> None:
    for model, provider in (
        ("claude-3-5-haiku", "fake-anthropic"),
        ("llama-3.1-8b", "fake-ollama"),
        ("smollm2-135m", "fake-llama"),
    ):
        response = _chat(api, acme_key, model=model)
        assert response.status_code == 200, (model, response.content)
        assert response.headers["x-gateway-provider"] == provider
        assert response.json()["choices"][0]["message"]["content"]
        assert response.json()["usage"]["completion_tokens"] > 0
