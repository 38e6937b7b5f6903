"""Switching the database connection between schemas (django-tenants' connection API, typed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.db import connection

if TYPE_CHECKING:
    from tenants.models import Tenant

_tenant_connection = cast(Any, connection)


def activate_public() -> None:
    _tenant_connection.set_schema_to_public()


def activate_tenant(tenant: Tenant) -> None:
    _tenant_connection.set_tenant(tenant)


def active_schema_name() -> str:
    return str(_tenant_connection.schema_name)
