"""The `/v1/` endpoints' own middleware chain (config/api_asgi.py, settings.API_MIDDLEWARE): the
same ids, headers, errors and tenant rules as the full chain, without its thread hops."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncRequestFactory

from config.api_asgi import ApiASGIHandler, by_path
from tenants.middleware import ApiTenantResolutionMiddleware
from tenants.selectors import forget_cached_tenants
from tests.conftest import GatewayServer, World

pytestmark = pytest.mark.django_db


def _ask(server: GatewayServer, key: str, **headers: str) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "chain"}], "max_tokens": 5},
        headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-cache", **headers},
        timeout=30,
    )


def test_live_api_answers_carry_the_full_chains_headers(
    gateway_server: GatewayServer, live_keys: dict[str, str], knobs: Any
) -> None:
    response = _ask(gateway_server, live_keys["acme"], **{"X-Request-ID": "chain-test-1"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "chain-test-1"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-gateway-provider"] == "fake-openai"
    assert float(response.headers["x-gateway-overhead-ms"]) >= 0
    assert len(response.headers["x-trace-id"]) == 32
    # The page chain still serves everything else (its session cookie, CSRF, frame options).
    page = httpx.get(gateway_server.url + "/healthz")
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"


def test_live_api_refusals_keep_the_one_error_shape(
    gateway_server: GatewayServer, live_keys: dict[str, str], world: World
) -> None:
    unknown = _ask(gateway_server, "sk-" + "0" * 64)
    assert unknown.status_code == 401
    assert unknown.json()["error"]["code"] == "invalid_api_key"
    # acme's key, named for another tenant: refused, not served in either schema.
    foreign = _ask(gateway_server, live_keys["acme"], **{"X-Tenant-ID": world.outsider.tenant.slug})
    assert foreign.status_code == 401
    assert foreign.json()["error"]["code"] == "invalid_api_key"
    missing = _ask(gateway_server, live_keys["acme"], **{"X-Tenant-ID": "no-such-tenant"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "tenant_not_found"


def test_tenant_resolution_on_the_loop_falls_back_to_a_thread_on_a_cache_miss(
    world: World, live_keys: dict[str, str]
) -> None:
    seen: dict[str, Any] = {}

    async def view(request: Any) -> Any:
        seen["tenant"] = getattr(request, "tenant", None)
        seen["key"] = getattr(request, "api_key", None)
        from django.http import HttpResponse

        return HttpResponse("ok")

    middleware = ApiTenantResolutionMiddleware(view)
    request = AsyncRequestFactory().post(
        "/v1/chat/completions", headers={"Authorization": f"Bearer {live_keys['acme']}"}
    )
    forget_cached_tenants()  # the key lookup needs the database: not allowed on the loop
    response = asyncio.run(middleware(request))
    # The lookup ran in asgiref's sync thread: give its connection back before the test ends.
    asyncio.run(sync_to_async(connections.close_all)())
    assert response.status_code == 200, response.content
    assert seen["tenant"] is not None, seen
    assert seen["tenant"].pk == world.acme.tenant.pk
    assert seen["key"] is not None and seen["key"].tenant_id == world.acme.tenant.pk


def test_dispatch_sends_only_api_paths_to_the_api_chain() -> None:
    calls: list[str] = []

    def app(name: str) -> Any:
        async def handle(scope: Any, receive: Any, send: Any) -> None:
            calls.append(name + " " + scope["path"])

        return handle

    dispatch = by_path(("/v1/",), app("api"), app("full"))

    async def send_all() -> None:
        for path in ("/v1/chat/completions", "/v1/models", "/api/v1/conversations", "/v1", "/"):
            await dispatch({"type": "http", "path": path}, None, None)

    asyncio.run(send_all())
    assert calls == [
        "api /v1/chat/completions",
        "api /v1/models",
        "full /api/v1/conversations",
        "full /v1",
        "full /",
    ]


def test_api_chain_is_the_configured_one() -> None:
    from django.conf import settings

    handler = ApiASGIHandler()
    chain: list[str] = []
    current: Any = getattr(handler, "_middleware_chain")  # noqa: B009
    while current is not None and len(chain) < 20:
        current = getattr(current, "__wrapped__", current)  # Django's exception wrapper
        chain.append(type(current).__module__ + "." + type(current).__qualname__)
        current = getattr(current, "get_response", None)
    assert chain[:-1] == list(settings.API_MIDDLEWARE)
    assert "django.contrib.sessions.middleware.SessionMiddleware" not in chain
    # Building it left the full chain alone.
    assert "django.contrib.sessions.middleware.SessionMiddleware" in settings.MIDDLEWARE
