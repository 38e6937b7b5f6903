"""`/api/v1/cache` (stats, purge) and the tenant admin's purge action, with cross-tenant checks."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import Client
from django_tenants.utils import schema_context

from config.redis import get_redis
from routing.cache.exact import forget_exact_cache
from routing.cache.service import cache_drain, cache_lookup, cache_store
from routing.models import CacheEntry
from routing.types import ChatMessage, ChatRequest, Usage
from tenants.models import Tenant
from tenants.services import api_key_create
from tests.conftest import PASSWORD, Api, World, assert_error


def _drop_cache_rows(world: World) -> None:
    """Other tests (live servers among them) commit cache entries of acme and outsider; these
    tests count entries, so they start from none (inside their own transaction)."""
    from routing.models import CacheEntry as _Entry

    for tenant in (world.acme.tenant, world.outsider.tenant):
        with schema_context(tenant.schema_name):
            _Entry.objects.all().delete()


@pytest.fixture(autouse=True)
def _clean_cache(db: None, world: World) -> Iterator[None]:
    _drop_cache_rows(world)

    def clear() -> None:
        redis = get_redis()
        keys = list(redis.scan_iter(f"{settings.REDIS_KEY_PREFIX}:cache:*", count=1000))
        if keys:
            redis.delete(*keys)
        forget_exact_cache()

    clear()
    yield
    clear()


def _ask(text: str) -> ChatRequest:
    return ChatRequest(model="gpt-4o-mini", messages=[ChatMessage(role="user", content=text)])


def _store(tenant: Tenant, text: str, answer: str) -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=10)
    assert async_to_sync(cache_store)(tenant, _ask(text), "gpt-4o-mini", answer, usage, Decimal("0.00001"))


def _status(tenant: Tenant, text: str) -> str:
    async def run() -> str:
        status = (await cache_lookup(tenant, _ask(text), "gpt-4o-mini", True))[1]
        await cache_drain()  # the hit counters are written in the background
        return status

    return async_to_sync(run)()


def _entries(tenant: Tenant) -> int:
    with schema_context(tenant.schema_name):
        return CacheEntry.objects.count()


def test_tenant_admin_purges_only_their_own_tenant(api: Api, world: World) -> None:
    acme, outsider = world.acme.tenant, world.outsider.tenant
    _store(acme, "What is the weather like on Mars?", "Cold.")
    _store(outsider, "What is the weather like on Mars?", "Cold (outsider).")
    token = api.token(world.acme.admin.email, tenant="acme")
    response = api.delete("/api/v1/cache", tenant="acme", token=token)
    assert response.status_code == 200, response.content
    assert response.json() == {"object": "cache.purge", "deleted": 1}
    assert _entries(acme) == 0 and _status(acme, "What is the weather like on Mars?") == "miss"
    assert _entries(outsider) == 1 and _status(outsider, "What is the weather like on Mars?") == "exact"


def test_purge_needs_a_tenant_admin(api: Api, world: World) -> None:
    _store(world.acme.tenant, "Who wrote Hamlet?", "Shakespeare.")
    member = api.token(world.acme.member.email, tenant="acme")
    assert_error(api.delete("/api/v1/cache", tenant="acme", token=member), 403)
    chat_key = api_key_create(tenant=world.acme.tenant, user_id=world.acme.admin.pk, name="chat only").secret
    assert_error(api.delete("/api/v1/cache", tenant="acme", token=chat_key), 403)
    assert_error(api.delete("/api/v1/cache", tenant="acme"), 401)
    assert _entries(world.acme.tenant) == 1


def test_a_token_of_one_tenant_cannot_purge_another(api: Api, world: World) -> None:
    _store(world.acme.tenant, "Who painted Guernica?", "Picasso.")
    outsider_admin = api.token(world.outsider.admin.email, tenant="outsider")
    response = api.delete("/api/v1/cache", tenant="acme", token=outsider_admin)
    assert response.status_code == 401, response.content
    assert _entries(world.acme.tenant) == 1


def test_stats_for_tenant_admins(api: Api, world: World) -> None:
    _store(world.acme.tenant, "What is pi?", "3.14159")
    assert _status(world.acme.tenant, "What is pi?") == "exact"
    token = api.token(world.acme.admin.email, tenant="acme")
    body = api.get("/api/v1/cache", tenant="acme", token=token).json()
    assert body["entries"] == 1 and body["enabled"] is True
    assert body["stats"]["stores"] == 1 and body["stats"]["saved_tokens"] == 20
    outsider = api.get(
        "/api/v1/cache", tenant="outsider", token=api.token(world.outsider.admin.email, tenant="outsider")
    )
    assert outsider.json()["entries"] == 0 and outsider.json()["stats"]["stores"] == 0


def test_admin_purge_action_needs_no_selection(db: None, world: World) -> None:
    _store(world.acme.tenant, "How far is the Moon?", "384,400 km.")
    _store(world.outsider.tenant, "How far is the Moon?", "384,400 km (outsider).")
    client = Client(HTTP_HOST="acme.localhost")
    client.post("/admin/login/", {"username": world.acme.admin.email, "password": PASSWORD})
    page = client.get("/admin/routing/cacheentry/")
    assert page.status_code == 200 and b"How far is the Moon?" in page.content
    response = client.post("/admin/routing/cacheentry/", {"action": "purge_cache", "index": 0})
    assert response.status_code == 302, response.content
    assert _entries(world.acme.tenant) == 0
    assert _entries(world.outsider.tenant) == 1
