"""Tenants, their domains and configuration, and tenant API keys.

These tables live in the public schema: they are what lets a request find its tenant before any
tenant schema is active. Everything a tenant owns (users, conversations, cache) lives in its schema.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Tier(models.TextChoices):
    FREE = "free", "Free"
    PRO = "pro", "Pro"
    ENTERPRISE = "enterprise", "Enterprise"


class RoutingStrategy(models.TextChoices):
    PREFERENCE = "preference", "Tenant preference, then fallbacks"
    COST = "cost", "Cheapest allowed model"
    LATENCY = "latency", "Lowest recent time to first token"


def _default_rpm() -> int:
    return int(settings.RATE_LIMIT_REQUESTS_PER_MINUTE)


def _default_tpm() -> int:
    return int(settings.RATE_LIMIT_TOKENS_PER_MINUTE)


def _default_primary_model() -> str:
    return str(settings.DEFAULT_MODEL)


def _default_threshold() -> float:
    return float(settings.SEMANTIC_CACHE_THRESHOLD)


def _default_cache_ttl() -> int:
    return int(settings.CACHE_TTL_SECONDS)


def _default_concurrency() -> int:
    return int(settings.TENANT_MAX_CONCURRENT_REQUESTS)


class Tenant(TenantMixin):
    """An organisation. Its `schema_name` is derived from `slug` and never changes."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=48, unique=True)
    tier = models.CharField(max_length=20, choices=Tier.choices, default=Tier.FREE)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Limits (admission).
    requests_per_minute = models.PositiveIntegerField(default=_default_rpm)
    tokens_per_minute = models.PositiveIntegerField(default=_default_tpm)
    max_concurrent_requests = models.PositiveIntegerField(default=_default_concurrency)
    monthly_token_quota = models.BigIntegerField(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="Empty: unlimited."
    )
    monthly_cost_quota = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="USD per calendar month. Empty: unlimited.",
    )

    # Models and routing.
    primary_model = models.CharField(max_length=100, default=_default_primary_model)
    fallback_models = models.JSONField(default=list, blank=True)
    allowed_models = models.JSONField(
        default=list, blank=True, help_text="Model names this tenant may use. Empty: all."
    )
    routing_strategy = models.CharField(
        max_length=20, choices=RoutingStrategy.choices, default=RoutingStrategy.PREFERENCE
    )

    # Cache.
    cache_enabled = models.BooleanField(default=True)
    semantic_cache_threshold = models.FloatField(
        default=_default_threshold, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    cache_ttl_seconds = models.PositiveIntegerField(default=_default_cache_ttl)
    cache_max_temperature = models.FloatField(
        default=0.7, help_text="Requests sampled hotter than this bypass the cache."
    )

    # Privacy.
    log_content = models.BooleanField(default=False, help_text="Allow prompt and answer text in logs.")

    auto_create_schema = True
    auto_drop_schema = True

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.slug

    def allows_model(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models


class Domain(DomainMixin):
    def __str__(self) -> str:
        return self.domain


class ApiKey(models.Model):
    """A tenant API key. Only a SHA-256 of the secret is stored; the secret is shown once.

    Kept in the public schema (with the tenant) so that a request carrying nothing but the key,
    as the `openai` SDK sends it, can be resolved to its tenant in one indexed lookup.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    # The owning user lives in the tenant's schema, out of reach of a foreign key.
    user_id = models.BigIntegerField()
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="First characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    monthly_token_quota = models.BigIntegerField(
        null=True, blank=True, validators=[MinValueValidator(0)], help_text="Empty: only the tenant's quota."
    )
    monthly_cost_quota = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="USD per calendar month spent through this key. Empty: only the tenant's quota.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "user_id"])]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
