"""DRF authentication: tenant-bound JWTs and tenant API keys.

A JWT carries the slug of the tenant it was issued on (`tenant` claim, `public` for platform
staff); it is only honoured on that tenant. User ids repeat across schemas, so without this check
user 1 of tenant A would be user 1 of tenant B.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.tokens import Token

from tenants.middleware import bearer_token
from tenants.models import ApiKey
from tenants.selectors import current_tenant_slug, is_api_key_token

TENANT_CLAIM = "tenant"


class TenantJWTAuthentication(JWTAuthentication):
    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, Token] | None:  # type: ignore[override]
        header = self.get_header(request)
        if header is None:
            return None
        raw_token = self.get_raw_token(header)
        if raw_token is None or is_api_key_token(raw_token.decode(errors="replace")):
            return None
        token = self.get_validated_token(raw_token)
        if token.get(TENANT_CLAIM) != current_tenant_slug():
            raise exceptions.AuthenticationFailed(
                "This token was issued for another tenant", code="token_tenant_mismatch"
            )
        return self.get_user(token), token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class ApiKeyAuthentication:
    """`Authorization: Bearer gwk_...` (or `x-api-key`), resolved by the tenant middleware."""

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, ApiKey] | None:
        raw = bearer_token(request._request)
        if not is_api_key_token(raw):
            return None
        api_key: ApiKey | None = getattr(request._request, "api_key", None)
        if api_key is None:
            raise exceptions.AuthenticationFailed(
                "Invalid, expired or revoked API key, or a key of another tenant",
                code="invalid_api_key",
            )
        user = get_user_model().objects.filter(pk=api_key.user_id, is_active=True).first()
        if user is None:
            raise exceptions.AuthenticationFailed("The key's user is inactive", code="invalid_api_key")
        now = timezone.now()
        # Touch last_used_at at most once a minute per key, not on every request.
        if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
            api_key.last_used_at = now
        return user, api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


def request_scopes(request: Any) -> set[str] | None:
    """The API key's scopes, or None for a user session or JWT (which carry the user's rights)."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey):
        return set(auth.scopes)
    return None
