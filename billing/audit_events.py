"""What gets audited, beyond what views record directly: logins (Django's auth signals, which
cover the token endpoint's failures, the admin sites and the billing pages), admin-site actions
(the admin's own LogEntry), and helpers that turn a config change into before/after records.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db.models.signals import post_save

from billing.audit import Actor, record_audit
from tenants.models import ApiKey, Tenant

logger = logging.getLogger(__name__)

QUOTA_FIELDS = ("monthly_token_quota", "monthly_cost_quota")
LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests")
TENANT_FIELDS = (
    "name",
    "tier",
    "is_active",
    *LIMIT_FIELDS,
    *QUOTA_FIELDS,
    "primary_model",
    "fallback_models",
    "allowed_models",
    "routing_strategy",
    "cache_enabled",
    "semantic_cache_threshold",
    "cache_ttl_seconds",
    "cache_max_temperature",
    "log_content",
)


def tenant_snapshot(tenant: Tenant) -> dict[str, Any]:
    return {name: getattr(tenant, name) for name in TENANT_FIELDS}


def audit_tenant_change(
    request: Any, tenant: Tenant, before: dict[str, Any], action: str = "tenant.config_changed"
) -> None:
    """Records what changed (old and new values); quota changes also get their own record, the
    one a tenant's quota history is read from."""
    after = tenant_snapshot(tenant)
    changed = {
        name: {"from": before[name], "to": after[name]}
        for name in TENANT_FIELDS
        if before[name] != after[name]
    }
    if not changed:
        return
    record_audit(
        action, request=request, tenant=tenant, target_type="tenant", target_id=tenant.pk, detail=changed
    )
    quota = {name: value for name, value in changed.items() if name in QUOTA_FIELDS}
    if quota:
        record_audit(
            "quota.changed",
            request=request,
            tenant=tenant,
            target_type="tenant",
            target_id=tenant.pk,
            detail=quota,
        )


def audit_api_key(request: Any, action: str, api_key: ApiKey) -> None:
    record_audit(
        action,
        request=request,
        tenant=api_key.tenant,
        target_type="api_key",
        target_id=api_key.pk,
        detail={
            "name": api_key.name,
            "prefix": api_key.prefix,
            "owner_user_id": api_key.user_id,
            "scopes": api_key.scopes,
        },
    )


API_KEY_QUOTA_FIELDS = ("monthly_token_quota", "monthly_cost_quota")


def audit_api_key_limits(request: Any, api_key: ApiKey, changed: dict[str, dict[str, Any]]) -> None:
    """A key's limits changed (as api_key_update_limits reports them); quota changes also get
    the quota.changed record a tenant's quota history is read from."""
    if not changed:
        return
    common = {"request": request, "tenant": api_key.tenant, "target_type": "api_key", "target_id": api_key.pk}
    record_audit("api_key.limits_changed", detail=changed, **common)
    quota = {name: value for name, value in changed.items() if name in API_KEY_QUOTA_FIELDS}
    if quota:
        record_audit("quota.changed", detail=quota, **common)


def _on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    record_audit(
        "auth.login",
        request=request,
        actor=Actor("user", str(user.pk), str(user.email or user.get_username())),
        target_type="user",
        target_id=user.pk,
    )


def _on_login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    # Django has already masked the password; the name tried is what an investigation needs.
    username = str(credentials.get("username") or credentials.get("email") or "")[:254]
    record_audit(
        "auth.login_failed",
        request=request,
        actor=Actor("anonymous", "", username),
        detail={"username": username},
    )


def _on_admin_action(sender: Any, instance: LogEntry, created: bool, **kwargs: Any) -> None:
    if not created:
        return
    flags = {1: "add", 2: "change", 3: "delete"}
    user = instance.user
    record_audit(
        "admin.action",
        actor=Actor("user", str(user.pk), str(user.email or user.get_username())),
        target_type=instance.content_type.model if instance.content_type else "",
        target_id=instance.object_id or "",
        detail={
            "operation": flags.get(instance.action_flag, str(instance.action_flag)),
            "object": instance.object_repr,
            "change": instance.get_change_message(),
        },
    )


def connect_audit_receivers() -> None:
    user_logged_in.connect(_on_login, dispatch_uid="billing_audit_login")
    user_login_failed.connect(_on_login_failed, dispatch_uid="billing_audit_login_failed")
    post_save.connect(_on_admin_action, sender=LogEntry, dispatch_uid="billing_audit_admin_action")
