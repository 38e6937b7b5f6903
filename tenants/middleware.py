"""Finds the request's tenant before anything else runs, and activates its schema.

Order: the `X-Tenant-ID` header (a slug), then the host's subdomain, then a tenant API key in
`Authorization` (so an `openai` SDK user only changes `base_url`). With none of these the request
runs on the public schema, where platform staff work.

Under ASGI the resolution runs in the request's own database thread (Django gives each request
one thread for all its sync work), so the schema it activates is the one DRF's sync views see;
async views set the schema themselves for every call (`tenants.schema.tenant_db`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.http import HttpRequest, HttpResponse

from config.errors import error_response
from tenants.models import Tenant
from tenants.schema import activate_public, activate_tenant
from tenants.selectors import (
    api_key_get_active,
    is_api_key_token,
    tenant_get_by_domain,
    tenant_get_by_slug,
)

# Paths that answer the same on every host and need no tenant (probes, metrics).
TENANT_FREE_PATHS = ("/healthz", "/readyz", "/metrics")


def bearer_token(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer":
        return token.strip()
    # Anthropic's SDK sends its key in `x-api-key`.
    return request.headers.get("x-api-key", "").strip()


def _base_host(host: str) -> bool:
    base = settings.TENANT_BASE_DOMAIN
    return host in {base, "127.0.0.1", "testserver", "::1"} or not host.endswith("." + base)


def resolve_tenant(request: HttpRequest, activate: bool = True) -> HttpResponse | None:
    """Sets request.tenant / request.api_key / request.urlconf and (with `activate`) activates the
    schema on this thread's connection; returns an error response when the request names no
    valid tenant."""
    request.api_key = None  # type: ignore[attr-defined]
    if request.path.startswith(TENANT_FREE_PATHS):
        if activate:
            activate_public()
        return None
    tenant: Tenant | None = None
    slug = request.headers.get("X-Tenant-ID", "").strip()
    host = request.get_host().split(":")[0].lower()
    if slug:
        tenant = tenant_get_by_slug(slug)
        if tenant is None:
            return error_response(404, f"Unknown tenant '{slug}'", "tenant_not_found")
    elif not _base_host(host):
        tenant = tenant_get_by_domain(host)
        if tenant is None:
            return error_response(404, f"Unknown tenant for host '{host}'", "tenant_not_found")

    token = bearer_token(request)
    if is_api_key_token(token):
        api_key = api_key_get_active(token)
        if api_key is None and tenant is None:
            # Nothing else names a tenant, so no tenant's route can answer: refuse here.
            return error_response(
                401,
                "Invalid, expired or revoked API key",
                "invalid_api_key",
                headers={"WWW-Authenticate": 'Bearer realm="api"'},
            )
        # A key of another tenant is refused by authentication later, with the same 401.
        if api_key is not None:
            if tenant is None:
                tenant = api_key.tenant
            if api_key.tenant_id == tenant.pk:
                request.api_key = api_key  # type: ignore[attr-defined]

    if tenant is not None and not tenant.is_active:
        return error_response(403, f"Tenant '{tenant.slug}' is suspended", "tenant_inactive")

    # On the public schema `request.tenant` stays unset (read it with getattr(..., None)):
    # django-tenants' admin templates take a missing attribute to mean "public".
    if tenant is not None:
        request.tenant = tenant  # type: ignore[attr-defined]
    if tenant is None:
        if activate:
            activate_public()
        request.urlconf = settings.PUBLIC_SCHEMA_URLCONF  # type: ignore[attr-defined]
    else:
        if activate:
            activate_tenant(tenant)
        request.urlconf = settings.ROOT_URLCONF  # type: ignore[attr-defined]
    return None


class TenantResolutionMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        refusal = resolve_tenant(request)
        if refusal is not None:
            return refusal
        try:
            return self.get_response(request)
        finally:
            # A pooled connection must not carry this tenant into the next request.
            activate_public()

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        refusal = await sync_to_async(resolve_tenant)(request)
        if refusal is not None:
            return refusal
        response: Awaitable[HttpResponse] = self.get_response(request)  # type: ignore[assignment]
        try:
            return await response
        finally:
            await sync_to_async(activate_public)()


class ApiTenantResolutionMiddleware:
    """The tenant resolution of the API chain (API_MIDDLEWARE: the `/v1/` endpoints, async views
    that set the schema for each database call themselves through `tenant_db`).

    The tenant and key lookups are usually answered by the selectors' in-process cache, so this
    resolves on the event loop; only a cache miss, which needs the database, goes to a worker
    thread (Django refuses a query on the loop with SynchronousOnlyOperation before it runs).
    It activates no schema: no sync view runs behind it to read one."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            refusal = resolve_tenant(request, activate=False)
        except SynchronousOnlyOperation:
            refusal = await sync_to_async(resolve_tenant)(request, activate=False)
        if refusal is not None:
            return refusal
        return await self.get_response(request)
