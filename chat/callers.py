"""Who is calling an async endpoint: a tenant API key or a tenant-bound JWT.

The tenant middleware has already resolved the tenant (and the key, if one was sent); this turns
the request into a `Caller` or raises the 401/403 the client deserves. DRF's authentication is
sync, so async views use this instead; the rules are the same.
"""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from chat.gateway import Caller
from config.errors import ApiError
from tenants.authentication import TENANT_CLAIM
from tenants.middleware import bearer_token
from tenants.models import ApiKey, Tenant
from tenants.schema import tenant_db
from tenants.selectors import TENANT_CACHE_SECONDS, is_api_key_token

_active_users: dict[tuple[int, int], float] = {}


def _user_is_active(user_id: int) -> bool:
    return get_user_model().objects.filter(pk=user_id, is_active=True).exists()


async def _check_user(tenant: Tenant, user_id: int) -> None:
    key = (tenant.pk, user_id)
    if _active_users.get(key, 0) > time.monotonic():
        return
    if not await tenant_db(tenant, _user_is_active, user_id):
        raise ApiError(401, "The credential's user is inactive", "user_inactive")
    if len(_active_users) > 50_000:
        _active_users.clear()
    _active_users[key] = time.monotonic() + TENANT_CACHE_SECONDS


def request_id_of(request: HttpRequest) -> str:
    return str(getattr(request, "request_id", "")) or ""


async def resolve_caller(request: HttpRequest, scope: str = "chat") -> Caller:
    tenant: Tenant | None = getattr(request, "tenant", None)
    raw = bearer_token(request)
    if not raw:
        raise ApiError(401, "Send an API key or a JWT as 'Authorization: Bearer ...'", "not_authenticated")
    if tenant is None:
        raise ApiError(401, "Invalid API key", "invalid_api_key")
    if is_api_key_token(raw):
        api_key: ApiKey | None = getattr(request, "api_key", None)
        if api_key is None:
            raise ApiError(
                401, "Invalid, expired or revoked API key, or a key of another tenant", "invalid_api_key"
            )
        if scope not in api_key.scopes:
            raise ApiError(403, f"This API key lacks the '{scope}' scope", "insufficient_scope")
        await _check_user(tenant, api_key.user_id)
        return Caller(
            tenant=tenant,
            request_id=request_id_of(request),
            user_id=api_key.user_id,
            api_key_id=api_key.pk,
            api_key=api_key,  # its own limits and quota apply on top of the tenant's
        )
    try:
        token: Any = AccessToken(raw)  # type: ignore[arg-type]
    except TokenError as exc:
        raise ApiError(401, str(exc), "token_not_valid") from exc
    if token.get(TENANT_CLAIM) != tenant.slug:
        raise ApiError(401, "This token was issued for another tenant", "token_tenant_mismatch")
    user_id = int(token.get("user_id"))
    await _check_user(tenant, user_id)
    return Caller(tenant=tenant, request_id=request_id_of(request), user_id=user_id)
