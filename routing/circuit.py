"""Circuit breaker per provider and model, its state in Redis so every process shares it.

closed: calls flow; consecutive failures are counted.
open: after `threshold` consecutive failures; calls are refused (routed to the fallback at once)
    until `cooldown` seconds have passed.
half-open: after the cool-down one caller at a time gets a probe; its success closes the circuit,
    its failure opens it for another cool-down.
Each transition is one Lua script, so concurrent processes cannot double-count or both probe.
"""

from __future__ import annotations

import time
from typing import Literal

from django.conf import settings

from config.redis import get_async_redis, rkey

State = Literal["closed", "open", "half_open"]

# KEYS[1] = state hash. ARGV: now, cooldown, probe_ttl.
# Returns 0: refused; 1: allowed and the circuit is clean (closed, no failures counted), so a
# success need not be reported; 2: allowed, and a success must be reported (to reset the failure
# count or close the circuit after a half-open probe).
_ALLOW = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then
  if tonumber(redis.call('HGET', KEYS[1], 'failures') or '0') == 0 then return 1 end
  return 2
end
local now = tonumber(ARGV[1])
local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
if now - opened < tonumber(ARGV[2]) then return 0 end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
if probe_until > now then return 0 end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[3]))
return 2
"""

# ARGV: now, threshold. Returns the new state.
_FAILURE = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local now = tonumber(ARGV[1])
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'probe_until', 0, 'failures', 0)
  return 'open'
end
if state == 'open' then return 'open' end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'probe_until', 0, 'failures', 0)
  return 'open'
end
return 'closed'
"""

_SUCCESS = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' then return 'open' end
redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'probe_until', 0)
return 'closed'
"""


def _key(provider: str, model: str) -> str:
    return rkey("circuit", provider, model)


class CircuitBreaker:
    def __init__(
        self,
        threshold: int | None = None,
        cooldown: float | None = None,
        probe_ttl: float = 30.0,
    ) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        # A probe that never reports back (its process died) frees the slot after this long.
        self.probe_ttl = probe_ttl

    # Read at call time, so a settings change (or a test's override) applies at once.
    @property
    def threshold(self) -> int:
        return self._threshold or int(settings.CIRCUIT_BREAKER_THRESHOLD)

    @property
    def cooldown(self) -> float:
        return (
            self._cooldown if self._cooldown is not None else float(settings.CIRCUIT_BREAKER_COOLDOWN_SECONDS)
        )

    async def allow(self, provider: str, model: str) -> int:
        """0 refused, 1 allowed (nothing to report on success), 2 allowed (report the success).

        Truthy when allowed. The distinction spares the common case a second Redis round trip.
        """
        redis = get_async_redis()
        return int(await redis.eval(_ALLOW, 1, _key(provider, model), time.time(), self.cooldown, self.probe_ttl))

    async def record_failure(self, provider: str, model: str) -> State:
        redis = get_async_redis()
        state = await redis.eval(_FAILURE, 1, _key(provider, model), time.time(), self.threshold)
        return _decode(state)

    async def record_success(self, provider: str, model: str) -> State:
        redis = get_async_redis()
        return _decode(await redis.eval(_SUCCESS, 1, _key(provider, model)))

    async def state(self, provider: str, model: str) -> State:
        redis = get_async_redis()
        raw = await redis.hget(_key(provider, model), "state")
        return _decode(raw) if raw else "closed"

    async def reset(self, provider: str, model: str) -> None:
        await get_async_redis().delete(_key(provider, model))


def _decode(value: bytes | str) -> State:
    text = value.decode() if isinstance(value, bytes) else str(value)
    assert text in ("closed", "open", "half_open")
    return text  # type: ignore[return-value]
