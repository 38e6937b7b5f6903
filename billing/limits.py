"""Which limits apply to a request: the buckets and quota scopes admission checks, and their keys.

The tenant's limits always apply. An API key with its own requests or tokens per minute, or its
own monthly token or cost quota, gets buckets and a budget of its own on top: a key's limit can
narrow the tenant's, never widen it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from django.conf import settings

from config.redis import rkey
from tenants.models import ApiKey, Tenant

_MICRO = Decimal(1_000_000)


@dataclass
class BucketSpec:
    key: str
    unit: str  # requests | tokens
    capacity: int  # per minute; refills at capacity/60 a second
    cost: int  # what this request takes
    owner: str  # "tenant" | "API key", for messages


@dataclass
class QuotaScope:
    key: str
    tenant: Tenant
    api_key_id: int | None
    month: date
    token_limit: int | None
    cost_limit: Decimal | None
    tokens: int  # this request's reservation
    cost_micro: int
    share: float | None = None  # of the tightest limit, after this reservation
    tokens_committed: int = 0  # used and reserved, after this reservation
    cost_committed: Decimal = Decimal(0)

    @property
    def owner(self) -> str:
        return "tenant" if self.api_key_id is None else "API key"

    @property
    def token_limit_arg(self) -> int:
        return -1 if self.token_limit is None else int(self.token_limit)

    @property
    def cost_limit_arg(self) -> int:
        return -1 if self.cost_limit is None else int(self.cost_limit * _MICRO)

    def observe(self, tokens_committed: int, cost_micro_committed: int) -> None:
        """Records how much of the budget is used or reserved now (after this request)."""
        shares = []
        if self.token_limit:
            shares.append(tokens_committed / self.token_limit)
        if self.cost_limit:
            shares.append(cost_micro_committed / float(self.cost_limit * _MICRO))
        self.share = max(shares) if shares else None
        self.tokens_committed = tokens_committed
        self.cost_committed = Decimal(cost_micro_committed) / _MICRO

    def describe(self) -> str:
        percent = int((self.share or 0) * 100)
        return f"{self.owner} monthly quota {percent}% used"

    def audit_detail(self, threshold_percent: int) -> dict[str, object]:
        return {
            "scope": self.owner,
            "api_key_id": self.api_key_id,
            "month": self.month.strftime("%Y-%m"),
            "threshold_percent": threshold_percent,
            "token_limit": self.token_limit,
            "cost_limit": str(self.cost_limit) if self.cost_limit is not None else None,
            "tokens_committed": self.tokens_committed,
            "cost_committed": str(self.cost_committed),
        }


def _tag(tenant: Tenant) -> str:
    # A hash tag: every key of one tenant lands on one Redis Cluster slot, as a script needs.
    return "{" + tenant.slug + "}"


def bucket_specs(tenant: Tenant, api_key: ApiKey | None, reserved_tokens: int) -> list[BucketSpec]:
    # A limit of 0 would never refill (and divide by zero): suspend a tenant with is_active.
    specs = [
        BucketSpec(
            rkey("rl", _tag(tenant), "tenant", "rpm"),
            "requests",
            max(1, tenant.requests_per_minute),
            1,
            "tenant",
        ),
        BucketSpec(
            rkey("rl", _tag(tenant), "tenant", "tpm"),
            "tokens",
            max(1, tenant.tokens_per_minute),
            reserved_tokens,
            "tenant",
        ),
    ]
    if api_key is not None and api_key.requests_per_minute:
        specs.append(
            BucketSpec(
                rkey("rl", _tag(tenant), "key", api_key.pk, "rpm"),
                "requests",
                api_key.requests_per_minute,
                1,
                "API key",
            )
        )
    if api_key is not None and api_key.tokens_per_minute:
        specs.append(
            BucketSpec(
                rkey("rl", _tag(tenant), "key", api_key.pk, "tpm"),
                "tokens",
                api_key.tokens_per_minute,
                reserved_tokens,
                "API key",
            )
        )
    return specs


def quota_scopes(
    tenant: Tenant,
    api_key: ApiKey | None,
    month: date,
    reserved_tokens: int,
    reserved_cost_micro: int,
) -> list[QuotaScope]:
    """The tenant's month (always counted, so that a quota set mid-month starts from the truth)
    and, with an API key, the key's month."""
    period = month.strftime("%Y-%m")
    scopes = [
        QuotaScope(
            rkey("quota", _tag(tenant), "tenant", period),
            tenant,
            None,
            month,
            tenant.monthly_token_quota,
            tenant.monthly_cost_quota,
            reserved_tokens,
            reserved_cost_micro,
        )
    ]
    if api_key is not None:
        scopes.append(
            QuotaScope(
                rkey("quota", _tag(tenant), "key", api_key.pk, period),
                tenant,
                api_key.pk,
                month,
                api_key.monthly_token_quota,
                api_key.monthly_cost_quota,
                reserved_tokens,
                reserved_cost_micro,
            )
        )
    return scopes


def reset_header(milliseconds: int) -> str:
    """OpenAI's duration format for x-ratelimit-reset-*: 850ms, 12.5s, 1m30s."""
    if milliseconds <= 0:
        return "0s"
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    minutes, ms = divmod(milliseconds, 60_000)
    seconds = f"{ms / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def rate_headers(buckets: list[BucketSpec], levels: list[Any]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers: per unit, the most constraining bucket (tenant or key)."""
    headers: dict[str, str] = {}
    for unit in ("requests", "tokens"):
        best: tuple[int, int, int] | None = None
        for index, bucket in enumerate(buckets):
            if bucket.unit != unit:
                continue
            remaining, reset_ms, capacity = (int(v) for v in levels[3 * index : 3 * index + 3])
            if best is None or remaining < best[0]:
                best = (remaining, reset_ms, capacity)
        if best is not None:
            headers[f"x-ratelimit-limit-{unit}"] = str(best[2])
            headers[f"x-ratelimit-remaining-{unit}"] = str(best[0])
            headers[f"x-ratelimit-reset-{unit}"] = reset_header(best[1])
    return headers


def quota_warning(scopes: list[QuotaScope]) -> str:
    parts = [
        scope.describe()
        for scope in scopes
        if scope.share is not None and scope.share * 100 >= settings.QUOTA_WARNING_PERCENT
    ]
    return "; ".join(parts)
