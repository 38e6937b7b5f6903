"""Signing in to the chat UI: per tenant, with a lockout after repeated failures.

Sessions live in the tenant's schema (each tenant has its own users and session table), so a
person signs in on the tenant's own host, `<slug>.<TENANT_BASE_DOMAIN>`. On the bare host
(127.0.0.1, localhost) the page asks for the workspace first and sends the browser there.

Lockout: failed sign-ins are counted in Redis per tenant and email. After `LOGIN_MAX_FAILURES`
of them, each within `LOGIN_LOCKOUT_SECONDS` of the previous one, that email is locked for
`LOGIN_LOCKOUT_SECONDS`; attempts while locked are refused without checking the password (so
guessing gains nothing) and do not extend the lock. A successful sign-in clears the count. The
count is per email, not per client address, so a password cannot be sprayed from many addresses;
the price is that anyone can lock an account for the cooldown, which is why it is short.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, get_user_model, login, logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from config.redis import get_redis, rkey
from tenants.models import Tenant
from tenants.selectors import tenant_get_by_slug

logger = logging.getLogger(__name__)


def _failures_key(tenant: Tenant, email: str) -> str:
    # Hashed: Redis keys show up in monitoring, emails should not.
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return rkey("login-failures", tenant.slug, digest)


def locked_seconds(tenant: Tenant, email: str) -> int:
    """Seconds this email stays locked out of this tenant (0: not locked). Redis down: not
    locked, with a warning; refusing every sign-in would turn an outage into a lockout."""
    key = _failures_key(tenant, email)
    try:
        client = get_redis()
        failures = int(client.get(key) or 0)
        if failures < settings.LOGIN_MAX_FAILURES:
            return 0
        return max(int(client.ttl(key)), 1)
    except redis.RedisError as exc:
        logger.warning("login lockout unavailable (%s); not enforcing it", exc)
        return 0


def record_failure(tenant: Tenant, email: str) -> None:
    key = _failures_key(tenant, email)
    try:
        pipe = get_redis().pipeline()
        pipe.incr(key)
        pipe.expire(key, settings.LOGIN_LOCKOUT_SECONDS)
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("login failure not counted (%s)", exc)


def clear_failures(tenant: Tenant, email: str) -> None:
    try:
        get_redis().delete(_failures_key(tenant, email))
    except redis.RedisError as exc:
        logger.warning("login failures not cleared (%s)", exc)


@dataclass
class SignInResult:
    user: object | None = None
    error: str = ""  # "wrong", "locked" or "disabled"
    locked_for: int = 0


def sign_in(request: HttpRequest, tenant: Tenant, email: str, password: str) -> SignInResult:
    wait = locked_seconds(tenant, email)
    if wait:
        return SignInResult(error="locked", locked_for=wait)
    user = authenticate(request, username=email.strip(), password=password)
    if user is not None:
        clear_failures(tenant, email)
        return SignInResult(user=user)
    # A disabled account with the right password gets the truth; a wrong password does not
    # learn whether the account exists.
    disabled = get_user_model().objects.filter(username__iexact=email.strip(), is_active=False).first()
    if disabled is not None and disabled.check_password(password):
        return SignInResult(error="disabled")
    record_failure(tenant, email)
    wait = locked_seconds(tenant, email)
    return SignInResult(error="locked" if wait else "wrong", locked_for=wait)


def _safe_next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return "/"


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    """The tenant host's sign-in page; the bare host's is `workspace_view`."""
    tenant: Tenant | None = getattr(request, "tenant", None)
    if tenant is None:
        return workspace_view(request)
    if request.user.is_authenticated and request.method == "GET":
        return redirect(_safe_next(request))
    next_url = _safe_next(request)
    context: dict[str, Any] = {"tenant": tenant, "next": next_url, "email": ""}
    if request.method == "GET":
        return render(request, "chat/login.html", context)
    email = request.POST.get("email", "")[:254]
    password = request.POST.get("password", "")
    context["email"] = email
    result = sign_in(request, tenant, email, password)
    if result.user is not None:
        login(request, result.user)  # type: ignore[arg-type]
        return redirect(next_url)
    if result.error == "locked":
        minutes = max(1, math.ceil(result.locked_for / 60))
        return render(request, "chat/locked.html", context | {"minutes": minutes}, status=429)
    status = 403 if result.error == "disabled" else 401
    return render(request, "chat/login.html", context | {"error": result.error}, status=status)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    messages.info(request, "You are signed out.")
    return redirect("ui-login")


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def workspace_view(request: HttpRequest) -> HttpResponse:
    """Bare host: which workspace? Then on to its own host, where its users and sessions are."""
    slug = (request.POST.get("workspace") or request.GET.get("workspace") or "").strip().lower()
    if request.method == "GET" and not request.GET.get("workspace"):
        return _workspace_page(request, {"workspace": slug})
    tenant = tenant_get_by_slug(slug) if slug else None
    if tenant is None:
        return _workspace_page(request, {"workspace": slug, "error": "unknown"}, status=404)
    if not tenant.is_active:
        return _workspace_page(request, {"workspace": slug, "error": "inactive"}, status=403)
    domain = tenant.domains.filter(is_primary=True).first()  # type: ignore[attr-defined]
    host = domain.domain if domain else f"{tenant.slug}.{settings.TENANT_BASE_DOMAIN}"
    port = request.get_host().partition(":")[2]
    return redirect(f"{request.scheme}://{host}{':' + port if port else ''}/login")


def _workspace_page(request: HttpRequest, context: dict[str, str], status: int = 200) -> HttpResponse:
    response = render(request, "chat/workspace.html", context, status=status)
    # The form's answer is a redirect to the tenant's host; `form-action 'self'` would stop
    # the browser from following it, so this page also allows the tenants' hosts.
    tenants = f"{request.scheme}://*.{settings.TENANT_BASE_DOMAIN}:*"
    policy = settings.CONTENT_SECURITY_POLICY.replace("form-action 'self'", f"form-action 'self' {tenants}")
    response["Content-Security-Policy"] = policy
    return response
