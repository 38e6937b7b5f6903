"""Switching the database connection between schemas (django-tenants' connection API, typed)."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from asgiref.sync import sync_to_async
from django.conf import settings
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


# Set for WebSocket consumers and background runs (never for HTTP requests): their database calls
# run in the shared worker threads, in parallel, instead of all in asgiref's one "main" thread
# (a context without a request has no thread of its own: 1,000 sockets queued behind one
# thread). Test transactions are only visible to the thread that opened them, which is why the
# requests of Django's test client keep the usual thread-sensitive calls.
db_calls_in_worker_threads: ContextVar[bool] = ContextVar("db_calls_in_worker_threads", default=False)


def give_back_connection() -> None:
    """Gives this thread's database connection back (to the pool, when there is one), unless a
    transaction still holds it (a test's, or a caller's atomic block)."""
    if not _tenant_connection.in_atomic_block:
        _tenant_connection.close()


def _call_and_give_back(tenant: Tenant, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    try:
        return run_in_tenant(tenant, fn, *args, **kwargs)
    finally:
        # With the pool, the connection goes back after every call, so no thread holds one while
        # its caller awaits something else (a model's answer, another call that needs a
        # connection): holding them was a deadlock waiting for the pool to run dry.
        if settings.DATABASES["default"].get("OPTIONS", {}).get("pool"):
            give_back_connection()


async def tenant_db(tenant: Tenant, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """Database work from async code, always in the tenant's schema; each call a unit of its own
    (no transaction spans two calls).

    The schema is set inside the worker thread for every call, because async code may hop threads
    between calls and a connection's schema is per thread.
    """
    thread_sensitive = not db_calls_in_worker_threads.get()
    return await sync_to_async(_call_and_give_back, thread_sensitive=thread_sensitive)(
        tenant, fn, *args, **kwargs
    )
