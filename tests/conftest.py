"""Shared fixtures: two tenants created once per session (schemas are slow to make), each with an
admin and a member, platform staff on the public schema, and an HTTP helper.

`acme` is the tenant tests act in; `outsider` exists so every test can check isolation.
Session data is committed; each test runs in a transaction that is rolled back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from billing.selectors import forget_cached_rollups
from tenants.models import Tenant
from tenants.schema import activate_public
from tenants.selectors import forget_cached_tenants
from tenants.services import api_key_create, tenant_create, user_create

PASSWORD = "correct-horse-battery-staple"


@dataclass
class Person:
    email: str
    pk: int
    tenant: Tenant | None


@dataclass
class TenantWorld:
    tenant: Tenant
    admin: Person
    member: Person


@dataclass
class World:
    staff: Person
    acme: TenantWorld
    outsider: TenantWorld


def _make_tenant(slug: str) -> TenantWorld:
    tenant = Tenant.objects.filter(slug=slug).first() or tenant_create(
        name=slug.title(), slug=slug, admin_email=f"admin@{slug}.test", admin_password=PASSWORD
    )
    with schema_context(tenant.schema_name):
        from django.contrib.auth import get_user_model

        User = get_user_model()
        admin = User.objects.get(username=f"admin@{slug}.test")
        member = User.objects.filter(username=f"member@{slug}.test").first() or user_create(
            email=f"member@{slug}.test", password=PASSWORD
        )
    return TenantWorld(
        tenant=tenant,
        admin=Person(admin.email, admin.pk, tenant),
        member=Person(member.email, member.pk, tenant),
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that touches the shared tenants needs the test database.

    pytest-django only creates the test database when some collected test asks for it; a run of
    just live-server tests would otherwise write the `world` into the development database.
    """
    for item in items:
        if "world" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.django_db)


@pytest.fixture(scope="session")
def world(django_db_setup: None, django_db_blocker: Any) -> World:
    from django.db import connection

    # Belt and braces: never seed (and later wipe the catalog of) a database that is not a test one.
    assert str(connection.settings_dict["NAME"]).startswith("test"), connection.settings_dict["NAME"]
    _flush_all_test_redis()  # a fresh database deserves a fresh Redis (cache, limits, runs)
    with django_db_blocker.unblock():
        from django.contrib.auth import get_user_model

        User = get_user_model()
        staff = User.objects.filter(username="staff@platform.test").first() or user_create(
            email="staff@platform.test", password=PASSWORD, is_admin=True
        )
        return World(
            staff=Person(staff.email, staff.pk, None),
            acme=_make_tenant("acme"),
            outsider=_make_tenant("outsider"),
        )


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Iterator[None]:
    forget_cached_tenants()
    forget_cached_rollups()
    yield
    forget_cached_tenants()
    forget_cached_rollups()
    activate_public()


class Api:
    """A thin JSON client over Django's test client: `api.post(path, body, tenant=, token=)`."""

    def __init__(self) -> None:
        self.client = Client()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        tenant: str | None = None,
        token: str | None = None,
        host: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        extra: dict[str, str] = dict(headers or {})
        if tenant:
            extra["X-Tenant-ID"] = tenant
        if token:
            extra["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"headers": extra}
        if host:
            kwargs["HTTP_HOST"] = host
        if body is not None:
            kwargs["data"] = json.dumps(body)
            kwargs["content_type"] = "application/json"
        response = getattr(self.client, method.lower())(path, **kwargs)
        activate_public()
        return response

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def token(self, email: str, tenant: str | None = None, password: str = PASSWORD) -> str:
        response = self.post("/api/v1/auth/token", {"email": email, "password": password}, tenant=tenant)
        assert response.status_code == 200, response.content
        return str(response.json()["access"])


@pytest.fixture
def api(db: None, world: World) -> Api:
    return Api()


@pytest.fixture
def acme_key(db: None, world: World) -> str:
    """A chat key of acme's member (rolled back after the test)."""
    return api_key_create(tenant=world.acme.tenant, user_id=world.acme.member.pk, name="test").secret


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Checks the one error shape every endpoint uses."""
    assert response.status_code == status, (response.status_code, response.content)
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"type", "message", "code"} <= set(error), error
    assert error["message"], error
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


# --- the gateway: fake upstream, catalog pointing at it, a live server ----------------------

FAKE_KEY_ENV = "FAKE_PROVIDER_API_KEY"


@pytest.fixture(scope="session")
def upstream() -> Iterator[Any]:
    """The fake provider (OpenAI, Anthropic and Ollama protocols) on a free loopback port."""
    from routing.fake_upstream import start_in_thread

    running = start_in_thread()
    yield running
    running.stop()


@pytest.fixture
def knobs(upstream: Any) -> Iterator[Any]:
    """The fake upstream's knobs and stats, reset after the test."""
    upstream.state.knobs.clear()
    upstream.state.stats.reset()
    yield upstream.state
    upstream.state.knobs.clear()
    upstream.state.stats.reset()


GATEWAY_MODELS = [
    # name, provider, upstream model, tier, vision, logprobs, $ in, $ out, $ cached in (per Mtok)
    ("gpt-4o", "fake-openai", "gpt-4o", 3, True, True, "2.50", "10.00", "1.25"),
    ("gpt-4o-mini", "fake-openai", "gpt-4o-mini", 2, True, True, "0.15", "0.60", "0.075"),
    (
        "claude-3-5-haiku",
        "fake-anthropic",
        "claude-3-5-haiku-latest",
        2,
        False,
        False,
        "0.80",
        "4.00",
        "0.08",
    ),
    (
        "claude-3-5-sonnet",
        "fake-anthropic",
        "claude-3-5-sonnet-latest",
        3,
        True,
        False,
        "3.00",
        "15.00",
        "0.30",
    ),
    ("llama-3.1-8b", "fake-ollama", "llama3.1:8b", 2, False, False, "0", "0", "0"),
    ("smollm2-135m", "fake-llama", "smollm2-135m", 1, False, False, "0", "0", "0"),
]


@pytest.fixture(scope="session")
def gateway(world: World, upstream: Any, django_db_blocker: Any) -> Any:
    """Providers and models pointing at the fake upstream (committed, for live servers too);
    acme prefers gpt-4o-mini and falls back to claude-3-5-haiku."""
    import os
    from decimal import Decimal

    from routing.catalog import forget_catalog
    from routing.models import CatalogModel, Provider

    os.environ[FAKE_KEY_ENV] = "fake-secret"
    urls = {
        "fake-openai": ("openai", upstream.openai_base_url),
        "fake-anthropic": ("anthropic", upstream.base_url),
        "fake-ollama": ("ollama", upstream.base_url),
        "fake-llama": ("openai_compatible", upstream.openai_base_url),
    }
    with django_db_blocker.unblock():
        CatalogModel.objects.all().delete()
        Provider.objects.all().delete()
        providers = {
            name: Provider.objects.create(name=name, kind=kind, base_url=url, api_key_env=FAKE_KEY_ENV)
            for name, (kind, url) in urls.items()
        }
        for name, provider, model, tier, vision, logprobs, p_in, p_out, p_cached in GATEWAY_MODELS:
            CatalogModel.objects.create(
                name=name,
                provider=providers[provider],
                upstream_model=model,
                family=name,
                quality_tier=tier,
                context_window=8192,
                max_output_tokens=1024,
                supports_vision=vision,
                supports_logprobs=logprobs,
                input_price_per_mtok=Decimal(p_in),
                output_price_per_mtok=Decimal(p_out),
                cached_input_price_per_mtok=Decimal(p_cached),
            )
        for tenant in (world.acme.tenant, world.outsider.tenant):
            tenant.primary_model = "gpt-4o-mini"
            tenant.fallback_models = ["claude-3-5-haiku"]
            tenant.save()
    forget_catalog()
    return upstream


@pytest.fixture(autouse=True)
def _fresh_gateway_state() -> Iterator[None]:
    """Circuit and latency state is per test: clear the test prefix's Redis keys."""
    yield
    from routing.catalog import forget_catalog

    forget_catalog()
    _flush_test_redis()
    from billing.admission import flush_admission_state

    flush_admission_state()


def _flush_all_test_redis() -> None:
    from django.conf import settings

    from config.redis import get_redis

    redis = get_redis()
    keys = list(redis.scan_iter(f"{settings.REDIS_KEY_PREFIX}:*", count=1000))
    for start in range(0, len(keys), 500):
        redis.delete(*keys[start : start + 500])


def _flush_test_redis() -> None:
    from django.conf import settings

    from config.redis import get_redis

    redis = get_redis()
    for pattern in (
        f"{settings.REDIS_KEY_PREFIX}:circuit:*",
        f"{settings.REDIS_KEY_PREFIX}:bulkhead:*",
        f"{settings.REDIS_KEY_PREFIX}:ttft_ewma",
    ):
        keys = list(redis.scan_iter(pattern, count=1000))
        if keys:
            redis.delete(*keys)


@dataclass
class GatewayServer:
    url: str  # http://127.0.0.1:<port>
    port: int


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def gateway_server(gateway: Any, django_db_blocker: Any) -> Iterator[GatewayServer]:
    """The real ASGI app (daphne, as `make run` serves it) on the test database, in a subprocess."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from django.conf import settings
    from django.db import connection

    port = _free_port()
    db = connection.settings_dict
    url = f"postgresql://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PLATFORM_ENV": "test",
        "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
        "DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    root = Path(__file__).resolve().parents[1]
    log = open(root / ".pytest-live-server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"live server did not start; see {log.name}") from None
            time.sleep(0.2)
    yield GatewayServer(base, port)
    process.terminate()
    process.wait(10)
    log.close()


@pytest.fixture(scope="session")
def live_keys(world: World, django_db_blocker: Any) -> dict[str, str]:
    """Committed API keys (visible to the live server): acme's member and admin, outsider's member."""
    with django_db_blocker.unblock():
        return {
            "acme": api_key_create(
                tenant=world.acme.tenant, user_id=world.acme.member.pk, name="live"
            ).secret,
            "acme_admin": api_key_create(
                tenant=world.acme.tenant,
                user_id=world.acme.admin.pk,
                name="live-admin",
                scopes=["chat", "models", "usage", "admin"],
            ).secret,
            "outsider": api_key_create(
                tenant=world.outsider.tenant, user_id=world.outsider.member.pk, name="live"
            ).secret,
        }
