"""REST endpoints for identity (tokens), tenants, users and API keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import authenticate, get_user_model
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from billing.audit import Actor, record_audit
from billing.audit_events import audit_api_key, audit_api_key_limits, audit_tenant_change, tenant_snapshot
from config.errors import ApiError
from tenants import serializers as s
from tenants.authentication import TENANT_CLAIM, request_scopes
from tenants.models import ApiKey, Tenant
from tenants.permissions import IsTenantAdmin, IsTenantMember, is_platform_staff, is_tenant_admin
from tenants.selectors import current_tenant, current_tenant_slug, tenant_get_by_identifier
from tenants.services import (
    api_key_create,
    api_key_revoke,
    api_key_update_limits,
    tenant_create,
    tenant_update,
    user_create,
)


def _validated(serializer_class: type, data: Any, **kwargs: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


# --- tokens -------------------------------------------------------------------------------


def _token_pair(user: Any) -> dict[str, Any]:
    refresh = RefreshToken.for_user(user)
    refresh[TENANT_CLAIM] = current_tenant_slug()
    access = refresh.access_token
    return {
        "access": str(access),
        "refresh": str(refresh),
        "token_type": "Bearer",
        "expires_in": int(access.lifetime.total_seconds()),
        "tenant": current_tenant_slug(),
    }


class TokenView(APIView):
    """`POST /api/v1/auth/token`: email and password of a user of the resolved tenant."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    def post(self, request: Request) -> Response:
        data = _validated(s.TokenIn, request.data)
        username = data.get("email") or data.get("username")
        user = authenticate(request._request, username=username, password=data["password"])
        if user is None or not user.is_active:
            raise ApiError(401, "Invalid email or password", "invalid_credentials")
        user.last_login = timezone.now()
        user.save(update_fields=["last_login"])
        # Failures are audited by the user_login_failed signal (billing/audit_events.py).
        record_audit(
            "auth.token_issued",
            request=request,
            actor=Actor("user", str(user.pk), user.email),
            target_type="user",
            target_id=user.pk,
        )
        return Response(_token_pair(user))


class TokenRefreshView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    def post(self, request: Request) -> Response:
        data = _validated(s.RefreshIn, request.data)
        try:
            refresh = RefreshToken(data["refresh"])
        except TokenError as exc:
            raise ApiError(401, str(exc), "token_not_valid") from exc
        if refresh.get(TENANT_CLAIM) != current_tenant_slug():
            raise ApiError(401, "This token was issued for another tenant", "token_tenant_mismatch")
        user = get_user_model().objects.filter(pk=refresh.get("user_id"), is_active=True).first()
        if user is None:
            raise ApiError(401, "The token's user no longer exists or is inactive", "user_inactive")
        access = refresh.access_token
        return Response(
            {
                "access": str(access),
                "token_type": "Bearer",
                "expires_in": int(access.lifetime.total_seconds()),
            }
        )


# --- tenants ------------------------------------------------------------------------------


def _tenant_for(request: Request, identifier: str) -> Tenant:
    """The tenant named in the URL, if the caller may see it; 404 otherwise (never 403, so
    tenant ids cannot be probed)."""
    if is_platform_staff(request):
        tenant = tenant_get_by_identifier(identifier)
    else:
        own = current_tenant()
        tenant = own if own is not None and identifier in {str(own.pk), own.slug} else None
        if tenant is not None and not is_tenant_admin(request):
            raise ApiError(403, "Only an admin of this tenant may do this", "permission_denied")
    if tenant is None:
        raise ApiError(404, f"No tenant '{identifier}'", "tenant_not_found")
    return tenant


class TenantListView(APIView):
    def get(self, request: Request) -> Response:
        if not is_platform_staff(request):
            raise ApiError(403, "Only platform staff may list tenants", "permission_denied")
        tenants = Tenant.objects.exclude(schema_name="public").prefetch_related("domains")
        return Response({"object": "list", "data": [s.tenant_out(t) for t in tenants]})

    def post(self, request: Request) -> Response:
        if not is_platform_staff(request):
            raise ApiError(403, "Only platform staff may create tenants", "permission_denied")
        data = _validated(s.TenantCreateIn, request.data)
        identity: dict[str, Any] = {
            k: data.pop(k) for k in ("name", "slug", "admin_email", "admin_password", "tier") if k in data
        }
        with transaction.atomic():
            tenant = tenant_create(**identity, **s.config_to_model_fields(data))
            record_audit(
                "tenant.created",
                request=request,
                tenant=tenant,
                target_type="tenant",
                target_id=tenant.pk,
                detail={"slug": tenant.slug} | tenant_snapshot(tenant),
            )
        return Response(s.tenant_out(tenant), status=status.HTTP_201_CREATED)


class TenantDetailView(APIView):
    def get(self, request: Request, tenant_id: str) -> Response:
        return Response(s.tenant_out(_tenant_for(request, tenant_id)))

    def patch(self, request: Request, tenant_id: str) -> Response:
        tenant = _tenant_for(request, tenant_id)
        if not is_platform_staff(request):
            raise ApiError(
                403, "Only platform staff may change a tenant's tier or state", "permission_denied"
            )
        before = tenant_snapshot(tenant)
        with transaction.atomic():
            tenant = tenant_update(tenant, **_validated(s.TenantUpdateIn, request.data))
            audit_tenant_change(request, tenant, before, "tenant.updated")
        return Response(s.tenant_out(tenant))


class TenantConfigView(APIView):
    def get(self, request: Request, tenant_id: str) -> Response:
        return Response(s.tenant_config_out(_tenant_for(request, tenant_id)))

    def patch(self, request: Request, tenant_id: str) -> Response:
        tenant = _tenant_for(request, tenant_id)
        data = _validated(s.TenantConfigIn, request.data)
        if not is_platform_staff(request):
            forbidden = set(data) - s.TenantConfigIn.TENANT_ADMIN_FIELDS
            if forbidden:
                raise ApiError(
                    403,
                    f"Only platform staff may change {', '.join(sorted(forbidden))}",
                    "permission_denied",
                )
        before = tenant_snapshot(tenant)
        with transaction.atomic():
            tenant = tenant_update(tenant, **s.config_to_model_fields(data))
            audit_tenant_change(request, tenant, before)
        return Response(s.tenant_config_out(tenant))


# --- users --------------------------------------------------------------------------------


class UserListView(APIView):
    permission_classes = [IsTenantAdmin]

    def get(self, request: Request) -> Response:
        users = get_user_model().objects.order_by("id")
        return Response({"object": "list", "data": [s.user_out(u) for u in users]})

    def post(self, request: Request) -> Response:
        data = _validated(s.UserIn, request.data)
        with transaction.atomic():
            user = user_create(**data)
            record_audit(
                "user.created",
                request=request,
                target_type="user",
                target_id=user.pk,
                detail={"email": user.email, "is_admin": user.is_staff},
            )
        return Response(s.user_out(user), status=status.HTTP_201_CREATED)


def _user_or_404(user_id: int) -> Any:
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        raise ApiError(404, f"No user {user_id}", "user_not_found")
    return user


class UserDetailView(APIView):
    permission_classes = [IsTenantAdmin]

    def get(self, request: Request, user_id: int) -> Response:
        return Response(s.user_out(_user_or_404(user_id)))

    def patch(self, request: Request, user_id: int) -> Response:
        user = _user_or_404(user_id)
        data = _validated(s.UserUpdateIn, request.data)
        changed = sorted(data)  # names only: never a password in the audit trail
        if user.pk == request.user.pk and (data.get("is_admin") is False or data.get("is_active") is False):
            raise ApiError(400, "An admin cannot demote or deactivate themselves", "self_demotion")
        if "is_admin" in data:
            user.is_staff = user.is_superuser = data.pop("is_admin")
        password = data.pop("password", None)
        for name, value in data.items():
            setattr(user, name, value)
        if password:
            user.set_password(password)
        with transaction.atomic():
            user.save()
            record_audit(
                "user.updated",
                request=request,
                target_type="user",
                target_id=user.pk,
                detail={"fields": changed, "is_admin": user.is_staff, "is_active": user.is_active},
            )
        return Response(s.user_out(user))

    def delete(self, request: Request, user_id: int) -> Response:
        """Deactivates the user and revokes its keys; data erasure is a separate GDPR action."""
        user = _user_or_404(user_id)
        if user.pk == request.user.pk:
            raise ApiError(400, "An admin cannot deactivate themselves", "self_demotion")
        with transaction.atomic():
            user.is_active = False
            user.save(update_fields=["is_active"])
            record_audit("user.deactivated", request=request, target_type="user", target_id=user.pk)
            for key in ApiKey.objects.filter(tenant=current_tenant(), user_id=user.pk, revoked_at=None):
                api_key_revoke(key)
                audit_api_key(request, "api_key.revoked", key)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- API keys -----------------------------------------------------------------------------


def _visible_keys(request: Request) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.filter(tenant=current_tenant())
    return keys if is_tenant_admin(request) else keys.filter(user_id=int(request.user.pk or 0))


class ApiKeyListView(APIView):
    permission_classes = [IsTenantMember]

    def get(self, request: Request) -> Response:
        return Response({"object": "list", "data": [s.api_key_out(k) for k in _visible_keys(request)]})

    def post(self, request: Request) -> Response:
        data = _validated(s.ApiKeyIn, request.data)
        scopes = request_scopes(request)
        if scopes is not None and "admin" not in scopes:
            raise ApiError(403, "Creating keys needs a key with the admin scope", "permission_denied")
        user_id = data.pop("user_id", request.user.pk)
        admin = is_tenant_admin(request)
        if user_id != request.user.pk:
            if not admin:
                raise ApiError(403, "Only a tenant admin may create keys for others", "permission_denied")
            _user_or_404(user_id)
        if "admin" in data.get("scopes", []) and not admin:
            raise ApiError(403, "Only a tenant admin may create admin-scoped keys", "permission_denied")
        days = data.pop("expires_in_days", None)
        if days is not None:
            data["expires_at"] = timezone.now() + timedelta(days=days)
        tenant = current_tenant()
        assert tenant is not None
        with transaction.atomic():
            created = api_key_create(tenant=tenant, user_id=user_id, **data)
            audit_api_key(request, "api_key.created", created.api_key)
        body = s.api_key_out(created.api_key) | {"key": created.secret}
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyDetailView(APIView):
    permission_classes = [IsTenantMember]

    def _get(self, request: Request, key_id: int) -> ApiKey:
        api_key = _visible_keys(request).filter(pk=key_id).first()
        if api_key is None:
            raise ApiError(404, f"No API key {key_id}", "api_key_not_found")
        return api_key

    def get(self, request: Request, key_id: int) -> Response:
        return Response(s.api_key_out(self._get(request, key_id)))

    def patch(self, request: Request, key_id: int) -> Response:
        """A tenant admin sets a key's own limits and quotas (raising an exhausted one lets the
        key's requests through at once)."""
        if not is_tenant_admin(request):
            raise ApiError(403, "Only a tenant admin may change a key's limits", "permission_denied")
        data = _validated(s.ApiKeyLimitsIn, request.data)
        with transaction.atomic():
            api_key = self._get(request, key_id)
            changed = api_key_update_limits(api_key, **data)
            audit_api_key_limits(request, api_key, changed)
        return Response(s.api_key_out(api_key))

    def delete(self, request: Request, key_id: int) -> Response:
        with transaction.atomic():
            api_key = self._get(request, key_id)
            was_live = api_key.revoked_at is None
            api_key_revoke(api_key)
            if was_live:
                audit_api_key(request, "api_key.revoked", api_key)
        return Response(status=status.HTTP_204_NO_CONTENT)
