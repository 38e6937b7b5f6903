"""Reads of tenants and API keys, with a short in-process cache on the hot path.

Every request resolves its tenant (and often an API key) before anything else, so these lookups
are cached per process for a few seconds. A change made through our services clears this process'
entries at once; other processes see it within `TENANT_CACHE_SECONDS`.
"""

from __future__ import annotations

import hashlib
import time
from typing import TypeVar

from django.db import connection
from django.utils import timezone

from config.env import envfloat
from tenants.models import ApiKey, Domain, Tenant

TENANT_CACHE_SECONDS = envfloat("TENANT_CACHE_SECONDS", 5.0)
API_KEY_PREFIX = "gwk_"
# Keys imported from another system (`import_api_key`) keep their own format, so a key is
# recognised by not being a JWT rather than by our prefix.
MIN_API_KEY_LENGTH = 8


def is_api_key_token(raw: str) -> bool:
    """A bearer credential that is not a JWT (header.payload.signature) is an API key."""
    return len(raw) >= MIN_API_KEY_LENGTH and raw.count(".") != 2

_T = TypeVar("_T")
_cache: dict[str, tuple[float, object]] = {}


def _cached(key: str) -> object | None:
    entry = _cache.get(key)
    if entry is None or entry[0] < time.monotonic():
        return None
    return entry[1]


def _remember(key: str, value: _T) -> _T:
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[key] = (time.monotonic() + TENANT_CACHE_SECONDS, value)
    return value


def forget_cached_tenants() -> None:
    """Drops this process' cached tenants and keys (after a write, and between tests)."""
    _cache.clear()


def tenant_get_by_slug(slug: str) -> Tenant | None:
    key = f"slug:{slug}"
    hit = _cached(key)
    if isinstance(hit, Tenant):
        return hit
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None or tenant.schema_name == "public":
        return None
    return _remember(key, tenant)


def tenant_get_by_domain(host: str) -> Tenant | None:
    key = f"domain:{host}"
    hit = _cached(key)
    if isinstance(hit, Tenant):
        return hit
    domain = Domain.objects.select_related("tenant").filter(domain=host).first()
    if domain is None or domain.tenant.schema_name == "public":
        return None
    return _remember(key, domain.tenant)


def tenant_get_by_identifier(identifier: str) -> Tenant | None:
    """A tenant by numeric id or by slug, as URLs of the tenant API accept either."""
    query = Tenant.objects.exclude(schema_name="public")
    if identifier.isdigit():
        return query.filter(pk=int(identifier)).first()
    return query.filter(slug=identifier).first()


def hash_api_key(raw_key: str) -> str:
    # Keys carry 190 bits of randomness, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_get_active(raw_key: str) -> ApiKey | None:
    """The live (not revoked, not expired) key for this secret, with its tenant loaded."""
    if not is_api_key_token(raw_key):
        return None
    key_hash = hash_api_key(raw_key)
    cache_key = f"key:{key_hash}"
    hit = _cached(cache_key)
    api_key = hit if isinstance(hit, ApiKey) else None
    if api_key is None:
        api_key = ApiKey.objects.select_related("tenant").filter(key_hash=key_hash).first()
        if api_key is None:
            return None
        _remember(cache_key, api_key)
    if api_key.revoked_at is not None or api_key.expires_at <= timezone.now():
        return None
    return api_key


def current_tenant() -> Tenant | None:
    """The tenant whose schema is active on this connection, or None on the public schema."""
    tenant = getattr(connection, "tenant", None)
    if tenant is None or getattr(tenant, "schema_name", "public") == "public":
        return None
    return tenant  # type: ignore[no-any-return]


def current_tenant_slug() -> str:
    tenant = current_tenant()
    return tenant.slug if tenant is not None else "public"
