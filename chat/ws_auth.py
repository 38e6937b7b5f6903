"""ASGI middleware for WebSockets: resolves the tenant and the caller before the consumer runs.

Tenant: the `X-Tenant-ID` header, the `tenant` query parameter (browsers cannot set headers on a
WebSocket), or the host's subdomain; an API key alone also names its tenant. Credentials: a JWT
or API key in the `token` query parameter or as the second entry of `Sec-WebSocket-Protocol`
(`bearer, <token>`), or the session cookie of the web UI. A connection that fails any of this is
closed before it is accepted, with a 4xxx code that says why.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from tenants.authentication import TENANT_CLAIM
from tenants.middleware import _base_host
from tenants.models import Tenant
from tenants.schema import db_calls_in_worker_threads, tenant_db
from tenants.selectors import api_key_get_active, is_api_key_token, tenant_get_by_domain, tenant_get_by_slug

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}


def _cookie(headers: dict[str, str], name: str) -> str:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def _session_user_id(session_key: str) -> int | None:
    session = SessionStore(session_key=session_key)
    user_id = session.get("_auth_user_id")
    if user_id is None:
        return None
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    return user.pk if user else None


def _user_active(user_id: int) -> bool:
    return get_user_model().objects.filter(pk=user_id, is_active=True).exists()


async def resolve_ws_caller(scope: dict[str, Any]) -> tuple[dict[str, Any] | None, int]:
    """({tenant, user_id, api_key_id, subprotocol}, 0) or (None, close code)."""
    headers = _headers(scope)
    query = parse_qs(scope.get("query_string", b"").decode())
    slug = headers.get("x-tenant-id") or (query.get("tenant") or [""])[0]
    host = headers.get("host", "").split(":")[0].lower()
    tenant: Tenant | None = None
    if slug:
        tenant = await sync_to_async(tenant_get_by_slug)(slug)
        if tenant is None:
            return None, CLOSE_NOT_FOUND
    elif not _base_host(host):
        tenant = await sync_to_async(tenant_get_by_domain)(host)
        if tenant is None:
            return None, CLOSE_NOT_FOUND

    protocols = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    token = (query.get("token") or [""])[0]
    subprotocol = None
    if len(protocols) >= 2 and protocols[0].lower() == "bearer":
        token, subprotocol = protocols[1], protocols[0]

    if is_api_key_token(token):
        api_key = await sync_to_async(api_key_get_active)(token)
        if (
            api_key is None
            or (tenant is not None and api_key.tenant_id != tenant.pk)
            or "chat" not in api_key.scopes
        ):
            return None, CLOSE_UNAUTHENTICATED
        tenant = api_key.tenant
        if not await tenant_db(tenant, _user_active, api_key.user_id):
            return None, CLOSE_UNAUTHENTICATED
        return {
            "tenant": tenant,
            "user_id": api_key.user_id,
            "api_key_id": api_key.pk,
            "api_key": api_key,
            "subprotocol": subprotocol,
        }, 0
    if tenant is None or not tenant.is_active:
        return None, CLOSE_NOT_FOUND
    if token:
        try:
            access: Any = AccessToken(token)  # type: ignore[arg-type]
        except TokenError:
            return None, CLOSE_UNAUTHENTICATED
        if access.get(TENANT_CLAIM) != tenant.slug:
            return None, CLOSE_UNAUTHENTICATED
        user_id = int(access.get("user_id"))
        if not await tenant_db(tenant, _user_active, user_id):
            return None, CLOSE_UNAUTHENTICATED
        return {"tenant": tenant, "user_id": user_id, "api_key_id": None, "subprotocol": subprotocol}, 0
    session_key = _cookie(headers, settings.SESSION_COOKIE_NAME)
    if session_key:
        session_user: int | None = await tenant_db(tenant, _session_user_id, session_key)
        if session_user is not None:
            return {"tenant": tenant, "user_id": session_user, "api_key_id": None, "subprotocol": None}, 0
    return None, CLOSE_UNAUTHENTICATED


class TenantWebSocketAuthMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        db_calls_in_worker_threads.set(True)  # this socket's task only (tenants/schema.py)
        caller, close_code = await resolve_ws_caller(scope)
        if caller is None:
            # Accept, then close with a code that says why (a refused handshake only says 403).
            await receive()  # the websocket.connect event
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": close_code})
            return None
        return await self.inner(dict(scope, caller=caller), receive, send)
