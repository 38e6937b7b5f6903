"""Writes for tenants, their users and API keys."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify
from django_tenants.utils import schema_context

from config.errors import ApiError
from tenants.models import ApiKey, Domain, Tenant
from tenants.selectors import API_KEY_PREFIX, forget_cached_tenants, hash_api_key, is_api_key_token

RESERVED_SLUGS = {"public", "www", "admin", "api", "static", "media", "pg", "information-schema"}
SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{1,46}[a-z0-9]$")

# What an API key may be allowed to do. `chat` covers conversations and completions.
API_KEY_SCOPES = ("chat", "models", "usage", "admin")
DEFAULT_API_KEY_SCOPES = ["chat", "models"]


def slug_from_name(name: str) -> str:
    return slugify(name)[:48].strip("-")


def validate_slug(slug: str) -> None:
    if not SLUG_RE.match(slug) or "--" in slug:
        raise ApiError(
            400,
            "slug must be 3-48 characters of lowercase letters, digits and single hyphens, "
            "starting with a letter",
            "invalid_slug",
            param="slug",
        )
    if slug in RESERVED_SLUGS or slug.startswith("pg-"):
        raise ApiError(400, f"slug '{slug}' is reserved", "reserved_slug", param="slug")


def schema_name_for(slug: str) -> str:
    return "t_" + slug.replace("-", "_")


def tenant_domain_for(slug: str) -> str:
    return f"{slug}.{settings.TENANT_BASE_DOMAIN}"


def tenant_create(
    *,
    name: str,
    slug: str | None = None,
    admin_email: str | None = None,
    admin_password: str | None = None,
    **config: Any,
) -> Tenant:
    """Creates the tenant, its schema (migrated), its domain and optionally its first admin.

    Schema creation is DDL that Postgres runs inside our transaction, so a failure anywhere
    (a taken slug, a bad admin password) leaves no tenant row, no domain and no schema behind.
    """
    slug = slug or slug_from_name(name)
    validate_slug(slug)
    if Tenant.objects.filter(slug=slug).exists():
        raise ApiError(409, f"a tenant with slug '{slug}' already exists", "tenant_exists", param="slug")
    if bool(admin_email) != bool(admin_password):
        raise ApiError(
            400, "admin_email and admin_password go together", "invalid_admin", param="admin_email"
        )
    with transaction.atomic():
        tenant = Tenant(name=name, slug=slug, schema_name=schema_name_for(slug), **config)
        tenant.full_clean(exclude=["schema_name"])
        tenant.save(verbosity=0)  # creates and migrates the schema
        Domain.objects.create(domain=tenant_domain_for(slug), tenant=tenant, is_primary=True)
        if admin_email and admin_password:
            with schema_context(tenant.schema_name):
                user_create(email=admin_email, password=admin_password, is_admin=True)
    forget_cached_tenants()
    return tenant


def tenant_update(tenant: Tenant, **fields: Any) -> Tenant:
    for name, value in fields.items():
        setattr(tenant, name, value)
    tenant.full_clean(exclude=["schema_name"])
    tenant.save()
    forget_cached_tenants()
    return tenant


def user_create(
    *,
    email: str,
    password: str,
    is_admin: bool = False,
    first_name: str = "",
    last_name: str = "",
) -> AbstractUser:
    """Creates a user in the current schema; the email is the username.

    A tenant admin is `is_staff` and `is_superuser` inside its own schema: its admin site only
    registers models of that tenant, so superuser there grants nothing outside it.
    """
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    User = get_user_model()
    email = User.objects.normalize_email(email).strip()
    if User.objects.filter(username__iexact=email).exists():
        raise ApiError(409, f"a user with email '{email}' already exists", "user_exists", param="email")
    user = User(
        username=email,
        email=email,
        first_name=first_name,
        last_name=last_name,
        is_staff=is_admin,
        is_superuser=is_admin,
    )
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ApiError(400, " ".join(exc.messages), "weak_password", param="password") from exc
    user.set_password(password)
    user.save()
    return user  # type: ignore[no-any-return]


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    secret: str


def api_key_create(
    *,
    tenant: Tenant,
    user_id: int,
    name: str,
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    monthly_token_quota: int | None = None,
    monthly_cost_quota: Decimal | None = None,
    secret: str | None = None,
) -> CreatedApiKey:
    """Mints a key (or, with `secret`, registers a key imported from another system)."""
    scopes = list(dict.fromkeys(scopes if scopes is not None else DEFAULT_API_KEY_SCOPES))
    unknown = [scope for scope in scopes if scope not in API_KEY_SCOPES]
    if unknown or not scopes:
        raise ApiError(
            400,
            f"scopes must be a non-empty subset of {', '.join(API_KEY_SCOPES)}",
            "invalid_scopes",
            param="scopes",
        )
    now = timezone.now()
    expires_at = expires_at or now + timedelta(days=settings.API_KEY_DEFAULT_TTL_DAYS)
    if expires_at <= now:
        raise ApiError(400, "expires_at must be in the future", "invalid_expiry", param="expires_at")
    if expires_at > now + timedelta(days=settings.API_KEY_MAX_TTL_DAYS):
        raise ApiError(
            400,
            f"expires_at may be at most {settings.API_KEY_MAX_TTL_DAYS} days ahead",
            "invalid_expiry",
            param="expires_at",
        )
    if secret is not None:
        if len(secret) < 32 or not is_api_key_token(secret) or any(c.isspace() for c in secret):
            raise ApiError(
                400, "an imported key needs at least 32 characters and must not be a JWT", "invalid_key"
            )
        if ApiKey.objects.filter(key_hash=hash_api_key(secret)).exists():
            raise ApiError(409, "this key is already registered", "key_exists")
    secret = secret or API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        tenant=tenant,
        user_id=user_id,
        name=name,
        prefix=secret[:12],
        key_hash=hash_api_key(secret),
        scopes=scopes,
        expires_at=expires_at,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
        monthly_token_quota=monthly_token_quota,
        monthly_cost_quota=monthly_cost_quota,
    )
    return CreatedApiKey(api_key=api_key, secret=secret)


API_KEY_LIMIT_FIELDS = (
    "requests_per_minute",
    "tokens_per_minute",
    "monthly_token_quota",
    "monthly_cost_quota",
)


def api_key_update_limits(api_key: ApiKey, **limits: Any) -> dict[str, dict[str, Any]]:
    """Sets a key's own limits and quotas (None: only the tenant's apply) and returns what
    changed, as {field: {"from", "to"}}. Takes effect at the key's next request: admission reads
    the limits from the key on every call, and this process' key cache is dropped."""
    unknown = set(limits) - set(API_KEY_LIMIT_FIELDS)
    if unknown:
        raise ValueError(f"not a key limit: {', '.join(sorted(unknown))}")
    changed: dict[str, dict[str, Any]] = {}
    for name, value in limits.items():
        before = getattr(api_key, name)
        if before != value:
            changed[name] = {"from": before, "to": value}
            setattr(api_key, name, value)
    if changed:
        api_key.full_clean(exclude=["tenant", "key_hash"])
        api_key.save(update_fields=list(changed))
        forget_cached_tenants()
    return changed


def api_key_revoke(api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    forget_cached_tenants()
    return api_key
