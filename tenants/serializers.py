"""Input and output shapes of the tenant, user and API key endpoints."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractUser
from rest_framework import serializers

from tenants.models import ApiKey, RoutingStrategy, Tenant, Tier
from tenants.services import API_KEY_SCOPES


class FallbackField(serializers.Field):
    """`fallback` as one model name or a list of them (the seed sends one)."""

    def to_internal_value(self, data: Any) -> list[str]:
        if data in (None, ""):
            return []
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise serializers.ValidationError("must be a model name or a list of model names")
        return list(items)

    def to_representation(self, value: Any) -> list[str]:
        return list(value or [])


class RateLimitsIn(serializers.Serializer):
    requests_per_minute = serializers.IntegerField(min_value=1, required=False)
    tokens_per_minute = serializers.IntegerField(min_value=1, required=False)
    max_concurrent_requests = serializers.IntegerField(min_value=1, required=False)


class ModelPreferencesIn(serializers.Serializer):
    primary = serializers.CharField(max_length=100, required=False)
    fallback = FallbackField(required=False)
    strategy = serializers.ChoiceField(choices=RoutingStrategy.choices, required=False)


class QuotasIn(serializers.Serializer):
    monthly_tokens = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    monthly_cost_usd = serializers.DecimalField(
        max_digits=12, decimal_places=4, min_value=Decimal(0), required=False, allow_null=True
    )


class TenantConfigIn(serializers.Serializer):
    rate_limits = RateLimitsIn(required=False)
    model_preferences = ModelPreferencesIn(required=False)
    quotas = QuotasIn(required=False)
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, allow_empty=True
    )
    cache_enabled = serializers.BooleanField(required=False)
    semantic_cache_threshold = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    cache_ttl_seconds = serializers.IntegerField(min_value=0, required=False)
    cache_max_temperature = serializers.FloatField(min_value=0.0, max_value=2.0, required=False)
    log_content = serializers.BooleanField(required=False)

    # Fields a tenant admin may change about its own tenant; the rest are platform staff's.
    TENANT_ADMIN_FIELDS = {
        "model_preferences",
        "allowed_models",
        "cache_enabled",
        "semantic_cache_threshold",
        "cache_ttl_seconds",
        "cache_max_temperature",
        "log_content",
    }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(f"unknown field(s): {', '.join(sorted(unknown))}")
        return attrs


def config_to_model_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Flattens the config API's nested shape into Tenant model fields."""
    fields: dict[str, Any] = {}
    limits = data.get("rate_limits", {})
    for name in ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests"):
        if name in limits:
            fields[name] = limits[name]
    prefs = data.get("model_preferences", {})
    if "primary" in prefs:
        fields["primary_model"] = prefs["primary"]
    if "fallback" in prefs:
        fields["fallback_models"] = prefs["fallback"]
    if "strategy" in prefs:
        fields["routing_strategy"] = prefs["strategy"]
    quotas = data.get("quotas", {})
    if "monthly_tokens" in quotas:
        fields["monthly_token_quota"] = quotas["monthly_tokens"]
    if "monthly_cost_usd" in quotas:
        fields["monthly_cost_quota"] = quotas["monthly_cost_usd"]
    for name in (
        "allowed_models",
        "cache_enabled",
        "semantic_cache_threshold",
        "cache_ttl_seconds",
        "cache_max_temperature",
        "log_content",
    ):
        if name in data:
            fields[name] = data[name]
    return fields


def tenant_config_out(tenant: Tenant) -> dict[str, Any]:
    return {
        "rate_limits": {
            "requests_per_minute": tenant.requests_per_minute,
            "tokens_per_minute": tenant.tokens_per_minute,
            "max_concurrent_requests": tenant.max_concurrent_requests,
        },
        "quotas": {
            "monthly_tokens": tenant.monthly_token_quota,
            "monthly_cost_usd": (
                str(tenant.monthly_cost_quota) if tenant.monthly_cost_quota is not None else None
            ),
        },
        "model_preferences": {
            "primary": tenant.primary_model,
            "fallback": list(tenant.fallback_models),
            "strategy": tenant.routing_strategy,
        },
        "allowed_models": list(tenant.allowed_models),
        "cache_enabled": tenant.cache_enabled,
        "semantic_cache_threshold": tenant.semantic_cache_threshold,
        "cache_ttl_seconds": tenant.cache_ttl_seconds,
        "cache_max_temperature": tenant.cache_max_temperature,
        "log_content": tenant.log_content,
    }


def tenant_out(tenant: Tenant) -> dict[str, Any]:
    primary = next((d.domain for d in tenant.domains.all() if d.is_primary), None)
    return {
        "id": tenant.pk,
        "name": tenant.name,
        "slug": tenant.slug,
        "tier": tenant.tier,
        "is_active": tenant.is_active,
        "domain": primary,
        "created_at": tenant.created_at.isoformat(),
        "config": tenant_config_out(tenant),
    }


class TenantCreateIn(TenantConfigIn):
    name = serializers.CharField(max_length=200)
    slug = serializers.CharField(max_length=48, required=False)
    tier = serializers.ChoiceField(choices=Tier.choices, required=False)
    admin_email = serializers.EmailField(required=False)
    admin_password = serializers.CharField(required=False, write_only=True, trim_whitespace=False)


class TenantUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    tier = serializers.ChoiceField(choices=Tier.choices, required=False)
    is_active = serializers.BooleanField(required=False)


class TokenIn(serializers.Serializer):
    email = serializers.CharField(required=False)
    username = serializers.CharField(required=False)
    password = serializers.CharField(trim_whitespace=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not (attrs.get("email") or attrs.get("username")):
            raise serializers.ValidationError({"email": "email (or username) is required"})
        return attrs


class RefreshIn(serializers.Serializer):
    refresh = serializers.CharField()


class UserIn(serializers.Serializer):
    email = serializers.EmailField()
    password = serializers.CharField(trim_whitespace=False, write_only=True)
    is_admin = serializers.BooleanField(default=False)
    first_name = serializers.CharField(max_length=150, required=False, default="")
    last_name = serializers.CharField(max_length=150, required=False, default="")


class UserUpdateIn(serializers.Serializer):
    is_admin = serializers.BooleanField(required=False)
    is_active = serializers.BooleanField(required=False)
    first_name = serializers.CharField(max_length=150, required=False)
    last_name = serializers.CharField(max_length=150, required=False)
    password = serializers.CharField(trim_whitespace=False, write_only=True, required=False)


def user_out(user: AbstractUser) -> dict[str, Any]:
    return {
        "id": user.pk,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "is_admin": user.is_staff,
        "is_active": user.is_active,
        "date_joined": user.date_joined.isoformat(),
        "last_login": user.last_login.isoformat() if user.last_login else None,
    }


class ApiKeyIn(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=API_KEY_SCOPES), required=False, allow_empty=False
    )
    expires_at = serializers.DateTimeField(required=False)
    expires_in_days = serializers.IntegerField(min_value=1, required=False)
    user_id = serializers.IntegerField(required=False)
    requests_per_minute = serializers.IntegerField(min_value=1, required=False)
    tokens_per_minute = serializers.IntegerField(min_value=1, required=False)
    monthly_token_quota = serializers.IntegerField(min_value=0, required=False)
    monthly_cost_quota = serializers.DecimalField(
        max_digits=12, decimal_places=4, min_value=Decimal(0), required=False
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "expires_at" in attrs and "expires_in_days" in attrs:
            raise serializers.ValidationError("give expires_at or expires_in_days, not both")
        return attrs


class ApiKeyLimitsIn(serializers.Serializer):
    """A key's own limits; null removes one (then only the tenant's applies)."""

    requests_per_minute = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    tokens_per_minute = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    monthly_token_quota = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    monthly_cost_quota = serializers.DecimalField(
        max_digits=12, decimal_places=4, min_value=Decimal(0), required=False, allow_null=True
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise serializers.ValidationError(
                "give at least one of requests_per_minute, tokens_per_minute, monthly_token_quota, monthly_cost_quota"
            )
        return attrs


def api_key_out(api_key: ApiKey) -> dict[str, Any]:
    return {
        "id": api_key.pk,
        "name": api_key.name,
        "prefix": api_key.prefix,
        "user_id": api_key.user_id,
        "scopes": list(api_key.scopes),
        "created_at": api_key.created_at.isoformat(),
        "expires_at": api_key.expires_at.isoformat(),
        "revoked_at": api_key.revoked_at.isoformat() if api_key.revoked_at else None,
        "last_used_at": api_key.last_used_at.isoformat() if api_key.last_used_at else None,
        "requests_per_minute": api_key.requests_per_minute,
        "tokens_per_minute": api_key.tokens_per_minute,
        "monthly_token_quota": api_key.monthly_token_quota,
        "monthly_cost_quota": str(api_key.monthly_cost_quota)
        if api_key.monthly_cost_quota is not None
        else None,
    }
