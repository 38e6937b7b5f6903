"""Admission while Redis is unreachable, in "open" mode: the same buckets and budgets, kept in
this process alone, with the same answers as the Lua script (billing/admission_scripts.py).

Each process enforces ADMISSION_LOCAL_LIMIT_SHARE of every per-minute limit (set it to
1/replicas to keep the fleet's total). Budgets start from the database's monthly totals, which
every settled request updates, reloaded every QUOTA_RELOAD_SECONDS, so a tenant cannot spend
past its quota by more than what other processes spend in that interval.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

from billing.limits import BucketSpec, QuotaScope

if TYPE_CHECKING:
    from billing.admission import Admission

QUOTA_RELOAD_SECONDS = 30.0


@dataclass
class _Budget:
    used_tokens: int
    used_micro: int
    loaded_at: float
    reserved: dict[str, tuple[int, int]] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)

    def committed(self) -> tuple[int, int]:
        tokens = self.used_tokens + sum(t for t, _ in self.reserved.values())
        micro = self.used_micro + sum(c for _, c in self.reserved.values())
        return tokens, micro


_lock = threading.Lock()
_buckets: dict[str, tuple[float, float]] = {}  # key -> (level, monotonic time)
_budgets: dict[str, _Budget] = {}


def forget_local_state() -> None:
    with _lock:
        _buckets.clear()
        _budgets.clear()


def _capacity(bucket: BucketSpec) -> float:
    return max(1.0, bucket.capacity * settings.ADMISSION_LOCAL_LIMIT_SHARE)


def _level(bucket: BucketSpec, now: float) -> float:
    capacity = _capacity(bucket)
    level, at = _buckets.get(bucket.key, (capacity, now))
    return min(capacity, level + max(0.0, now - at) * capacity / 60)


def needs_load(scope: QuotaScope) -> bool:
    budget = _budgets.get(scope.key)
    return budget is None or time.monotonic() - budget.loaded_at > QUOTA_RELOAD_SECONDS


def load(scope: QuotaScope, used_tokens: int, used_micro: int) -> None:
    """Takes the database's totals (which include every settled request) as the new base."""
    with _lock:
        budget = _budgets.get(scope.key)
        if budget is None:
            _budgets[scope.key] = _Budget(used_tokens, used_micro, time.monotonic())
        else:
            budget.used_tokens, budget.used_micro, budget.loaded_at = used_tokens, used_micro, time.monotonic()


def admit(admission: Admission) -> list[Any]:
    """Checks and takes, like the ADMIT script, and answers in its format."""
    now = time.monotonic()
    warn = settings.QUOTA_WARNING_PERCENT / 100
    with _lock:
        for index, scope in enumerate(admission.scopes, start=1):
            budget = _budgets[scope.key]
            tokens, micro = budget.committed()
            which = 0
            if scope.token_limit is not None and tokens >= scope.token_limit_arg:
                which = 1
            elif scope.cost_limit is not None and micro >= scope.cost_limit_arg:
                which = 2
            if which:
                return [-3, index, which, _first(budget, "exhausted", scope)]
        levels: list[int] = []
        wait, blocked = 0.0, 0
        for index, bucket in enumerate(admission.buckets, start=1):
            capacity = _capacity(bucket)
            if bucket.cost > capacity:
                return [-1, 0, index]
            level = _level(bucket, now)
            if level < bucket.cost and (bucket.cost - level) / (capacity / 60) > wait:
                wait, blocked = (bucket.cost - level) / (capacity / 60), index
        out: list[Any] = [0, math.ceil(wait * 1000), blocked] if blocked else [1, 0, 0]
        for bucket in admission.buckets:
            capacity = _capacity(bucket)
            level = _level(bucket, now)
            if not blocked:
                level -= bucket.cost
                _buckets[bucket.key] = (level, now)
            levels += [max(0, math.floor(level)), math.ceil((capacity - level) / (capacity / 60) * 1000), int(capacity)]
        out += levels
        if blocked:
            return out
        for scope in admission.scopes:
            budget = _budgets[scope.key]
            budget.reserved[admission.id] = (scope.tokens, scope.cost_micro)
            tokens, micro = budget.committed()
            share = 0.0
            if scope.token_limit:
                share = max(share, tokens / scope.token_limit)
            if scope.cost_limit:
                share = max(share, micro / scope.cost_limit_arg)
            first = _first(budget, "warned", scope) if share >= warn else 0
            out += [budget.used_tokens, tokens - budget.used_tokens, budget.used_micro, micro - budget.used_micro, first]
        return out


def _first(budget: _Budget, flag: str, scope: QuotaScope) -> int:
    signature = f"{scope.token_limit_arg}/{scope.cost_limit_arg}"
    if budget.flags.get(flag) == signature:
        return 0
    budget.flags[flag] = signature
    return 1


def settle(admission: Admission, used_tokens: int, used_micro: int) -> None:
    now = time.monotonic()
    with _lock:
        for bucket in admission.buckets:
            if bucket.unit == "tokens":
                level = _level(bucket, now) + admission.reserved_tokens - used_tokens
                _buckets[bucket.key] = (min(_capacity(bucket), level), now)
        for scope in admission.scopes:
            budget = _budgets.get(scope.key)
            if budget is not None and budget.reserved.pop(admission.id, None) is not None:
                budget.used_tokens += used_tokens
                budget.used_micro += used_micro


def peek(bucket: BucketSpec) -> int:
    with _lock:
        return max(0, math.floor(_level(bucket, time.monotonic())))
