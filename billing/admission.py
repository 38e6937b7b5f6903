"""Admission: rate limits (requests and tokens per minute) and monthly quotas, before a request
reaches a model, settled with the real usage after it.

One Lua script (billing/admission_scripts.py) checks and takes everything at once: the tenant's
buckets, the API key's own buckets when it has narrower limits, and the tenant's and key's
monthly budgets. Either all of it is taken or none, so a refusal by one never spends another.

Quotas admit while anything is left and reserve the request's worst case (prompt estimate plus
max_tokens, and its cost), so concurrent requests overspend by at most one reservation in total.

When Redis cannot be reached, ADMISSION_REDIS_FAILURE_MODE decides: "open" (the default) admits
against per-process buckets and the database's monthly totals (billing/admission_local.py);
"closed" refuses with 503. docs/billing.md explains the choice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any, Literal

import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from billing import admission_local as local
from billing import admission_scripts as lua
from billing.limits import BucketSpec, QuotaScope, bucket_specs, quota_scopes, quota_warning, rate_headers
from billing.selectors import month_bounds
from config.errors import ApiError
from config.redis import new_async_client
from tenants.models import ApiKey, Tenant

logger = logging.getLogger(__name__)

_MICRO = Decimal(1_000_000)
# Redis being unreachable, as opposed to a script error (a bug, which must not pass as an outage).
REDIS_DOWN_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def to_micro(cost: Decimal) -> int:
    """USD to whole micro-dollars, rounding a reservation up, never down."""
    return int((Decimal(cost) * _MICRO).to_integral_value(rounding=ROUND_CEILING))


@dataclass
class Admission:
    """One admitted request: what it reserved, so that settle() or release() can give back the
    difference. `headers` go on the answer (OpenAI's x-ratelimit-* and x-quota-warning)."""

    headers: dict[str, str]
    id: str
    tenant: Tenant
    reserved_tokens: int
    reserved_cost: Decimal
    mode: Literal["redis", "local"]
    buckets: list[BucketSpec] = field(default_factory=list)
    scopes: list[QuotaScope] = field(default_factory=list)
    done: bool = False


# --- Redis client and its health -----------------------------------------------------------------

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[str, aioredis.Redis, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)
# monotonic time until which this process does not ask Redis (it failed a moment ago)
_redis_down_until = 0.0


def _client() -> tuple[aioredis.Redis, dict[str, Any]]:
    """This event loop's client for ADMISSION_REDIS_URL, with its registered scripts."""
    loop = asyncio.get_running_loop()
    url = settings.ADMISSION_REDIS_URL
    entry = _clients.get(loop)
    if entry is None or entry[0] != url:
        timeout = settings.ADMISSION_REDIS_TIMEOUT_SECONDS
        # Past the pool's size a call waits (up to the timeout) rather than failing: a refusal
        # would be taken for an unreachable Redis and switch admission to fail-open mode.
        client = new_async_client(url, socket_timeout=timeout, pool_timeout=timeout)
        scripts = {
            name: client.register_script(source)
            for name, source in (
                ("admit", lua.ADMIT),
                ("settle", lua.SETTLE),
                ("init", lua.INIT_QUOTA),
                ("reconcile", lua.RECONCILE_QUOTA),
                ("peek", lua.PEEK),
            )
        }
        entry = (url, client, scripts)
        _clients[loop] = entry
    return entry[1], entry[2]


def _redis_usable() -> bool:
    return time.monotonic() >= _redis_down_until


def _mark_redis_down(exc: BaseException) -> None:
    global _redis_down_until
    _redis_down_until = time.monotonic() + settings.ADMISSION_REDIS_RETRY_SECONDS
    logger.warning("admission: Redis unreachable (%s); mode %s", exc, settings.ADMISSION_REDIS_FAILURE_MODE)


def forget_redis_failure() -> None:
    """Lets the next call try Redis at once (tests, and after an operator fixed it)."""
    global _redis_down_until
    _redis_down_until = 0.0


def _unavailable() -> ApiError:
    retry = max(1, math.ceil(settings.ADMISSION_REDIS_RETRY_SECONDS))
    return ApiError(
        503,
        "Admission control is unavailable (its rate-limit store cannot be reached); retry shortly",
        "admission_unavailable",
        error_type="service_unavailable",
        headers={"Retry-After": str(retry)},
    )


# --- the API the gateway calls -------------------------------------------------------------------


async def admit(
    tenant: Tenant, api_key: ApiKey | None, reserved_tokens: int, reserved_cost: Decimal
) -> Admission:
    """Admits one request or raises ApiError (429 rate limited, 402 quota exhausted, 503 when
    Redis is down in "closed" mode). Call settle() or release() exactly once afterwards."""
    reserved_tokens = max(0, int(reserved_tokens))
    reserved_cost = max(Decimal(0), Decimal(reserved_cost))
    month = datetime.now(UTC).date()
    admission = Admission(
        headers={},
        id=uuid.uuid4().hex,
        tenant=tenant,
        reserved_tokens=reserved_tokens,
        reserved_cost=reserved_cost,
        mode="redis",
        buckets=bucket_specs(tenant, api_key, reserved_tokens),
        scopes=quota_scopes(tenant, api_key, month, reserved_tokens, to_micro(reserved_cost)),
    )
    if _redis_usable():
        try:
            return await _admit_redis(admission)
        except REDIS_DOWN_ERRORS as exc:
            _mark_redis_down(exc)
    if settings.ADMISSION_REDIS_FAILURE_MODE == "closed":
        raise _unavailable()
    admission.mode = "local"
    return await _admit_local(admission)


async def settle(admission: Admission, used_tokens: int, cost: Decimal) -> None:
    """Replaces the reservation with the real use. Idempotent; never raises for Redis trouble
    (the usage row is the truth, and reconciliation brings the counters back to it)."""
    if admission.done:
        return
    admission.done = True
    used_tokens = max(0, int(used_tokens))
    used_micro = max(0, to_micro(Decimal(cost)))
    if admission.mode == "local":
        local.settle(admission, used_tokens, used_micro)
        return
    try:
        await _settle_redis(admission, used_tokens, used_micro)
    except REDIS_DOWN_ERRORS as exc:
        _mark_redis_down(exc)


async def release(admission: Admission) -> None:
    """Nothing was used (the request failed before its first token): the reservation goes
    back. The request still counts against requests per minute."""
    await settle(admission, 0, Decimal(0))


# --- Redis mode ------------------------------------------------------------------------------


async def _admit_redis(admission: Admission) -> Admission:
    _, scripts = _client()
    keys = [_marker_key(admission), *(b.key for b in admission.buckets)]
    args: list[Any] = [
        len(admission.buckets),
        len(admission.scopes),
        admission.id,
        settings.ADMISSION_RESERVATION_TTL_SECONDS,
        settings.QUOTA_WARNING_PERCENT / 100,
    ]
    for bucket in admission.buckets:
        args += [bucket.capacity, bucket.capacity / 60, bucket.cost]
    for scope in admission.scopes:
        keys += [scope.key, scope.key + ":resv"]
        args += [scope.token_limit_arg, scope.cost_limit_arg, scope.tokens, scope.cost_micro]
    # Each pass either answers or finds one more scope to load from the database first.
    for _ in range(len(admission.scopes) + 1):
        result = [_decoded(v) for v in await scripts["admit"](keys=keys, args=args)]
        if result[0] != -2:
            return await _conclude(admission, result)
        tokens, cost = await _month_used(admission.scopes[int(result[1]) - 1])
        await _init_quota(admission.scopes[int(result[1]) - 1], tokens, cost)
    raise RuntimeError("admission: quota counters could not be loaded")


async def _admit_local(admission: Admission) -> Admission:
    for scope in admission.scopes:
        if local.needs_load(scope):
            tokens, cost = await _month_used(scope)
            local.load(scope, tokens, to_micro(cost))
    return await _conclude(admission, local.admit(admission))


async def _conclude(admission: Admission, result: list[Any]) -> Admission:
    """Turns the script's answer (Redis' or the local one's) into headers or an ApiError."""
    status = int(result[0])
    if status == -3:
        scope = admission.scopes[int(result[1]) - 1]
        await _quota_refused(
            admission, scope, "tokens" if int(result[2]) == 1 else "cost", bool(int(result[3]))
        )
    if status == -1:
        bucket = admission.buckets[int(result[2]) - 1]
        _refusal_metric(admission, "request_too_large")
        raise ApiError(
            429,
            f"Request too large: it needs {admission.reserved_tokens} tokens, more than the "
            f"{bucket.owner}'s limit of {bucket.capacity} tokens per minute; lower max_tokens or the prompt",
            "rate_limit_exceeded",
            error_type="rate_limit_error",
        )
    levels = result[3 : 3 + 3 * len(admission.buckets)]
    admission.headers = rate_headers(admission.buckets, levels)
    if status == 0:
        _refusal_metric(admission, "rate_limit")
        bucket = admission.buckets[int(result[2]) - 1]
        retry_after = max(1, math.ceil(int(result[1]) / 1000))
        raise ApiError(
            429,
            f"Rate limit reached: {bucket.capacity} {bucket.unit} per minute for this {bucket.owner}; "
            f"retry in {retry_after} s",
            "rate_limit_exceeded",
            error_type="rate_limit_error",
            headers={**admission.headers, "Retry-After": str(retry_after)},
        )
    quota_values = result[3 + 3 * len(admission.buckets) :]
    for index, scope in enumerate(admission.scopes):
        used_t, reserved_t, used_c, reserved_c, first = (
            int(v) for v in quota_values[5 * index : 5 * index + 5]
        )
        scope.observe(used_t + reserved_t, used_c + reserved_c)
        if first:
            await _audit_async(
                "quota.warning", admission.tenant, scope.audit_detail(settings.QUOTA_WARNING_PERCENT)
            )
    warning = quota_warning(admission.scopes)
    if warning:
        admission.headers["x-quota-warning"] = warning
    return admission


async def _settle_redis(admission: Admission, used_tokens: int, used_micro: int) -> None:
    _, scripts = _client()
    token_buckets = [b for b in admission.buckets if b.unit == "tokens"]
    keys = [_marker_key(admission), *(b.key for b in token_buckets)]
    args: list[Any] = [
        len(token_buckets),
        len(admission.scopes),
        admission.id,
        settings.ADMISSION_RESERVATION_TTL_SECONDS,
    ]
    for bucket in token_buckets:
        args += [bucket.capacity, bucket.capacity / 60, admission.reserved_tokens - used_tokens]
    for scope in admission.scopes:
        keys += [scope.key, scope.key + ":resv"]
        args += [used_tokens, used_micro]
    await scripts["settle"](keys=keys, args=args)


async def _month_used(scope: QuotaScope) -> tuple[int, Decimal]:
    """The scope's month so far, from the database (rollups plus the ledger since)."""
    from billing.selectors import api_key_month_used, tenant_month_used

    if scope.api_key_id is None:
        return await sync_to_async(tenant_month_used)(scope.tenant, scope.month)
    return await sync_to_async(api_key_month_used)(scope.tenant, scope.api_key_id, scope.month)


def _month_expiry(scope: QuotaScope) -> int:
    """Unix time a month's counters go: a week after the month, for late settlements."""
    _, last = month_bounds(scope.month)
    return int(datetime.combine(last, datetime.min.time(), tzinfo=UTC).timestamp()) + 8 * 86400


async def _init_quota(scope: QuotaScope, tokens: int, cost: Decimal) -> None:
    _, scripts = _client()
    await scripts["init"](keys=[scope.key], args=[tokens, to_micro(cost), _month_expiry(scope)])


async def _quota_refused(admission: Admission, scope: QuotaScope, kind: str, first: bool) -> None:
    _refusal_metric(admission, "quota")
    if first:
        await _audit_async("quota.exhausted", admission.tenant, scope.audit_detail(100) | {"exhausted": kind})
    limit = scope.token_limit if kind == "tokens" else scope.cost_limit
    unit = "tokens" if kind == "tokens" else "USD"
    raise ApiError(
        402,
        f"Monthly {kind} quota of this {scope.owner} is used up ({limit} {unit}); requests are refused "
        "until the month ends or an admin raises the quota",
        "quota_exceeded",
        error_type="insufficient_quota",
    )


def _refusal_metric(admission: Admission, reason: str) -> None:
    """Rate-limit and quota refusals per tenant (gateway_admission_refusals_total)."""
    from config.metrics import count_refusal

    count_refusal(admission.tenant.slug, reason)
    logger.info("admission refused: tenant=%s reason=%s", admission.tenant.slug, reason)


async def _audit_async(action: str, tenant: Tenant, detail: dict[str, Any]) -> None:
    from billing.audit import record_audit

    try:
        await sync_to_async(record_audit)(action, tenant=tenant, detail=detail)
    except Exception:  # a failed audit write must not fail the chat request
        logger.exception("admission: could not record %s for %s", action, tenant.slug)


def _marker_key(admission: Admission) -> str:
    from config.redis import rkey

    return rkey("adm", "{" + admission.tenant.slug + "}", admission.id)


def _decoded(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


# --- reads for the usage endpoint, and upkeep ------------------------------------------------


def rate_limit_remaining(tenant: Tenant) -> dict[str, int]:
    """The tenant's buckets now, without taking anything (the usage endpoint; synchronous, as
    its view is)."""
    result: dict[str, int] = {}
    for bucket in bucket_specs(tenant, None, 0):
        if _redis_usable():
            try:
                remaining, _ = _sync_peek(keys=[bucket.key], args=[bucket.capacity, bucket.capacity / 60])
                result[bucket.unit] = int(remaining)
                continue
            except REDIS_DOWN_ERRORS as exc:
                _mark_redis_down(exc)
        result[bucket.unit] = local.peek(bucket)
    return result


def _sync_peek(keys: list[str], args: list[Any]) -> list[Any]:
    return list(_sync_redis()[1](keys=keys, args=args))


def _sync_redis() -> tuple[redis.Redis, Any]:
    """A synchronous client (for views) and its PEEK script."""
    global _sync_client
    url = settings.ADMISSION_REDIS_URL
    if _sync_client is None or _sync_client[0] != url:
        timeout = settings.ADMISSION_REDIS_TIMEOUT_SECONDS
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        _sync_client = (url, client, client.register_script(lua.PEEK), client.register_script(lua.INIT_QUOTA))
    return _sync_client[1], _sync_client[2]


_sync_client: tuple[str, redis.Redis, Any, Any] | None = None


def usage_endpoint_state(tenant: Tenant) -> tuple[dict[str, int], int, Decimal]:
    """What the usage endpoint shows live: rate_limit_remaining() and month_used_now(), read in
    one Redis round trip (a pipeline) instead of one per bucket plus one for the budget."""
    buckets = bucket_specs(tenant, None, 0)
    [scope] = quota_scopes(tenant, None, datetime.now(UTC).date(), 0, 0)
    if _redis_usable():
        try:
            client, peek = _sync_redis()
            pipe = client.pipeline(transaction=False)
            for bucket in buckets:
                peek(keys=[bucket.key], args=[bucket.capacity, bucket.capacity / 60], client=pipe)
            pipe.hmget(scope.key, ["init", "used_tokens", "used_cost"])
            *levels, (loaded, tokens, cost) = pipe.execute()
            remaining = {bucket.unit: int(level[0]) for bucket, level in zip(buckets, levels, strict=True)}
            if loaded:
                return remaining, int(tokens or 0), Decimal(int(cost or 0)) / _MICRO
            return (remaining, *month_used_now(tenant))
        except REDIS_DOWN_ERRORS as exc:
            _mark_redis_down(exc)
    return rate_limit_remaining(tenant), *month_used_now(tenant)


def month_used_now(tenant: Tenant) -> tuple[int, Decimal]:
    """The tenant's tokens and cost this month as admission counts them (its Redis counters),
    or from the database when Redis has not loaded them or cannot be reached."""
    from billing.selectors import tenant_month_used

    [scope] = quota_scopes(tenant, None, datetime.now(UTC).date(), 0, 0)
    if not _redis_usable():
        return tenant_month_used(tenant)
    try:
        client, _ = _sync_redis()
        loaded, tokens, cost = client.hmget(scope.key, ["init", "used_tokens", "used_cost"])
        if loaded:
            return int(tokens or 0), Decimal(int(cost or 0)) / _MICRO
        used_tokens, used_cost = tenant_month_used(tenant)
        # Loaded as admission would load it, so the next read (and admission) need no database.
        assert _sync_client is not None
        _sync_client[3](keys=[scope.key], args=[used_tokens, to_micro(used_cost), _month_expiry(scope)])
        return used_tokens, used_cost
    except REDIS_DOWN_ERRORS as exc:
        _mark_redis_down(exc)
        return tenant_month_used(tenant)


async def reconcile_quota(tenant: Tenant) -> bool:
    """Sets the tenant's month counters in Redis to the database's totals (periodic), which
    undoes drift from a Redis outage or a process that died between its usage row and settle."""
    from billing.selectors import tenant_month_used

    month = datetime.now(UTC).date()
    [scope] = quota_scopes(tenant, None, month, 0, 0)
    tokens, cost = await sync_to_async(tenant_month_used)(tenant, month)
    _, scripts = _client()
    return bool(await scripts["reconcile"](keys=[scope.key], args=[tokens, to_micro(cost)]))


def flush_admission_state() -> None:
    """Drops every bucket, budget and reservation of this deployment's prefix, and this
    process' fallback state (tests, between cases; never in production)."""
    from config.redis import get_redis

    client = get_redis()
    for part in ("rl", "quota", "adm"):
        keys = list(client.scan_iter(f"{settings.REDIS_KEY_PREFIX}:{part}:*", count=1000))
        if keys:
            client.delete(*keys)
    local.forget_local_state()
    forget_redis_failure()
