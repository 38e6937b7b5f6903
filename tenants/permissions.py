"""Who may do what: platform staff on the public schema, tenant admins inside their tenant."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission

from tenants.authentication import request_scopes
from tenants.selectors import current_tenant

BILLING_GROUP = "billing"


def is_platform_staff(request: Any) -> bool:
    user = request.user
    return bool(current_tenant() is None and user.is_authenticated and user.is_staff)


def is_tenant_admin(request: Any) -> bool:
    user = request.user
    if current_tenant() is None or not (user.is_authenticated and user.is_staff):
        return False
    scopes = request_scopes(request)
    return scopes is None or "admin" in scopes


class IsPlatformStaff(BasePermission):
    message = "Only platform staff may do this"

    def has_permission(self, request: Any, view: Any) -> bool:
        return is_platform_staff(request)


class IsTenantAdmin(BasePermission):
    message = "Only an admin of this tenant may do this"

    def has_permission(self, request: Any, view: Any) -> bool:
        return is_tenant_admin(request)


class IsTenantMember(BasePermission):
    """Any authenticated user of the current tenant (never on the public schema)."""

    message = "This endpoint needs a tenant: send X-Tenant-ID or use the tenant's host"

    def has_permission(self, request: Any, view: Any) -> bool:
        return current_tenant() is not None and bool(request.user and request.user.is_authenticated)


class HasScope(BasePermission):
    """For API keys: the view's `required_scope` must be among the key's scopes."""

    message = "This API key lacks the scope this endpoint needs"

    def has_permission(self, request: Any, view: Any) -> bool:
        scopes = request_scopes(request)
        required = getattr(view, "required_scope", None)
        return scopes is None or required is None or required in scopes
