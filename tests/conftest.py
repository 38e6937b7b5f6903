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


@pytest.fixture(scope="session")
def world(django_db_setup: None, django_db_blocker: Any) -> World:
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
    yield
    forget_cached_tenants()
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
