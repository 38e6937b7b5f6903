"""Switching the database connection between schemas (django-tenants' connection API, typed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from asgiref.sync import sync_to_async
from django.db import connection

if TYPE_CHECKING:
    from tenants.models import Tenant

_tenant_connection = cast(Any, connection)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def activate_public() -> None:
    _tenant_connection.set_schema_to_public()


def activate_tenant(tenant: Tenant) -> None:
    _tenant_connection.set_tenant(tenant)


def active_schema_name() -> str:
    return str(_tenant_connection.schema_name)


def run_in_tenant(tenant: Tenant, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """Runs `fn` with `tenant`'s schema active on this thread's connection, then back to public."""
    activate_tenant(tenant)
    try:
        return fn(*args, **kwargs)
    finally:
        activate_public()


async def tenant_db(tenant: Tenant, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """Database work from async code, always in the tenant's schema.

    The schema is set inside the worker thread for every call, because async code may hop threads
    between calls and a connection's schema is per thread.
    """
    return await sync_to_async(run_in_tenant, thread_sensitive=True)(tenant, fn, *args, **kwargs)
